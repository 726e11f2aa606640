"""Uploaded files to validated rows: a CSV for tabular models, a PNG or JPEG for image models.

The kind of file is decided by its first bytes, not by the client's Content-Type or file name,
which are often wrong (browsers send `application/vnd.ms-excel` for CSV). Rows end up in the
same `predict` as every other surface.
"""

from typing import BinaryIO

from app.errors import UnsupportedMediaType
from app.images import image_to_row
from app.inference import LoadedModel
from app.tabular import CsvTable, read_csv

_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def is_image(head: bytes) -> bool:
    return head.startswith(_IMAGE_SIGNATURES)


def read_upload(
    model: LoadedModel, stream: BinaryIO, *, max_image_pixels: int, keep_cells: bool = True
) -> CsvTable:
    """Validated rows from an upload, with the cells to echo in a CSV reply (`keep_cells`; a
    JSON reply needs none, which lets a numeric CSV take the fast reader)."""
    head = stream.read(8)
    stream.seek(0)
    if model.card.input_kind == "image":
        if not is_image(head):
            raise UnsupportedMediaType(
                f"{model.name} is an image model: upload a PNG or JPEG image"
            )
        row = image_to_row(stream, model.card, max_pixels=max_image_pixels)
        rows = model.inputs.validate_rows([row], loc=("file",))
        return CsvTable(
            columns=model.inputs.feature_names, cells=[[str(v) for v in row]], rows=rows
        )
    if is_image(head):
        raise UnsupportedMediaType(
            f"{model.name} is a tabular model: upload a CSV file with a header row"
        )
    return read_csv(stream, model.inputs, keep_cells=keep_cells)

"""Uploaded files to validated rows: a CSV for tabular models, a PNG or JPEG for image models.

The kind of file is decided by its first bytes, not by the client's Content-Type or file name,
which are often wrong (browsers send `application/vnd.ms-excel` for CSV). Rows end up in the
same data plane as every other surface. Replies are JSON (the prediction envelope plus the file
name and row count) or, asked with `Accept: text/csv`, the uploaded columns plus predictions.
"""

from collections.abc import Callable, Iterator
from typing import BinaryIO

from app.codecs.csv_reply import csv_reply_lines
from app.codecs.images import image_to_row
from app.codecs.replies import prediction_json
from app.codecs.tabular import CsvTable, read_csv
from app.errors import UnsupportedMediaType
from app.serving.dataplane import Decoded
from app.serving.model import LoadedModel, ModelOutput, prediction_response

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


def upload_request(
    stream: BinaryIO, *, max_image_pixels: int, csv_reply: bool
) -> Callable[[LoadedModel], Decoded[CsvTable]]:
    """The decoder of one upload. The table is the context: a CSV reply echoes its cells."""

    def decode(model: LoadedModel) -> Decoded[CsvTable]:
        table = read_upload(model, stream, max_image_pixels=max_image_pixels, keep_cells=csv_reply)
        return Decoded(table.rows, table)

    return decode


def upload_json_reply(
    filename: str | None,
) -> Callable[[LoadedModel, ModelOutput, CsvTable], bytes]:
    def encode(model: LoadedModel, output: ModelOutput, table: CsvTable) -> bytes:
        return prediction_json(model, output, {"filename": filename, "rows": len(table.rows)})

    return encode


def upload_csv_reply(model: LoadedModel, output: ModelOutput, table: CsvTable) -> Iterator[str]:
    """The CSV reply's lines, written lazily as the response streams."""
    classes = model.card.target.classes
    labels = [str(c) for c in classes] if classes else None
    return csv_reply_lines(table, prediction_response(model, output), labels)

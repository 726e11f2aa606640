"""Image uploads for image models: from PNG/JPEG bytes to one row in the card's feature order.

Free of FastAPI, like the inference core. The row is normalised to look like the training data
of the bundled `digits` model (scikit-learn's 8×8 digits): each cell counts the "on" pixels of
a 4×4 block of a 32×32 bitmap, so 0..16, with the digit filling the frame's height, centred.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter, ImageOps

from app.errors import InvalidInput, PayloadTooLarge, UnreadableFile
from schemas.cards import ModelCard

FloatArray = npt.NDArray[np.float32]

# Largest side of the image we actually work on. The output is a few cells wide, so a few
# hundred pixels keep every stroke while bounding CPU and memory for multi-megapixel photos.
WORK_SIDE = 512
# Ink weaker than this (relative to the strongest stroke) is paper texture, shading or JPEG
# ringing, not writing. On the held-out digits 0.2 read best (0.1 and 0.3 lost 0.5–2 points).
NOISE_FLOOR = 0.2
# An image whose strongest ink differs from the paper by less than this share of full scale
# (about 25 of 255 grey levels) has nothing on it.
BLANK_CONTRAST = 0.1
# Space left around the ink's bounding box, as a share of its larger side. None: the training
# digits touch the top and bottom of their frame (all 1,797 have ink in rows 0 and 7), and a
# 5% margin cost 8 points of accuracy on the held-out ones.
MARGIN = 0.0
# The training digits were drawn on 32×32 bitmaps, 4× their 8×8 cells.
BITMAP_SCALE = 4
# Their strokes are thick: measured as in `_stroke_width`, 1.2 cells wide in the median digit,
# under 1.0 in 5%. A pen photographed on paper gives strokes a few tenths of a cell wide, which
# the model never saw, so those are thickened, a bitmap pixel on each side at a time; 0.9 leaves
# digits drawn like the training ones alone (a higher target lost accuracy on them).
STROKE_WIDTH = 0.9
MAX_THICKENING = 4

_NOT_AN_IMAGE = "The file is not a PNG or JPEG image"
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def image_to_row(stream: BinaryIO, card: ModelCard, *, max_pixels: int) -> list[int] | list[float]:
    """Read a PNG or JPEG holding one handwritten digit (dark on light or light on dark, any
    size or colour) into one row in `card`'s feature order.

    Raises `UnreadableFile` (not a PNG/JPEG, or corrupt), `PayloadTooLarge` (more pixels than
    `max_pixels`, checked from the header before decoding) or `InvalidInput` (blank image).
    """
    if card.image_shape is None:
        raise ValueError(f"{card.name} v{card.version} is not an image model")
    ink = _read_ink(stream, max_pixels=max_pixels)
    cells = _frame(ink, card.image_shape)
    return _scale(cells, card)


def _read_ink(stream: BinaryIO, *, max_pixels: int) -> FloatArray:
    grey = _read_grey(stream, max_pixels=max_pixels)
    # The border is paper: a digit rarely covers most of the image's outer ring. Paper lighter
    # than the middle of the image's range means dark ink on light paper (pen, pencil), darker
    # means light on dark (chalk, a screen); either way ink becomes its distance from the paper.
    ring = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    paper = float(np.median(ring))
    low, high = float(grey.min()), float(grey.max())
    ink = paper - grey if paper > (low + high) / 2 else grey - paper
    np.clip(ink, 0.0, None, out=ink)
    strongest = float(ink.max())
    if strongest < BLANK_CONTRAST:
        raise InvalidInput(
            [{"loc": ["file"], "msg": "No digit found: the image is blank", "type": "blank_image"}]
        )
    ink /= strongest  # contrast: faint pencil and black marker read alike
    ink[ink < NOISE_FLOOR] = 0.0
    return ink


def _read_grey(stream: BinaryIO, *, max_pixels: int) -> FloatArray:
    """Decode to greyscale in 0..1, upright, at most about 2×WORK_SIDE on its longer side."""
    # Pillow also warns above MAX_IMAGE_PIXELS. Turning that warning into an error needs the
    # process-wide warning filters, which are not thread-safe, so our own limit stops there too.
    limit = (
        max_pixels if Image.MAX_IMAGE_PIXELS is None else min(max_pixels, Image.MAX_IMAGE_PIXELS)
    )
    try:
        image = Image.open(stream, formats=["PNG", "JPEG"])  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"Image is too large: at most {limit} pixels") from exc
    except Exception as exc:  # whatever the header parsers raise on hostile bytes
        raise UnreadableFile(_NOT_AN_IMAGE) from exc
    with image:
        width, height = image.size
        if width * height > limit:
            raise PayloadTooLarge(
                f"Image is {width}×{height} = {width * height} pixels; at most {limit}"
            )
        try:
            grey, full_scale = _decode(image)
        except Exception as exc:  # truncated or corrupt data: a bad file, not a server fault
            raise UnreadableFile(f"The image could not be decoded: {exc}"[:300]) from exc
    pixels = np.frombuffer(grey.tobytes(), dtype=np.float32).reshape(grey.height, grey.width)
    return pixels / np.float32(full_scale)


def _decode(image: Image.Image) -> tuple[Image.Image, float]:
    """The image as greyscale floats ("F"), shrunk and upright, and the value of full white."""
    side = max(image.size)
    if image.format == "JPEG" and side >= 2 * WORK_SIDE:
        # Let libjpeg scale by 1/2, 1/4 or 1/8 while decoding: far less memory and CPU.
        scale = side // WORK_SIDE
        image.draft(
            "L" if image.mode == "RGB" else None, (image.width // scale, image.height // scale)
        )
    image.load()
    if image.mode in _HIGH_DEPTH_MODES:
        # 16-bit greyscale: converting to "L" would clip at 255 rather than scale.
        grey, full_scale = image.convert("F"), 65535.0
    elif image.has_transparency_data:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        grey, full_scale = Image.alpha_composite(paper, rgba).convert("L"), 255.0
    else:
        grey, full_scale = image.convert("L"), 255.0
    factor = max(grey.size) // WORK_SIDE
    if factor >= 2:
        grey = grey.reduce(factor)  # the mean of each factor×factor block
    # Rotated after shrinking, where it is cheap; the EXIF data travels with converted images.
    return ImageOps.exif_transpose(grey).convert("F"), full_scale


def _frame(ink: FloatArray, shape: tuple[int, int]) -> FloatArray:
    """Crop to the ink, pad to the output's aspect ratio (centred), area-average down to
    `shape`, thickening thin strokes on the way."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    box = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    out_height, out_width = shape
    height, width = box.shape
    # The frame: the output's aspect ratio, just holding the box (so the aspect ratio of the
    # digit is kept), centred on it to a fraction of a pixel, which matters for tiny images.
    cell = max(height / out_height, width / out_width) * (1 + 2 * MARGIN)
    frame_height, frame_width = cell * out_height, cell * out_width
    pad_y = math.ceil((frame_height - height) / 2)
    pad_x = math.ceil((frame_width - width) / 2)
    padded = np.pad(box, ((pad_y, pad_y), (pad_x, pad_x)))
    top = pad_y + (height - frame_height) / 2
    left = pad_x + (width - frame_width) / 2
    # BOX resampling weights each source pixel by its overlap with the output pixel: exact area
    # averaging, also for fractional frames. First to the training bitmaps' resolution (4× the
    # output), where strokes can be thickened a pixel at a time.
    bitmap = Image.frombytes("F", (padded.shape[1], padded.shape[0]), padded.tobytes()).resize(
        (BITMAP_SCALE * out_width, BITMAP_SCALE * out_height),
        Image.Resampling.BOX,
        box=(left, top, left + frame_width, top + frame_height),
    )
    for _ in range(MAX_THICKENING):
        cells = _cells(bitmap, shape)
        if _stroke_width(cells) >= STROKE_WIDTH:
            return cells
        bitmap = bitmap.filter(ImageFilter.MaxFilter(3))
    return _cells(bitmap, shape)


def _cells(bitmap: Image.Image, shape: tuple[int, int]) -> FloatArray:
    out_height, out_width = shape
    small = bitmap.resize((out_width, out_height), Image.Resampling.BOX)
    return np.frombuffer(small.tobytes(), dtype=np.float32).reshape(out_height, out_width)


def _stroke_width(cells: FloatArray) -> float:
    """Mean stroke width in cells: twice the ink's area over its perimeter (for long strokes the
    perimeter is twice their length), with the total variation standing in for the perimeter."""
    ink = np.pad(cells / cells.max(), 1)
    perimeter = np.abs(np.diff(ink, axis=0)).sum() + np.abs(np.diff(ink, axis=1)).sum()
    return float(2 * ink.sum() / perimeter)


def _scale(cells: FloatArray, card: ModelCard) -> list[int] | list[float]:
    lows = [f.minimum if f.minimum is not None else f.observed_min for f in card.features]
    highs = [f.maximum if f.maximum is not None else f.observed_max for f in card.features]
    if any(value is None for value in (*lows, *highs)):
        raise ValueError(f"{card.name} v{card.version}: image features need a value range")
    low = min(v for v in lows if v is not None)
    high = max(v for v in highs if v is not None)
    # Stretch so the strongest cell is full ink: nearly every training digit (1,765 of 1,797)
    # has a cell at 16, whatever the pen width of the upload.
    values = low + cells.ravel() / float(cells.max()) * (high - low)
    if all(f.dtype == "int" for f in card.features):
        return [int(v) for v in np.clip(np.rint(values), low, high).tolist()]
    return [float(v) for v in np.clip(values, low, high).tolist()]

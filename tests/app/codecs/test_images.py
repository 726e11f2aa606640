"""Image uploads (app.codecs.images) against the real `digits` model: accuracy on held-out digits
rendered the ways people send them, and hostile files (not images, truncated, bombs, blank)."""

import io
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from app.codecs.images import image_to_row
from app.errors import InvalidInput, PayloadTooLarge, UnreadableFile
from app.serving.model import LoadedModel, predict
from app.serving.registry import scan_store
from app.training.examples import train_examples
from schemas.predict import ClassPrediction

MAX_PIXELS = 20_000_000
NEAREST = Image.Resampling.NEAREST
BILINEAR = Image.Resampling.BILINEAR
Render = Callable[[Any], Image.Image]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    store = tmp_path_factory.mktemp("models")
    train_examples(store, only=["digits"])
    return scan_store(store, max_rows=10_000, trusted_types=[]).entries["digits"].versions[1]


@pytest.fixture(scope="module")
def held_out() -> tuple[Any, Any]:
    """The 25% of the digits the model never saw: the same split as app.training makes."""
    data = load_digits()
    _, X_test, _, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    return X_test, y_test


# -- rendering ---------------------------------------------------------------------------------


def grey(
    x: Any,
    *,
    light_on_dark: bool = False,
    size: tuple[int, int] = (64, 64),
    resample: Image.Resampling = BILINEAR,
) -> Image.Image:
    """One 8×8 digit (values 0..16) as a greyscale picture of `size`."""
    ink = np.rint(np.asarray(x, dtype=np.float64).reshape(8, 8) / 16 * 255).astype(np.uint8)
    return Image.fromarray(ink if light_on_dark else 255 - ink).resize(size, resample)


def on_canvas(x: Any) -> Image.Image:
    """A 48×48 dark-on-light digit off-centre on a wide 120×80 sheet."""
    canvas = Image.new("L", (120, 80), 255)
    canvas.paste(grey(x, size=(48, 48)), (43, 11))
    return canvas


def blue_on_yellow(x: Any) -> Image.Image:
    paper = np.array([250, 235, 170], dtype=np.float64)
    ink = np.array([20, 40, 200], dtype=np.float64)
    shade = np.asarray(grey(x), dtype=np.float64)[..., None] / 255  # 1 is paper, 0 is ink
    return Image.fromarray(np.rint(shade * paper + (1 - shade) * ink).astype(np.uint8))


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def labels(model: LoadedModel, rows: list[Any]) -> list[Any]:
    predictions = predict(model, model.inputs.validate_rows(rows)).predictions
    return [p.label for p in predictions if isinstance(p, ClassPrediction)]


def read(model: LoadedModel, data: bytes, *, max_pixels: int = MAX_PIXELS) -> list[Any]:
    row: list[Any] = list(image_to_row(io.BytesIO(data), model.card, max_pixels=max_pixels))
    return row


# -- accuracy on held-out digits ---------------------------------------------------------------

RENDERINGS = [
    pytest.param(
        lambda x: grey(x, light_on_dark=True, resample=NEAREST), "PNG", id="nearest-light-on-dark"
    ),
    pytest.param(lambda x: grey(x, resample=NEAREST), "PNG", id="nearest-dark-on-light"),
    pytest.param(lambda x: grey(x, light_on_dark=True), "PNG", id="bilinear-light-on-dark"),
    pytest.param(lambda x: grey(x), "PNG", id="bilinear-dark-on-light"),
    pytest.param(lambda x: grey(x), "JPEG", id="jpeg-q85-dark-on-light"),
    pytest.param(blue_on_yellow, "PNG", id="rgb-blue-on-yellow"),
    pytest.param(on_canvas, "PNG", id="canvas-120x80"),
    pytest.param(lambda x: grey(x, light_on_dark=True, size=(8, 8)), "PNG", id="tiny-8x8"),
]


@pytest.mark.parametrize(("render", "fmt"), RENDERINGS)
def test_held_out_digits_are_read_accurately(
    digits: LoadedModel,
    held_out: tuple[Any, Any],
    render: Render,
    fmt: str,
    request: pytest.FixtureRequest,
) -> None:
    X_test, y_test = held_out
    options = {"quality": 85} if fmt == "JPEG" else {}
    rows = [read(digits, encode(render(x), fmt, **options)) for x in X_test]
    accuracy = float(np.mean(np.asarray(labels(digits, rows)) == y_test))
    # The model itself scores 0.97 on the 8×8 arrays; re-framing each digit to its own bounding
    # box (as an upload needs) moves some by half a cell, which costs a few points.
    measured = f"{request.node.name}: accuracy {accuracy:.3f} on {len(rows)} held-out digits"
    print(measured)  # noqa: T201 - the number to report, shown with -s
    assert accuracy >= 0.90


# -- formats, modes and sizes -----------------------------------------------------------------


def test_a_row_has_the_card_shape_and_range(digits: LoadedModel, held_out: tuple[Any, Any]) -> None:
    row = read(digits, encode(grey(held_out[0][0])))
    assert len(row) == 64 and all(type(v) is int and 0 <= v <= 16 for v in row)
    assert max(row) == 16


def test_an_8x8_image_is_the_model_input_itself(
    digits: LoadedModel, held_out: tuple[Any, Any]
) -> None:
    X_test, _ = held_out
    # A digit centred in its frame needs no re-framing (ink in columns 1 and 6, none outside).
    cells = next(
        x.reshape(8, 8)
        for x in X_test
        if not x.reshape(8, 8)[:, [0, 7]].any()
        and (x.reshape(8, 8)[:, [1, 6]] >= 4).any(axis=0).all()
    )
    row = read(digits, encode(grey(cells, light_on_dark=True, size=(8, 8))))
    # Cell for cell, but for ink under a fifth of the strongest, which is taken for noise.
    assert row == [int(v) if v >= 16 / 5 else 0 for v in cells.ravel()]


def _mode_variant(x: Any, mode: str) -> bytes:
    light = grey(x, light_on_dark=True)  # 0 is paper, 255 full ink
    if mode == "I;16":
        image = Image.fromarray(np.asarray(grey(x), dtype=np.uint16) * 257)  # full 16-bit range
        assert image.mode == "I;16"
        return encode(image)
    if mode == "P":
        return encode(grey(x).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE))
    if mode == "P-transparent":
        # Entry i is grey 255 - i, but entry 0 (the background) is a transparent black.
        palette = light.convert("P")
        palette.putpalette([0, 0, 0] + [255 - i for i in range(1, 256) for _ in range(3)])
        return encode(palette, transparency=0)
    if mode == "RGBA":
        # Black ink whose coverage is in the alpha channel over a fully transparent *black*
        # background: read without compositing, this would be a black square.
        rgba = Image.new("RGBA", light.size, (0, 0, 0, 0))
        rgba.putalpha(light)
        return encode(rgba)
    if mode == "LA":
        return encode(Image.merge("LA", [Image.new("L", light.size, 0), light]))
    if mode == "CMYK":
        return encode(grey(x).convert("CMYK"), "JPEG", quality=95)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["I;16", "P", "P-transparent", "RGBA", "LA", "CMYK"])
def test_other_modes_read_like_the_greyscale_image(
    digits: LoadedModel, held_out: tuple[Any, Any], mode: str
) -> None:
    X_test, _ = held_out
    # Within one step: compositing and colour conversion round differently (and two for the
    # lossy CMYK JPEG).
    tolerance = 2 if mode == "CMYK" else 1
    for x in X_test[:40]:
        reference = read(digits, encode(grey(x)))
        assert (
            np.abs(np.subtract(read(digits, _mode_variant(x, mode)), reference)).max() <= tolerance
        )


def test_a_bilevel_png_is_read(digits: LoadedModel, held_out: tuple[Any, Any]) -> None:
    X_test, y_test = held_out
    bilevel = [grey(x, size=(256, 256)).convert("1", dither=Image.Dither.NONE) for x in X_test]
    rows = [read(digits, encode(image)) for image in bilevel]
    assert bilevel[0].mode == "1"
    accuracy = float(np.mean(np.asarray(labels(digits, rows)) == y_test))
    # Measured 0.902: thresholding the 8×8 grey levels at half ink throws information away
    # before the upload is even made, so this bound sits a little under the 0.90 of the others.
    assert accuracy >= 0.88, accuracy


def on_paper(
    x: Any, size: tuple[int, int], digit_side: int, corner: tuple[int, int]
) -> Image.Image:
    """Black ink on off-white paper, the digit `digit_side` pixels tall at `corner`."""
    sheet = Image.new("RGB", size, (235, 235, 228))
    sheet.paste(
        (0, 0, 0),
        (*corner, corner[0] + digit_side, corner[1] + digit_side),
        mask=grey(x, light_on_dark=True, size=(digit_side, digit_side)),
    )
    return sheet


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_4000x3000_photo_reads_like_a_small_one(
    digits: LoadedModel, held_out: tuple[Any, Any], fmt: str
) -> None:
    X_test, _ = held_out
    options = {"quality": 85} if fmt == "JPEG" else {}
    for x in X_test[:2]:
        small = read(digits, encode(on_paper(x, (64, 64), 64, (0, 0)), fmt, **options))
        data = encode(on_paper(x, (4000, 3000), 1600, (1300, 600)), fmt, **options)
        started = time.perf_counter()
        large = read(digits, data)
        elapsed = time.perf_counter() - started
        assert np.abs(np.subtract(large, small)).max() <= 2
        assert labels(digits, [large]) == labels(digits, [small])
        assert elapsed < 2.0, elapsed


# Orientation tag → how the camera stored the pixels (the inverse of what exif_transpose does).
STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", list(STORED), ids=lambda o: f"orientation-{o}")
def test_exif_rotated_jpeg_reads_as_upright(
    digits: LoadedModel, held_out: tuple[Any, Any], orientation: int
) -> None:
    X_test, _ = held_out
    for x in X_test[:10]:
        upright = grey(x, size=(64, 96))
        stored = upright.transpose(STORED[orientation])
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        tagged = read(digits, encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
        plain = read(digits, encode(upright, "JPEG", quality=95))
        assert np.abs(np.subtract(tagged, plain)).max() <= 2
        assert labels(digits, [tagged]) == labels(digits, [plain])
        # Without the tag the picture is read as stored, which is a different row.
        assert read(digits, encode(stored, "JPEG", quality=95)) != plain


def test_the_pixel_limit_is_inclusive(digits: LoadedModel, held_out: tuple[Any, Any]) -> None:
    X_test, _ = held_out
    assert len(read(digits, encode(grey(X_test[0], size=(100, 100))), max_pixels=10_000)) == 64
    with pytest.raises(PayloadTooLarge) as caught:
        read(digits, encode(grey(X_test[0], size=(101, 100))), max_pixels=10_000)
    assert caught.value.detail == "Image is 101×100 = 10100 pixels; at most 10000"


# -- hostile files -----------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, compressed a batch of rows at a time so that even a
    30000×30000 one (900 megapixels) never exists uncompressed; it is about 100 kB."""
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed pixels
    compressor = zlib.compressobj(9)
    batch = row * 1000
    parts = [compressor.compress(batch) for _ in range(height // 1000)]
    parts += [compressor.compress(row * (height % 1000)), compressor.flush()]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", b"".join(parts)),
            _chunk(b"IEND", b""),
        ]
    )


def test_a_decompression_bomb_is_refused_from_its_header(digits: LoadedModel) -> None:
    bomb = bilevel_png(30_000, 30_000)
    assert len(bomb) < 1_000_000
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge):
        read(digits, bomb, max_pixels=10**12)  # Pillow's own bomb error, above 2×MAX_IMAGE_PIXELS
    with pytest.raises(PayloadTooLarge):
        read(digits, bomb)
    assert time.perf_counter() - started < 1.0


def test_pillows_bomb_warning_is_refused_whatever_the_warning_filters(
    digits: LoadedModel,
) -> None:
    big = bilevel_png(10_000, 10_000)  # above Image.MAX_IMAGE_PIXELS, under twice that
    with pytest.raises(PayloadTooLarge):  # the suite turns warnings into errors
        read(digits, big, max_pixels=10**12)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(PayloadTooLarge) as caught:
        read(digits, big, max_pixels=10**12)  # a plain warning: our limit stops there too
    assert caught.value.detail == (
        f"Image is 10000×10000 = 100000000 pixels; at most {Image.MAX_IMAGE_PIXELS}"
    )


def _noise(size: tuple[int, int] = (128, 128)) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


NOISE_PNG = encode(_noise())
NOISE_JPEG = encode(_noise(), "JPEG")
# The header is intact but the middle of the compressed data is overwritten.
GARBLED_PNG = NOISE_PNG[:2000] + bytes(range(256)) * 4 + NOISE_PNG[3024:]

UNREADABLE = [
    pytest.param(b"pixel_0_0,pixel_0_1\n0,16\n", "not a PNG or JPEG", id="csv-text"),
    pytest.param(b"", "not a PNG or JPEG", id="empty"),
    pytest.param(encode(_noise(), "GIF"), "not a PNG or JPEG", id="gif"),
    pytest.param(encode(_noise(), "BMP"), "not a PNG or JPEG", id="bmp"),
    pytest.param(NOISE_PNG[:20], "not a PNG or JPEG", id="png-header-cut"),
    pytest.param(NOISE_JPEG[:20], "not a PNG or JPEG", id="jpeg-header-cut"),
    pytest.param(NOISE_PNG[: len(NOISE_PNG) // 2], "decoded", id="png-data-cut"),
    pytest.param(NOISE_JPEG[: len(NOISE_JPEG) // 2], "decoded", id="jpeg-data-cut"),
    pytest.param(GARBLED_PNG, "decoded", id="png-data-garbled"),
]


@pytest.mark.parametrize(("data", "message"), UNREADABLE)
def test_unreadable_files_are_refused(digits: LoadedModel, data: bytes, message: str) -> None:
    with pytest.raises(UnreadableFile) as caught:
        read(digits, data)
    assert message in str(caught.value.detail)


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(Image.new("L", (64, 64), 255), id="white"),
        pytest.param(Image.new("L", (64, 64), 0), id="black"),
        pytest.param(Image.new("RGB", (64, 64), (250, 235, 170)), id="yellow"),
        pytest.param(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), id="transparent"),
    ],
)
def test_a_blank_image_is_invalid_input(digits: LoadedModel, image: Image.Image) -> None:
    with pytest.raises(InvalidInput) as caught:
        read(digits, encode(image))
    assert caught.value.detail == [
        {"loc": ["file"], "msg": "No digit found: the image is blank", "type": "blank_image"}
    ]

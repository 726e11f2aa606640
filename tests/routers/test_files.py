"""POST /models/{name}/predict/file through the real stack: CSV uploads to tabular models and PNG
uploads to an image model, checked against the fitted estimators; hostile files; size limits."""

import csv
import functools
import io
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx2
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from app.config import Settings
from app.main import create_app
from app.training.examples import train_examples
from tests.conftest import FLOWER_FEATURES, build_store, flower_rows, pet_rows
from tests.routers.test_predict import (
    PETS_FEATURES,
    assert_class_predictions,
    assert_envelope,
    oracle,
)

CSV_HEADERS = {"accept": "text/csv"}
REPLY_KEYS = {"model_name", "model_version", "filename", "rows", "predictions"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module (overrides conftest's per-test one): these tests only read it,
    and fitting its models is the slow part of each test's setup."""
    return build_store(tmp_path_factory.mktemp("store") / "models")


def path_for(name: str) -> str:
    return f"/models/{name}/predict/file"


def upload(
    client: TestClient,
    name: str,
    content: bytes,
    *,
    filename: str = "rows.csv",
    content_type: str = "text/csv",
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    return client.post(
        path_for(name), files={"file": (filename, content, content_type)}, headers=headers
    )


def csv_bytes(
    header: list[str],
    rows: list[list[Any]],
    *,
    newline: str = "\n",
    bom: bool = False,
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_MINIMAL,
) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline, quoting=quoting)
    writer.writerow(header)
    writer.writerows(rows)
    return (("\ufeff" if bom else "") + buffer.getvalue()).encode()


def served(response: httpx2.Response, store: Path, name: str) -> Any:
    """The estimator that answered (the version the response names), loaded independently."""
    assert response.status_code == 200, response.text
    version = int(response.headers["x-model-version"])
    if response.headers["content-type"].startswith("application/json"):
        body = response.json()
        assert (body["model_name"], body["model_version"]) == (name, version)
    return oracle(store, name, version)


def reordered(header: list[str], rows: list[list[Any]], order: list[str]) -> list[list[Any]]:
    index = [header.index(column) for column in order]
    return [[row[i] for i in index] for row in rows]


# -- happy paths: JSON reply ------------------------------------------------------------------

FLOWER_ORDER = ["petal_width", "sepal_length", "petal_length", "sepal_width"]


@pytest.mark.parametrize(
    ("order", "newline", "bom", "quoting"),
    [
        pytest.param(FLOWER_FEATURES, "\n", False, csv.QUOTE_MINIMAL, id="plain"),
        pytest.param(FLOWER_ORDER, "\r\n", True, csv.QUOTE_ALL, id="shuffled-bom-crlf-quoted"),
        pytest.param(FLOWER_ORDER[::-1], "\r", False, csv.QUOTE_NONNUMERIC, id="reversed-cr"),
    ],
)
def test_flowers_csv_equals_the_estimator(
    client: TestClient,
    store: Path,
    order: list[str],
    newline: str,
    bom: bool,
    quoting: Literal[0, 1, 2, 3],
) -> None:
    rows = flower_rows()
    content = csv_bytes(
        order,
        reordered(FLOWER_FEATURES, [list(r) for r in rows], order),
        newline=newline,
        bom=bom,
        quoting=quoting,
    )

    response = upload(client, "flowers", content, filename="my flowers.csv")

    estimator = served(response, store, "flowers")
    body = response.json()
    assert set(body) == REPLY_KEYS
    assert (body["filename"], body["rows"]) == ("my flowers.csv", len(rows))
    assert_class_predictions(body["predictions"], estimator, np.array(rows))


def test_pets_csv_reaches_the_dataframe_pipeline(client: TestClient, store: Path) -> None:
    order = ["age", "colour", "weight"]
    rows = pet_rows()
    content = csv_bytes(order, reordered(PETS_FEATURES, rows, order), newline="\r\n")

    response = upload(client, "pets", content)

    estimator = served(response, store, "pets")
    body = response.json()
    assert body["rows"] == len(rows)
    frame = pd.DataFrame(rows, columns=PETS_FEATURES)
    assert_class_predictions(body["predictions"], estimator, frame)
    assert {item["label"] for item in body["predictions"]} == {"cat", "dog"}


def test_line_csv_regression_values(client: TestClient, store: Path) -> None:
    rows = [[0.0, 1.0], [2.5, -3.25], [-1000.0, 7.0], [1e-3, 123456.789]]
    content = csv_bytes(["b", "a"], [[b, a] for a, b in rows], bom=True)

    response = upload(client, "line", content)

    estimator = served(response, store, "line")
    predictions = response.json()["predictions"]
    assert all(set(item) == {"value"} for item in predictions)
    expected = estimator.predict(np.array(rows)).tolist()
    assert [item["value"] for item in predictions] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "content_type",
    ["application/vnd.ms-excel", "application/octet-stream", "text/plain", "image/png"],
)
def test_the_declared_file_type_does_not_matter(
    client: TestClient, store: Path, content_type: str
) -> None:
    rows = flower_rows(3)
    content = csv_bytes(FLOWER_FEATURES, [list(r) for r in rows])

    response = upload(client, "flowers", content, content_type=content_type)

    estimator = served(response, store, "flowers")
    assert_class_predictions(response.json()["predictions"], estimator, np.array(rows))


def test_exactly_max_rows_is_accepted(client: TestClient, store: Path) -> None:
    rows = (flower_rows(10) * 5)[:50]

    response = upload(client, "flowers", csv_bytes(FLOWER_FEATURES, rows))

    estimator = served(response, store, "flowers")
    assert response.json()["rows"] == 50
    assert_class_predictions(response.json()["predictions"], estimator, np.array(rows))


# -- happy paths: CSV reply -------------------------------------------------------------------


def parse_csv_reply(response: httpx2.Response) -> tuple[list[str], list[list[str]]]:
    assert response.headers["content-type"].startswith("text/csv")
    assert "x-model-version" in response.headers
    header, *rows = list(csv.reader(io.StringIO(response.text)))
    return header, rows


@pytest.mark.parametrize(
    ("name", "order", "rows"),
    [
        pytest.param(
            "flowers",
            FLOWER_ORDER,
            reordered(FLOWER_FEATURES, [list(r) for r in flower_rows()], FLOWER_ORDER),
            id="flowers",
        ),
        pytest.param(
            "pets",
            ["weight", "age", "colour"],
            reordered(PETS_FEATURES, pet_rows(), ["weight", "age", "colour"]),
            id="pets",
        ),
    ],
)
def test_csv_reply_for_classifiers(
    client: TestClient, store: Path, name: str, order: list[str], rows: list[list[Any]]
) -> None:
    uploaded = [[str(cell) for cell in row] for row in rows]

    response = upload(client, name, csv_bytes(order, uploaded, newline="\r\n"), headers=CSV_HEADERS)

    estimator = served(response, store, name)
    header, lines = parse_csv_reply(response)
    classes = [str(c) for c in estimator.classes_]
    assert header == [*order, "prediction", *(f"probability_{c}" for c in classes)]
    assert [line[: len(order)] for line in lines] == uploaded
    features = pd.DataFrame(rows, columns=order)
    names = FLOWER_FEATURES if name == "flowers" else PETS_FEATURES
    model_input: Any = features[names] if name == "pets" else features[names].to_numpy()
    assert [line[len(order)] for line in lines] == estimator.predict(model_input).tolist()
    got = [[float(cell) for cell in line[len(order) + 1 :]] for line in lines]
    assert np.allclose(got, estimator.predict_proba(model_input), rtol=1e-12, atol=0)


def test_csv_reply_for_a_regressor(client: TestClient, store: Path) -> None:
    uploaded = [["1.5", "-2"], ["0", "0"], ["1e3", " 4.25 "]]

    response = upload(client, "line", csv_bytes(["a", "b"], uploaded), headers=CSV_HEADERS)

    estimator = served(response, store, "line")
    assert response.headers["x-model-version"] == "1"
    header, lines = parse_csv_reply(response)
    assert header == ["a", "b", "prediction"]
    assert [line[:2] for line in lines] == uploaded
    expected = estimator.predict(np.array([[1.5, -2.0], [0.0, 0.0], [1000.0, 4.25]]))
    assert [float(line[2]) for line in lines] == pytest.approx(expected.tolist(), abs=1e-12)


def test_errors_stay_json_envelopes_when_csv_is_accepted(client: TestClient) -> None:
    content = b"sepal_length,sepal_width,petal_length,petal_width\n5.1,abc,1.4,0.2\n"

    response = upload(client, "flowers", content, headers=CSV_HEADERS)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [["file", "line", 2, "sepal_width"]]


# -- hostile CSV files ------------------------------------------------------------------------

HEADER = b"sepal_length,sepal_width,petal_length,petal_width\r\n"
GOOD = b"5.1,3.5,1.4,0.2\r\n"


def cell_row(column: int, value: bytes) -> bytes:
    cells = GOOD.rstrip().split(b",")
    cells[column] = value
    return b",".join(cells) + b"\r\n"


INVALID_CELLS = [
    pytest.param(cell_row(1, b"abc"), 1, "float_parsing", id="non-numeric"),
    pytest.param(cell_row(0, b"NaN"), 0, "finite_number", id="nan"),
    pytest.param(cell_row(2, b"nan"), 2, "finite_number", id="nan-lower"),
    pytest.param(cell_row(3, b"inf"), 3, "finite_number", id="inf"),
    pytest.param(cell_row(1, b"-Infinity"), 1, "finite_number", id="minus-infinity"),
    pytest.param(cell_row(2, b"1e999"), 2, "finite_number", id="1e999"),
    pytest.param(cell_row(0, b"true"), 0, "float_parsing", id="true"),
    pytest.param(cell_row(3, b""), 3, "float_parsing", id="empty-cell"),
    pytest.param(cell_row(1, b"-0.5"), 1, "greater_than_equal", id="below-minimum"),
]


@pytest.mark.parametrize(("row", "column", "type_"), INVALID_CELLS)
def test_bad_cell_is_422_naming_line_and_column(
    client: TestClient, row: bytes, column: int, type_: str
) -> None:
    # line 1 header, line 2 good, line 3 blank (skipped but counted), line 4 the bad row
    content = HEADER + GOOD + b"\r\n" + row + GOOD

    response = upload(client, "flowers", content)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [(issue["loc"], issue["type"]) for issue in detail] == [
        (["file", "line", 4, FLOWER_FEATURES[column]], type_)
    ]
    assert all(issue["msg"] for issue in detail)


@pytest.mark.parametrize(
    ("row", "column", "type_"),
    [
        pytest.param(b"purple,4.0,3", "colour", "literal_error", id="category-not-allowed"),
        pytest.param(b"black,4.0,3.5", "age", "int_parsing", id="int-is-3.5"),
        pytest.param(b"black,4.0,41", "age", "less_than_equal", id="int-above-max"),
        pytest.param(b"black,-1,3", "weight", "greater_than_equal", id="negative-weight"),
    ],
)
def test_bad_pets_cell_is_422(client: TestClient, row: bytes, column: str, type_: str) -> None:
    response = upload(client, "pets", b"colour,weight,age\n" + row + b"\n")

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [(issue["loc"], issue["type"]) for issue in detail] == [
        (["file", "line", 2, column], type_)
    ]


def test_every_bad_cell_is_reported(client: TestClient) -> None:
    content = HEADER + cell_row(0, b"x") + GOOD + cell_row(3, b"nan") + cell_row(1, b"1e999")

    response = upload(client, "flowers", content)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [
        ["file", "line", 2, "sepal_length"],
        ["file", "line", 4, "petal_width"],
        ["file", "line", 5, "sepal_width"],
    ]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param(
            b"sepal_length,sepal_width,petal_length\n5.1,3.5,1.4\n",
            ["Missing", "'petal_width'"],
            id="missing-column",
        ),
        pytest.param(
            HEADER.rstrip() + b",stem\n" + GOOD.rstrip() + b",1\n",
            ["Unknown", "'stem'"],
            id="unknown-column",
        ),
        pytest.param(
            b"sepal_length,sepal_length,sepal_width,petal_length,petal_width\n1,1,2,3,4\n",
            ["Duplicate", "'sepal_length'"],
            id="duplicate-column",
        ),
        pytest.param(b"5.1,3.5,1.4,0.2\n6.6,3.0,5.5,2.0\n", ["Missing", "Unknown"], id="no-header"),
    ],
)
def test_bad_header_is_422_naming_the_columns(
    client: TestClient, content: bytes, words: list[str]
) -> None:
    response = upload(client, "flowers", content)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert {tuple(issue["loc"]) for issue in detail} == {("file", "header")}
    messages = " ".join(issue["msg"] for issue in detail)
    assert "Line 1" in messages
    for word in words:
        assert word in messages


@pytest.mark.parametrize(
    ("content", "line", "got"),
    [
        pytest.param(HEADER + GOOD + b"5.1,3.5,1.4\r\n", 3, 3, id="short-row"),
        pytest.param(HEADER + b"5.1,3.5,1.4,0.2,9\r\n", 2, 5, id="long-row"),
        pytest.param(HEADER + b"5.1,3.5,1.4,0.2,\r\n", 2, 5, id="trailing-comma"),
    ],
)
def test_wrong_row_length_is_422_naming_the_line(
    client: TestClient, content: bytes, line: int, got: int
) -> None:
    response = upload(client, "flowers", content)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [["file", "line", line]]
    assert f"got {got}" in detail[0]["msg"]


def test_header_only_is_422(client: TestClient) -> None:
    response = upload(client, "flowers", HEADER + b"\r\n\r\n")

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [["file"]]
    assert "no data rows" in detail[0]["msg"]


def random_bytes(size: int) -> bytes:
    return np.random.default_rng(0).bytes(size)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param(b"", ["empty"], id="empty"),
        pytest.param(b"\xef\xbb\xbf", ["empty"], id="bom-only"),
        pytest.param(b"\r\n\n \n", ["empty"], id="blank-lines-only"),
        pytest.param(random_bytes(4096), ["UTF-8"], id="binary-garbage"),
        pytest.param(zlib.compress(HEADER + GOOD * 20), ["UTF-8"], id="compressed-csv"),
        pytest.param(HEADER + b"5.1,3.5,\xff\xfe,0.2\r\n", ["UTF-8"], id="invalid-utf8"),
        pytest.param(HEADER.decode().encode("utf-16"), ["UTF-8"], id="utf-16"),
        pytest.param(HEADER + GOOD + b"5.1,3.5\x00,1.4,0.2\r\n", ["NUL", "line 3"], id="nul-byte"),
        pytest.param(HEADER + b'5.1,3.5,"1.4,0.2\r\n' + GOOD, ["line 2"], id="unterminated-quote"),
    ],
)
def test_unreadable_file_is_400(client: TestClient, content: bytes, words: list[str]) -> None:
    response = upload(client, "flowers", content)

    detail = assert_envelope(response, 400, "UnreadableFile")
    assert isinstance(detail, str)
    for word in words:
        assert word in detail


def png_bytes(size: tuple[int, int] = (16, 16), colour: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        pytest.param(png_bytes(), "rows.png", id="png"),
        pytest.param(png_bytes(), "rows.csv", id="png-named-csv"),
        pytest.param(jpeg_bytes(), "photo.jpg", id="jpeg"),
    ],
)
def test_image_to_a_tabular_model_is_415(client: TestClient, content: bytes, filename: str) -> None:
    response = upload(client, "flowers", content, filename=filename, content_type="text/csv")

    detail = assert_envelope(response, 415, "UnsupportedMediaType")
    assert "CSV" in detail


def test_one_row_over_max_rows_is_422_naming_the_line(client: TestClient) -> None:
    rows = (flower_rows(10) * 6)[:51]

    response = upload(client, "flowers", csv_bytes(FLOWER_FEATURES, rows))

    detail = assert_envelope(response, 422, "InvalidInput")
    assert detail == [
        {
            "loc": ["file", "line", 52],
            "msg": "Too many rows: at most 50 per request",
            "type": "too_long",
        }
    ]


@pytest.mark.parametrize(
    "files",
    [
        pytest.param({"upload": ("rows.csv", HEADER + GOOD, "text/csv")}, id="other-field-name"),
        pytest.param({"file": (None, (HEADER + GOOD).decode())}, id="file-as-text-field"),
    ],
)
def test_missing_file_field_is_422(client: TestClient, files: dict[str, Any]) -> None:
    response = client.post(path_for("flowers"), files=files)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [["body", "file"]]


def test_json_body_to_the_file_route_is_a_422_envelope(client: TestClient) -> None:
    """Documented behaviour: the route only sees that no `file` part arrived (422), rather than
    refusing the media type (415)."""
    response = client.post(path_for("flowers"), json={"instances": [[5.1, 3.5, 1.4, 0.2]]})

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [["body", "file"]]


def test_unknown_model_is_404(client: TestClient) -> None:
    response = upload(client, "nope", HEADER + GOOD)

    assert_envelope(response, 404, "ModelNotFound")


# -- the upload byte limit --------------------------------------------------------------------

BOUNDARY = "modelport-test-boundary-7f3a"


def multipart_body(content: bytes, *, filename: str = "rows.csv") -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def chunked(content: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture
def small_upload_client(store: Path) -> Iterator[TestClient]:
    app = create_app(Settings(model_dir=store, max_upload_bytes=4096))
    with TestClient(app) as client:
        yield client


def ten_kb_csv() -> bytes:
    content = HEADER + GOOD * 650
    assert 10_000 < len(content) < 12_000
    return content


def test_upload_over_the_limit_with_content_length_is_413(small_upload_client: TestClient) -> None:
    response = upload(small_upload_client, "flowers", ten_kb_csv())

    assert int(response.request.headers["content-length"]) > 10_000
    detail = assert_envelope(response, 413, "PayloadTooLarge")
    assert "4096" in detail


def test_streamed_upload_over_the_limit_is_413(small_upload_client: TestClient) -> None:
    response = small_upload_client.post(
        path_for("flowers"), content=chunked(multipart_body(ten_kb_csv())), headers=MULTIPART
    )

    assert "content-length" not in response.request.headers
    detail = assert_envelope(response, 413, "PayloadTooLarge")
    assert "4096" in detail


def test_streamed_upload_under_the_limit_is_accepted(
    small_upload_client: TestClient, store: Path
) -> None:
    """The control for the test above: the hand-built multipart body itself is fine."""
    response = small_upload_client.post(
        path_for("flowers"),
        content=chunked(multipart_body(HEADER + GOOD * 3), 10),
        headers=MULTIPART,
    )

    assert "content-length" not in response.request.headers
    estimator = served(response, store, "flowers")
    assert response.json()["rows"] == 3
    assert_class_predictions(
        response.json()["predictions"], estimator, np.array([[5.1, 3.5, 1.4, 0.2]] * 3)
    )


def test_the_json_body_limit_does_not_apply_to_uploads(client: TestClient, store: Path) -> None:
    """max_body_bytes is 64 KiB here; a 70 KB CSV under max_upload_bytes still goes through."""
    content = HEADER + GOOD * 50 + b"\r\n" * 35_000
    assert len(content) > 64 * 1024

    response = upload(client, "flowers", content)

    served(response, store, "flowers")
    assert response.json()["rows"] == 50


# -- the image model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("digits") / "models"
    train_examples(store, only=["digits"])
    return store


@pytest.fixture(scope="module")
def digits_client(digits_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=digits_store))) as client:
        yield client


@functools.cache
def held_out_digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The digits `modelport train` held out (same split), as 8×8 images and labels."""
    digits = load_digits()
    _, test = train_test_split(
        np.arange(len(digits.target)), test_size=0.25, random_state=0, stratify=digits.target
    )
    return digits.images[test], digits.target[test]


def digit_image(
    image: np.ndarray[Any, Any],
    *,
    light_on_dark: bool = True,
    side: int = 64,
    kind: str = "PNG",
) -> bytes:
    """An 8×8 digit (0..16) drawn as a `side`×`side` greyscale PNG (or JPEG)."""
    ink = np.asarray(image, dtype=np.float64) / 16.0
    grey = ink if light_on_dark else 1.0 - ink
    picture = Image.fromarray((grey * 255).round().astype(np.uint8), "L")
    buffer = io.BytesIO()
    picture.resize((side, side), Image.Resampling.NEAREST).save(buffer, kind)
    return buffer.getvalue()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_png_of_a_held_out_digit_gets_its_label(
    digits_client: TestClient, digits_store: Path, index: int
) -> None:
    images, labels = held_out_digits()

    response = upload(
        digits_client,
        "digits",
        digit_image(images[index]),
        filename="digit.png",
        content_type="image/png",
    )

    served(response, digits_store, "digits")
    body = response.json()
    assert set(body) == REPLY_KEYS
    assert (body["filename"], body["rows"]) == ("digit.png", 1)
    assert body["predictions"][0]["label"] == int(labels[index])
    probabilities = body["predictions"][0]["probabilities"]
    assert list(probabilities) == [str(d) for d in range(10)]
    assert max(probabilities, key=probabilities.__getitem__) == str(labels[index])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_jpeg_of_a_held_out_digit_gets_its_label(
    digits_client: TestClient, digits_store: Path, index: int
) -> None:
    images, labels = held_out_digits()
    photo = digit_image(images[index], light_on_dark=False, side=200, kind="JPEG")
    assert photo.startswith(b"\xff\xd8\xff")

    response = upload(digits_client, "digits", photo, filename="d.jpg", content_type="image/jpeg")

    served(response, digits_store, "digits")
    assert response.json()["predictions"][0]["label"] == int(labels[index])


@pytest.mark.parametrize("light_on_dark", [True, False], ids=["light-on-dark", "dark-on-light"])
def test_held_out_digit_images_are_read_about_as_well_as_the_raw_data(
    digits_client: TestClient, digits_store: Path, light_on_dark: bool
) -> None:
    images, labels = held_out_digits()
    images, labels = images[:40], labels[:40]
    estimator = oracle(digits_store, "digits")
    raw_correct = int((estimator.predict(images.reshape(len(images), -1)) == labels).sum())

    correct = 0
    for image, label in zip(images, labels, strict=True):
        response = upload(
            digits_client,
            "digits",
            digit_image(image, light_on_dark=light_on_dark),
            filename="d.png",
            content_type="image/png",
        )
        assert response.status_code == 200, response.text
        correct += response.json()["predictions"][0]["label"] == int(label)

    assert raw_correct >= 36
    assert correct >= raw_correct - 3, (correct, raw_correct)


def test_csv_to_the_image_model_is_415(digits_client: TestClient) -> None:
    content = b"pixel_0_0,pixel_0_1\n0,16\n"

    response = upload(digits_client, "digits", content)

    detail = assert_envelope(response, 415, "UnsupportedMediaType")
    assert "PNG" in detail


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def bomb_png(side: int = 30_000) -> bytes:
    """A `side`×`side` 1-bit greyscale PNG of zeros: ~100 KB on the wire, side² pixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte, then 8 pixels per byte
    compressor = zlib.compressobj(9)
    rows_per_block = 1000
    idat = [compressor.compress(row * rows_per_block) for _ in range(side // rows_per_block)]
    idat.append(compressor.compress(row * (side % rows_per_block)))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(idat))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [30_000, 8_000], ids=["900-megapixels", "64-megapixels"])
def test_decompression_bomb_is_413_quickly(digits_client: TestClient, side: int) -> None:
    """30000² is past Pillow's own bomb check; 8000² is under it but over max_image_pixels
    (40 M by default), so the service's own check has to catch it."""
    bomb = bomb_png(side)
    assert len(bomb) < 200_000

    started = time.monotonic()
    response = upload(digits_client, "digits", bomb, filename="bomb.png", content_type="image/png")
    elapsed = time.monotonic() - started

    detail = assert_envelope(response, 413, "PayloadTooLarge")
    assert "pixels" in detail
    assert elapsed < 3.0


def test_max_image_pixels_setting_is_enforced(digits_store: Path) -> None:
    images, _ = held_out_digits()
    app = create_app(Settings(model_dir=digits_store, max_image_pixels=1000))
    with TestClient(app) as client:
        small = upload(client, "digits", digit_image(images[0], side=24), content_type="image/png")
        large = upload(client, "digits", digit_image(images[0], side=64), content_type="image/png")

    assert small.status_code == 200, small.text
    detail = assert_envelope(large, 413, "PayloadTooLarge")
    assert "1000" in detail


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(digit_image(np.eye(8) * 16)[:120], id="truncated"),
        pytest.param(PNG_SIGNATURE + random_bytes(2000), id="garbage-after-signature"),
        pytest.param(b"\xff\xd8\xff" + random_bytes(2000), id="garbage-after-jpeg-magic"),
    ],
)
def test_broken_image_is_400(digits_client: TestClient, content: bytes) -> None:
    response = upload(digits_client, "digits", content, filename="d.png", content_type="image/png")

    detail = assert_envelope(response, 400, "UnreadableFile")
    assert isinstance(detail, str)


def test_blank_image_is_422(digits_client: TestClient) -> None:
    response = upload(
        digits_client,
        "digits",
        png_bytes((64, 64), 255),
        filename="d.png",
        content_type="image/png",
    )

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [["file"]]


def test_image_model_form_page_has_a_file_input(digits_client: TestClient) -> None:
    response = digits_client.get("/models/digits/form")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert 'action="/models/digits/predict/file"' in html
    assert 'enctype="multipart/form-data"' in html
    assert 'type="file"' in html and 'name="file"' in html
    assert "pixel_0_0" not in html  # a file picker, not 64 number fields

"""POST /models/{name}/predict and /models/{name}/versions/{version}/predict, through the real
stack: happy paths checked against the fitted estimators, hostile bodies, limits, media types,
routing errors, sklearn warnings and CORS."""

import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import joblib
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from tests.conftest import FLOWER_FEATURES, flower_rows, pet_rows

JSON = {"content-type": "application/json"}
PETS_FEATURES = ["colour", "weight", "age"]
FLOWERS = "/models/flowers/predict"
PETS = "/models/pets/predict"
LINE = "/models/line/predict"


@pytest.fixture(autouse=True)
def _flowers_pinned_to_v1(request: pytest.FixtureRequest) -> None:
    """The store splits flowers 90/10; these tests expect the unpinned default to answer v1, so
    their client carries a session cookie that the real router sends to v1."""
    if "client" not in request.fixturenames:
        return
    client: TestClient = request.getfixturevalue("client")
    entry = client.app.state.registry.entry("flowers")  # type: ignore[attr-defined]
    session = next(
        f"pinned-to-v1-{i}" for i in range(1000) if entry.route(f"pinned-to-v1-{i}") == 1
    )
    client.cookies.set("modelport_session", session)


def oracle(store: Path, name: str, version: int = 1) -> Any:
    """The same fitted estimator the store serves, loaded independently."""
    return joblib.load(store / name / str(version) / "model.joblib")


def refuse_constant(value: str) -> Any:
    raise ValueError(f"not strict JSON: {value}")


def strict_json(text: str) -> Any:
    """Parse as RFC 8259 JSON: NaN, Infinity and -Infinity are errors."""
    return json.loads(text, parse_constant=refuse_constant)


def assert_envelope(response: httpx2.Response, status: int, kind: str) -> Any:
    """The error envelope, and nothing a client should not see; returns `detail`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    body = strict_json(response.text)
    assert set(body) == {"error", "detail"}
    assert body["error"] == kind
    return body["detail"]


def record(names: list[str], row: list[Any]) -> dict[str, Any]:
    return dict(zip(names, row, strict=True))


def assert_class_predictions(
    predictions: list[dict[str, Any]], estimator: Any, features: Any
) -> None:
    labels = estimator.predict(features).tolist()
    proba = estimator.predict_proba(features)
    classes = [str(c) for c in estimator.classes_]
    assert len(predictions) == len(labels)
    for item, label, row in zip(predictions, labels, proba, strict=True):
        assert set(item) == {"label", "probabilities"}
        assert item["label"] == label
        assert list(item["probabilities"]) == classes
        assert list(item["probabilities"].values()) == pytest.approx(row.tolist(), abs=1e-12)
        assert math.fsum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)


# -- happy paths ------------------------------------------------------------------------------


def test_flowers_records_and_arrays_mixed(client: TestClient, store: Path) -> None:
    rows = flower_rows()
    instances: list[Any] = [
        record(FLOWER_FEATURES, row) if i % 2 else row for i, row in enumerate(rows)
    ]
    instances[1] = dict(reversed(list(instances[1].items())))  # keys in another order

    response = client.post(FLOWERS, json={"instances": instances})

    assert response.status_code == 200
    body = response.json()
    assert (body["model_name"], body["model_version"]) == ("flowers", 1)
    assert_class_predictions(body["predictions"], oracle(store, "flowers"), np.array(rows))


@pytest.mark.parametrize("as_records", [True, False], ids=["records", "arrays"])
def test_pets_dataframe_pipeline(client: TestClient, store: Path, as_records: bool) -> None:
    rows = pet_rows()
    instances = [record(PETS_FEATURES, row) if as_records else row for row in rows]

    response = client.post(PETS, json={"instances": instances})

    assert response.status_code == 200
    body = response.json()
    assert (body["model_name"], body["model_version"]) == ("pets", 1)
    frame = pd.DataFrame(rows, columns=PETS_FEATURES)
    assert_class_predictions(body["predictions"], oracle(store, "pets"), frame)
    assert {item["label"] for item in body["predictions"]} == {"cat", "dog"}


def test_line_regression_values(client: TestClient, store: Path) -> None:
    # conftest fits `line` on points with b = a + 1 only, where y = 2a - b + 3 is what it
    # learned; elsewhere the API must still agree with the estimator itself.
    on_line = [[a, a + 1.0] for a in (0.0, 2.5, -3.0, 1000.0)]
    off_line = [[1.5, -2.0], [-3.0, 4.0]]
    instances: list[Any] = [*on_line, *(record(["a", "b"], row) for row in off_line)]

    response = client.post(LINE, json={"instances": instances})

    assert response.status_code == 200
    body = response.json()
    assert (body["model_name"], body["model_version"]) == ("line", 1)
    values = [item["value"] for item in body["predictions"]]
    assert all(set(item) == {"value"} for item in body["predictions"])
    for value, (a, b) in zip(values, on_line, strict=False):
        assert abs(value - (2 * a - b + 3)) <= 1e-9
    expected = oracle(store, "line").predict(np.array(on_line + off_line)).tolist()
    assert values == pytest.approx(expected, abs=1e-12)


def test_pinned_version_2_answers_with_version_2(client: TestClient, store: Path) -> None:
    rows = flower_rows()

    pinned = client.post("/models/flowers/versions/2/predict", json={"instances": rows})
    default = client.post(FLOWERS, json={"instances": rows})

    assert pinned.status_code == 200
    assert default.status_code == 200
    assert pinned.json()["model_version"] == 2
    assert default.json()["model_version"] == 1
    assert_class_predictions(pinned.json()["predictions"], oracle(store, "flowers", 2), rows)
    assert_class_predictions(default.json()["predictions"], oracle(store, "flowers", 1), rows)
    # v2 is a different fit (C=0.1), so pinning really selects another model
    assert pinned.json()["predictions"] != default.json()["predictions"]


def test_pinned_version_1_equals_the_default(client: TestClient) -> None:
    rows = flower_rows(3)

    pinned = client.post("/models/flowers/versions/1/predict", json={"instances": rows})
    default = client.post(FLOWERS, json={"instances": rows})

    assert pinned.status_code == 200
    assert default.status_code == 200
    assert pinned.json() == default.json()


# -- hostile bodies ---------------------------------------------------------------------------

VALID_FLOWER = b"5.1, 3.5, 1.4, 0.2"


def flowers_row(cells: bytes) -> bytes:
    return b'{"instances": [[' + cells + b"]]}"


def pets_body(instance: bytes) -> bytes:
    return b'{"instances": [' + instance + b"]}"


INVALID_BODIES = [
    # non-finite and out-of-range numbers
    pytest.param(FLOWERS, flowers_row(b"NaN, 3.5, 1.4, 0.2"), ["instances", 0, "row", 0], id="nan"),
    pytest.param(
        FLOWERS, flowers_row(b"5.1, Infinity, 1.4, 0.2"), ["instances", 0, "row", 1], id="infinity"
    ),
    pytest.param(
        FLOWERS,
        flowers_row(b"5.1, 3.5, -Infinity, 0.2"),
        ["instances", 0, "row", 2],
        id="minus-infinity",
    ),
    pytest.param(
        FLOWERS, flowers_row(b"5.1, 3.5, 1.4, 1e999"), ["instances", 0, "row", 3], id="1e999"
    ),
    pytest.param(
        FLOWERS, flowers_row(b"-1e999, 3.5, 1.4, 0.2"), ["instances", 0, "row", 0], id="-1e999"
    ),
    pytest.param(
        FLOWERS,
        flowers_row(b"9" * 400 + b", 3.5, 1.4, 0.2"),
        ["instances", 0, "row", 0],
        id="400-digit-integer",
    ),
    pytest.param(
        FLOWERS,
        flowers_row(b"5.1, -0.5, 1.4, 0.2"),
        ["instances", 0, "row", 1],
        id="below-minimum",
    ),
    # wrong JSON types in a cell
    pytest.param(
        FLOWERS, flowers_row(b"true, 3.5, 1.4, 0.2"), ["instances", 0, "row", 0], id="true"
    ),
    pytest.param(
        FLOWERS, flowers_row(b"5.1, false, 1.4, 0.2"), ["instances", 0, "row", 1], id="false"
    ),
    pytest.param(
        FLOWERS, flowers_row(b"5.1, 3.5, null, 0.2"), ["instances", 0, "row", 2], id="null"
    ),
    pytest.param(
        FLOWERS,
        flowers_row(b'5.1, 3.5, 1.4, "1.5"'),
        ["instances", 0, "row", 3],
        id="string-number",
    ),
    pytest.param(
        FLOWERS, flowers_row(b"[1.0], 3.5, 1.4, 0.2"), ["instances", 0, "row", 0], id="nested-list"
    ),
    pytest.param(
        FLOWERS,
        flowers_row(b'{"v": 1}, 3.5, 1.4, 0.2'),
        ["instances", 0, "row", 0],
        id="object-cell",
    ),
    # wrong row shapes
    pytest.param(
        FLOWERS, flowers_row(b"5.1, 3.5, 1.4"), ["instances", 0, "row", 3], id="row-too-short"
    ),
    pytest.param(
        FLOWERS, flowers_row(VALID_FLOWER + b", 9.9"), ["instances", 0, "row"], id="row-too-long"
    ),
    pytest.param(
        FLOWERS,
        b'{"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]}',
        ["instances", 0, "record", "petal_width"],
        id="record-missing-feature",
    ),
    pytest.param(
        FLOWERS,
        b'{"instances": [[5.1, 3.5, 1.4, 0.2], {"sepal_length": 5.1, "sepal_width": 3.5,'
        b' "petal_length": 1.4, "petal_width": 0.2, "stem": 1}]}',
        ["instances", 1, "record", "stem"],
        id="record-extra-feature",
    ),
    # pets: categories and integers
    pytest.param(
        PETS,
        pets_body(b'{"colour": "purple", "weight": 4.0, "age": 3}'),
        ["instances", 0, "record", "colour"],
        id="pets-unknown-category",
    ),
    pytest.param(
        PETS,
        pets_body(b'{"colour": "Black", "weight": 4.0, "age": 3}'),
        ["instances", 0, "record", "colour"],
        id="pets-category-wrong-case",
    ),
    pytest.param(
        PETS, pets_body(b"[1, 4.0, 3]"), ["instances", 0, "row", 0], id="pets-number-as-category"
    ),
    pytest.param(
        PETS, pets_body(b'["black", 4.0, 3.5]'), ["instances", 0, "row", 2], id="pets-int-is-3.5"
    ),
    pytest.param(
        PETS,
        pets_body(b'["black", 4.0, 1e300]'),
        ["instances", 0, "row", 2],
        id="pets-int-is-1e300",
    ),
    pytest.param(
        PETS,
        pets_body(b'{"colour": "black", "weight": 4.0, "age": 3.5}'),
        ["instances", 0, "record", "age"],
        id="pets-record-int-is-3.5",
    ),
    pytest.param(
        PETS, pets_body(b'["black", 4.0, 41]'), ["instances", 0, "row", 2], id="pets-int-above-max"
    ),
    pytest.param(
        PETS,
        pets_body(b'["black", 4.0, ' + b"9" * 400 + b"]"),
        ["instances", 0, "row", 2],
        id="pets-400-digit-int",
    ),
    pytest.param(
        PETS,
        pets_body(b'["black", -0.1, 3]'),
        ["instances", 0, "row", 1],
        id="pets-negative-weight",
    ),
    # wrong request shapes
    pytest.param(FLOWERS, b'{"instances": []}', ["instances"], id="instances-empty"),
    pytest.param(FLOWERS, b"{}", ["instances"], id="instances-missing"),
    pytest.param(FLOWERS, b'{"instances": {"a": 1}}', ["instances"], id="instances-an-object"),
    pytest.param(FLOWERS, b'{"instances": 5}', ["instances"], id="instances-a-number"),
    pytest.param(FLOWERS, b'{"instances": null}', ["instances"], id="instances-null"),
    pytest.param(FLOWERS, b'{"instances": [5]}', ["instances", 0], id="instance-a-number"),
    pytest.param(FLOWERS, b'{"instances": ["5.1"]}', ["instances", 0], id="instance-a-string"),
    pytest.param(FLOWERS, b'{"instances": [null]}', ["instances", 0], id="instance-null"),
    pytest.param(FLOWERS, b"[1, 2]", [], id="top-level-array"),
    pytest.param(FLOWERS, b'"instances"', [], id="top-level-string"),
    pytest.param(FLOWERS, b"null", [], id="top-level-null"),
    pytest.param(FLOWERS, b"42", [], id="top-level-number"),
    pytest.param(
        FLOWERS,
        b'{"instances": [[' + VALID_FLOWER + b']], "model": "pets"}',
        ["model"],
        id="extra-top-level-key",
    ),
]


@pytest.mark.parametrize(("path", "content", "loc"), INVALID_BODIES)
def test_body_that_parses_but_fails_the_schema_is_422(
    client: TestClient, path: str, content: bytes, loc: list[Any]
) -> None:
    response = client.post(path, content=content, headers=JSON)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert isinstance(detail, list)
    assert all(set(issue) == {"loc", "msg", "type"} for issue in detail)
    assert all(isinstance(issue["msg"], str) and issue["msg"] for issue in detail)
    assert [issue["loc"] for issue in detail] == [loc]


def test_empty_row_reports_every_missing_cell(client: TestClient) -> None:
    response = client.post(FLOWERS, content=b'{"instances": [[]]}', headers=JSON)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [(issue["loc"], issue["type"]) for issue in detail] == [
        (["instances", 0, "row", i], "missing") for i in range(4)
    ]


def test_nan_error_is_strict_json_naming_the_cell(client: TestClient) -> None:
    # FastAPI's default handler echoes the input (NaN) back and 500s serialising it.
    response = client.post(FLOWERS, content=flowers_row(b"NaN, 3.5, 1.4, 0.2"), headers=JSON)

    assert response.status_code == 422
    assert "NaN" not in response.text
    assert strict_json(response.text) == {
        "error": "InvalidInput",
        "detail": [
            {
                "loc": ["instances", 0, "row", 0],
                "msg": "Input should be a finite number",
                "type": "finite_number",
            }
        ],
    }


def test_errors_on_several_cells_are_all_reported(client: TestClient) -> None:
    content = b'{"instances": [[5.1, NaN, 1.4, 0.2], [5.1, 3.5, 1.4, 0.2], [true, 3.5, 1.4, -1]]}'

    response = client.post(FLOWERS, content=content, headers=JSON)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [
        ["instances", 0, "row", 1],
        ["instances", 2, "row", 0],
        ["instances", 2, "row", 3],
    ]


def deeply_nested(levels: int) -> bytes:
    return b'{"instances": ' + b"[" * levels + b"]" * levels + b"}"


MALFORMED_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe\x00", id="not-utf8"),
    pytest.param(b'{"instances": [[5.1, 3.5, \xff\xfe]]}', id="not-utf8-inside"),
    pytest.param(b'{"instances": [[5.1, 3.5,', id="truncated"),
    pytest.param(b"\xef\xbb\xbf" + flowers_row(VALID_FLOWER), id="utf8-bom"),
    pytest.param(b"[" * 10_000, id="10000-open-brackets"),
    pytest.param(deeply_nested(10_000), id="10000-levels-balanced"),
    pytest.param(b"hello", id="not-json"),
    pytest.param(b"{'instances': [[5.1, 3.5, 1.4, 0.2]]}", id="single-quotes"),
    pytest.param(flowers_row(VALID_FLOWER) + b" {}", id="trailing-garbage"),
    pytest.param(b'{"instances": [[5.1, 3.5, 1.4, 0.2,]]}', id="trailing-comma"),
]


@pytest.mark.parametrize("content", MALFORMED_BODIES)
def test_unparseable_body_is_400(client: TestClient, content: bytes) -> None:
    response = client.post(FLOWERS, content=content, headers=JSON)

    detail = assert_envelope(response, 400, "MalformedBody")
    assert isinstance(detail, str)
    assert detail


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "instances": [[6.6, 3.0, 5.5, 2.0]]}',
            id="duplicate-top-level-key",
        ),
        pytest.param(
            b'{"instances": [{"sepal_length": 5.1, "sepal_length": 6.6, "sepal_width": 3.5,'
            b' "petal_length": 1.4, "petal_width": 0.2}]}',
            id="duplicate-feature-key",
        ),
    ],
)
def test_duplicate_keys_are_refused(client: TestClient, content: bytes) -> None:
    """Which duplicate wins differs between JSON parsers (first, last, error), so a strict API
    must not guess: a proxy or client library may have validated the other value."""
    response = client.post(FLOWERS, content=content, headers=JSON)

    assert 400 <= response.status_code < 500, response.text
    assert strict_json(response.text)["error"] in {"InvalidInput", "MalformedBody"}


def test_leading_and_trailing_whitespace_is_fine(client: TestClient) -> None:
    response = client.post(
        FLOWERS, content=b" \n\t" + flowers_row(VALID_FLOWER) + b"\r\n ", headers=JSON
    )

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


# -- limits -----------------------------------------------------------------------------------


def test_exactly_max_rows_is_accepted(client: TestClient, store: Path) -> None:
    rows = (flower_rows(10) * 5)[:50]

    response = client.post(FLOWERS, json={"instances": rows})

    assert response.status_code == 200
    assert_class_predictions(response.json()["predictions"], oracle(store, "flowers"), rows)


@pytest.mark.parametrize("form", ["arrays", "records"])
def test_one_row_over_max_rows_is_422(client: TestClient, form: str) -> None:
    """The documented `maxItems` of `instances`: a schema violation like any other (a 413
    is for bodies over the byte limit)."""
    rows: list[Any] = (flower_rows(10) * 6)[:51]
    if form == "records":
        rows = [dict(zip(FLOWER_FEATURES, row, strict=True)) for row in rows]

    response = client.post(FLOWERS, json={"instances": rows})

    detail = assert_envelope(response, 422, "InvalidInput")
    assert detail == [
        {"loc": ["instances"], "msg": "Too many rows: at most 50 per request", "type": "too_long"}
    ]


def padded_body(size: int) -> bytes:
    """A valid flowers request of exactly `size` bytes (JSON allows trailing whitespace)."""
    core = flowers_row(VALID_FLOWER)
    assert size >= len(core)
    return core + b" " * (size - len(core))


def chunks(content: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


def test_body_at_the_byte_limit_is_accepted(client: TestClient) -> None:
    response = client.post(FLOWERS, content=padded_body(64 * 1024), headers=JSON)

    assert response.request.headers["content-length"] == str(64 * 1024)
    assert response.status_code == 200


def test_body_over_the_byte_limit_with_content_length_is_413(client: TestClient) -> None:
    response = client.post(FLOWERS, content=padded_body(64 * 1024 + 1), headers=JSON)

    assert response.request.headers["content-length"] == str(64 * 1024 + 1)
    detail = assert_envelope(response, 413, "PayloadTooLarge")
    assert str(64 * 1024) in detail


def test_streamed_body_over_the_byte_limit_is_413(client: TestClient) -> None:
    response = client.post(FLOWERS, content=chunks(padded_body(200 * 1024)), headers=JSON)

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_envelope(response, 413, "PayloadTooLarge")


def test_streamed_body_just_over_the_byte_limit_is_413(client: TestClient) -> None:
    response = client.post(FLOWERS, content=chunks(padded_body(64 * 1024 + 1)), headers=JSON)

    assert "content-length" not in response.request.headers
    assert_envelope(response, 413, "PayloadTooLarge")


def test_streamed_body_under_the_limit_is_accepted(client: TestClient) -> None:
    response = client.post(FLOWERS, content=chunks(padded_body(10_000), 1000), headers=JSON)

    assert "content-length" not in response.request.headers
    assert response.status_code == 200
    assert response.json()["model_version"] == 1


def test_many_rows_over_the_byte_limit_is_413_before_parsing(client: TestClient) -> None:
    content = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 4000}).encode()
    assert len(content) > 64 * 1024

    response = client.post(FLOWERS, content=content, headers=JSON)

    detail = assert_envelope(response, 413, "PayloadTooLarge")
    assert "bytes" in detail


# -- media types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/json",
    ],
)
def test_non_json_content_type_is_415(client: TestClient, content_type: str) -> None:
    response = client.post(
        FLOWERS, content=flowers_row(VALID_FLOWER), headers={"content-type": content_type}
    )

    detail = assert_envelope(response, 415, "UnsupportedMediaType")
    assert content_type.split(";")[0] in detail


def test_form_post_is_415(client: TestClient) -> None:
    response = client.post(FLOWERS, data={"instances": "[[5.1, 3.5, 1.4, 0.2]]"})

    assert response.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert_envelope(response, 415, "UnsupportedMediaType")


def test_missing_content_type_is_read_as_json(client: TestClient) -> None:
    response = client.post(FLOWERS, content=flowers_row(VALID_FLOWER))

    assert "content-type" not in response.request.headers
    assert response.status_code == 200
    assert response.json()["model_name"] == "flowers"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json;"]
)
def test_json_content_type_variants_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post(
        FLOWERS, content=flowers_row(VALID_FLOWER), headers={"content-type": content_type}
    )

    assert response.status_code == 200
    assert response.json()["model_version"] == 1


# -- routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/models/nope/predict",
        "/models/nope/versions/1/predict",
        "/models/flowers/versions/3/predict",
    ],
    ids=["unknown-model", "unknown-model-pinned", "unknown-version"],
)
def test_unknown_model_or_version_is_404(client: TestClient, path: str) -> None:
    response = client.post(path, content=flowers_row(VALID_FLOWER), headers=JSON)

    detail = assert_envelope(response, 404, "ModelNotFound")
    assert isinstance(detail, str)


@pytest.mark.parametrize(
    ("version", "type_"),
    [("0", "greater_than_equal"), ("-1", "greater_than_equal"), ("abc", "int_parsing")],
)
def test_invalid_version_is_422(client: TestClient, version: str, type_: str) -> None:
    response = client.post(
        f"/models/flowers/versions/{version}/predict",
        content=flowers_row(VALID_FLOWER),
        headers=JSON,
    )

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [(issue["loc"], issue["type"]) for issue in detail] == [(["path", "version"], type_)]


@pytest.mark.parametrize("path", [FLOWERS, "/models/flowers/versions/2/predict"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_predict_are_405(client: TestClient, path: str, method: str) -> None:
    response = client.request(method, path)

    assert_envelope(response, 405, "MethodNotAllowed")
    assert response.headers["allow"] == "POST"


# -- sklearn warnings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "instances"),
    [
        pytest.param(PETS, [record(PETS_FEATURES, row) for row in pet_rows()], id="pets-records"),
        pytest.param(PETS, pet_rows(), id="pets-arrays"),
        pytest.param(FLOWERS, flower_rows(), id="flowers-arrays"),
        pytest.param(
            FLOWERS, [record(FLOWER_FEATURES, row) for row in flower_rows()], id="flowers-records"
        ),
    ],
)
def test_predict_raises_no_warnings(client: TestClient, path: str, instances: list[Any]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = client.post(path, json={"instances": instances})

    assert response.status_code == 200
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


# -- CORS -------------------------------------------------------------------------------------


def preflight(client: TestClient, origin: str) -> httpx2.Response:
    return client.options(
        FLOWERS,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )


def test_cors_allows_a_listed_origin_with_credentials(store: Path) -> None:
    app = create_app(Settings(model_dir=store, cors_origins=["https://app.example"]))
    with TestClient(app) as client:
        response = preflight(client, "https://app.example")
        actual = client.post(
            FLOWERS,
            content=flowers_row(VALID_FLOWER),
            headers={**JSON, "origin": "https://app.example"},
        )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == "https://app.example"


def test_cors_refuses_an_unlisted_origin(store: Path) -> None:
    app = create_app(Settings(model_dir=store, cors_origins=["https://app.example"]))
    with TestClient(app) as client:
        response = preflight(client, "https://evil.example")
        actual = client.post(
            FLOWERS,
            content=flowers_row(VALID_FLOWER),
            headers={**JSON, "origin": "https://evil.example"},
        )

    assert "access-control-allow-origin" not in response.headers
    assert_envelope(response, 400, "CORSPreflightRefused")
    assert actual.status_code == 200
    assert "access-control-allow-origin" not in actual.headers


def test_no_cors_by_default(client: TestClient) -> None:
    response = preflight(client, "https://app.example")

    assert "access-control-allow-origin" not in response.headers
    assert_envelope(response, 405, "MethodNotAllowed")


@pytest.mark.parametrize(
    "origins",
    ["*", ["*"], "https://a.example, *", ["https://a.example", "*"]],
    ids=["star-string", "star-list", "star-in-string-list", "star-in-list"],
)
def test_cors_wildcard_is_refused(store: Path, origins: Any) -> None:
    with pytest.raises(ValidationError, match="not allowed"):
        Settings(model_dir=store, cors_origins=origins)


def test_cors_origins_parse_from_a_comma_separated_string(store: Path) -> None:
    settings = Settings(model_dir=store, cors_origins="https://a.example, https://b.example")

    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_cors_origins_parse_from_the_environment(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_CORS_ORIGINS", "https://a.example,https://b.example,")

    assert Settings(model_dir=store).cors_origins == ["https://a.example", "https://b.example"]

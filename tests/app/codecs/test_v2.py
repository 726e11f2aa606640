"""The Open Inference Protocol codec (app.codecs.v2) on real fitted models.

Requests are encoded independently of the codec: binary tensors with numpy's `tobytes()` and
tritonclient's `serialize_byte_tensor`, or by tritonclient's own request builder; replies are
decoded with `numpy.frombuffer`, `deserialize_bytes_tensor` and tritonclient's response parser.
Expected values come from `run()` and from the fitted estimators loaded straight from the store.
"""

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import (
    deserialize_bytes_tensor,
    np_to_triton_dtype,
    serialize_byte_tensor,
    triton_to_np_dtype,
)

from app.codecs.v2.header import parse_request
from app.codecs.v2.metadata import model_metadata
from app.codecs.v2.protocol import HEADER_LENGTH
from app.codecs.v2.response import response_body
from app.codecs.v2.tensors import request_rows
from app.errors import BadTensor
from app.serving.model import LoadedModel, run
from app.serving.registry import scan_store
from app.serving.schema import Row
from tests.conftest import FLOWER_FEATURES, build_store

FLOWERS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0], [6.1, 2.9, 4.7, 1.4]]
)
PETS_COLOUR = ["ginger", "black", "white", "black"]
PETS_WEIGHT = [3.5, 5.25, 4.0, 2.75]
PETS_AGE = [4, 11, 0, 40]
LINE = np.array([[1.0, 2.0], [-3.5, 0.25], [4.0, -4.0]])


# -- fixtures and independent encoders -------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("v2") / "models")


@pytest.fixture(scope="module")
def models(store: Path) -> dict[str, LoadedModel]:
    snapshot = scan_store(store, max_rows=50, trusted_types=[])
    assert not snapshot.problems
    return {name: entry.versions[1] for name, entry in snapshot.entries.items()}


def oracle(store: Path, name: str) -> Any:
    """The same fitted estimator, loaded independently of the registry."""
    return joblib.load(store / name / "1" / "model.joblib")


def json_body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def binary_tensor(name: str, array: np.ndarray[Any, Any]) -> tuple[dict[str, Any], bytes]:
    """A tensor's JSON description and its bytes, as the binary extension sends them."""
    if array.dtype == np.object_:
        raw: bytes = serialize_byte_tensor(array).item()
    else:
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    header = {
        "name": name,
        "shape": list(array.shape),
        "datatype": np_to_triton_dtype(array.dtype),
        "parameters": {"binary_data_size": len(raw)},
    }
    return header, raw


def binary_body(tensors: list[tuple[str, np.ndarray[Any, Any]]], **extra: Any) -> tuple[bytes, str]:
    """(body, Inference-Header-Content-Length) for inputs sent as binary data."""
    parts = [binary_tensor(name, array) for name, array in tensors]
    head = json.dumps({"inputs": [header for header, _ in parts], **extra}).encode()
    return head + b"".join(raw for _, raw in parts), str(len(head))


def strings(values: list[str]) -> np.ndarray[Any, Any]:
    return np.array([value.encode() for value in values], dtype=np.object_)


def decode(model: LoadedModel, body: bytes, header_length: str | None = None) -> list[Row]:
    request, tail = parse_request(body, header_length)
    return request_rows(model, request, tail)


def refused(
    model: LoadedModel, body: bytes, header_length: str | None = None, match: str | None = None
) -> str:
    """The BadTensor message; any other exception type fails the test."""
    with pytest.raises(BadTensor, match=match) as info:
        decode(model, body, header_length)
    assert isinstance(info.value.detail, str)
    return info.value.detail


def infer(
    model: LoadedModel, body: bytes, header_length: str | None = None
) -> tuple[bytes, dict[str, str]]:
    request, tail = parse_request(body, header_length)
    return response_body(model, request, run(model, request_rows(model, request, tail)))


def read_reply(
    body: bytes, headers: dict[str, str]
) -> tuple[dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
    """Decode a reply independently: the JSON header and each output as an array (BYTES as
    Python str), checking that the binary parts fill the body exactly."""
    if HEADER_LENGTH in headers:
        assert headers["Content-Type"] == "application/octet-stream"
        length = int(headers[HEADER_LENGTH])
        header, rest = json.loads(body[:length]), body[length:]
    else:
        assert headers["Content-Type"] == "application/json"
        header, rest = json.loads(body), b""
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for output in header["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        datatype = output["datatype"]
        if size is not None:
            assert "data" not in output
            chunk = rest[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                array = np.array(
                    [b.decode() for b in deserialize_bytes_tensor(chunk)], dtype=object
                )
            else:
                dtype = np.dtype(triton_to_np_dtype(datatype)).newbyteorder("<")
                array = np.frombuffer(chunk, dtype=dtype)
        else:
            dtype = np.dtype(object if datatype == "BYTES" else triton_to_np_dtype(datatype))
            array = np.array(output["data"], dtype=dtype)
        arrays[output["name"]] = array.reshape(output["shape"])
    assert offset == len(rest)
    return header, arrays


def floats(matrix: np.ndarray[Any, Any]) -> list[Row]:
    return [tuple(row) for row in matrix.astype(np.float64).tolist()]


def pets_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "colour": np.array(PETS_COLOUR, dtype=object),
            "weight": np.array(PETS_WEIGHT, dtype=np.float64),
            "age": np.array(PETS_AGE, dtype=np.int64),
        }
    )


# -- requests that decode --------------------------------------------------------------------
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_flowers_json_matrix(models: dict[str, LoadedModel], nested: bool, datatype: str) -> None:
    dtype = triton_to_np_dtype(datatype)
    data = FLOWERS.astype(dtype)
    tensor = {
        "name": "input-0",
        "shape": [4, 4],
        "datatype": datatype,
        "data": data.tolist() if nested else data.ravel().tolist(),
    }
    rows = decode(models["flowers"], json_body([tensor]))
    assert rows == floats(data)
    assert all(type(value) is float for row in rows for value in row)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flowers_binary_matrix_matches_estimator(
    models: dict[str, LoadedModel], store: Path, dtype: Any
) -> None:
    data = FLOWERS.astype(dtype)
    model = models["flowers"]
    rows = decode(model, *binary_body([("input-0", data)]))
    assert rows == floats(data)
    output = run(model, rows)
    estimator = oracle(store, "flowers")
    np.testing.assert_array_equal(output.predictions, estimator.predict(data.astype(np.float64)))
    assert output.probabilities is not None
    np.testing.assert_array_equal(
        output.probabilities, estimator.predict_proba(data.astype(np.float64))
    )


@pytest.mark.parametrize("column_shape", ["[N]", "[N, 1]"])
def test_flowers_binary_per_feature_in_any_order(
    models: dict[str, LoadedModel], column_shape: str
) -> None:
    order = [2, 0, 3, 1]
    tensors = [
        (
            FLOWER_FEATURES[j],
            FLOWERS[:, j].copy() if column_shape == "[N]" else FLOWERS[:, [j]].copy(),
        )
        for j in order
    ]
    assert decode(models["flowers"], *binary_body(tensors)) == floats(FLOWERS)


def test_flowers_json_per_feature_mixed_numeric_datatypes(
    models: dict[str, LoadedModel],
) -> None:
    inputs = [
        {"name": "petal_width", "shape": [4], "datatype": "FP64", "data": FLOWERS[:, 3].tolist()},
        {"name": "sepal_length", "shape": [4, 1], "datatype": "FP64", "data": [[v] for v in FLOWERS[:, 0].tolist()]},
        {"name": "petal_length", "shape": [4], "datatype": "FP64", "data": FLOWERS[:, 2].tolist()},
        {"name": "sepal_width", "shape": [4], "datatype": "FP64", "data": FLOWERS[:, 1].tolist()},
    ]  # fmt: skip
    assert decode(models["flowers"], json_body(inputs)) == floats(FLOWERS)


def test_json_fp32_data_is_read_as_fp32_like_binary(models: dict[str, LoadedModel]) -> None:
    """The datatype is authoritative: FP32 JSON data gives the rows FP32 binary data gives."""
    body = json_body([{"name": "x", "shape": [4, 4], "datatype": "FP32", "data": FLOWERS.tolist()}])
    from_json = decode(models["flowers"], body)
    assert from_json == decode(models["flowers"], *binary_body([("x", FLOWERS.astype("<f4"))]))
    assert from_json[0][0] == float(np.float32(5.1))


def test_integer_datatypes_feed_float_features(models: dict[str, LoadedModel]) -> None:
    data = np.array([[5, 3, 1, 0], [7, 3, 6, 2]], dtype=np.uint8)
    rows = decode(models["flowers"], *binary_body([("x", data)]))
    assert rows == [(5.0, 3.0, 1.0, 0.0), (7.0, 3.0, 6.0, 2.0)]
    assert all(type(value) is float for row in rows for value in row)


def test_pets_binary_per_feature_matches_pipeline(
    models: dict[str, LoadedModel], store: Path
) -> None:
    model = models["pets"]
    tensors = [
        ("age", np.array(PETS_AGE, dtype=np.int64)),
        ("colour", strings(PETS_COLOUR)),
        ("weight", np.array(PETS_WEIGHT, dtype=np.float32)),
    ]
    rows = decode(model, *binary_body(tensors))
    assert rows == list(zip(PETS_COLOUR, PETS_WEIGHT, PETS_AGE, strict=True))
    assert [type(value) for value in rows[0]] == [str, float, int]
    output = run(model, rows)
    estimator = oracle(store, "pets")
    np.testing.assert_array_equal(output.predictions, estimator.predict(pets_frame()))
    assert output.probabilities is not None
    np.testing.assert_array_equal(output.probabilities, estimator.predict_proba(pets_frame()))


def test_pets_json_per_feature_with_integral_floats_for_age(
    models: dict[str, LoadedModel],
) -> None:
    inputs = [
        {"name": "colour", "shape": [4, 1], "datatype": "BYTES", "data": [[c] for c in PETS_COLOUR]},
        {"name": "weight", "shape": [4], "datatype": "FP32", "data": PETS_WEIGHT},
        {"name": "age", "shape": [4], "datatype": "FP64", "data": [float(a) for a in PETS_AGE]},
    ]  # fmt: skip
    rows = decode(models["pets"], json_body(inputs))
    assert rows == list(zip(PETS_COLOUR, PETS_WEIGHT, PETS_AGE, strict=True))
    assert all(type(row[2]) is int for row in rows)


def test_pets_binary_fp_age_integral_accepted_fractional_refused(
    models: dict[str, LoadedModel],
) -> None:
    def body(age: list[float]) -> tuple[bytes, str]:
        return binary_body(
            [
                ("colour", strings(["white", "ginger"])),
                ("weight", np.array([4.0, 4.5])),
                ("age", np.array(age, dtype=np.float64)),
            ]
        )

    assert decode(models["pets"], *body([3.0, 40.0])) == [("white", 4.0, 3), ("ginger", 4.5, 40)]
    message = refused(models["pets"], *body([3.0, 3.5]))
    assert "input 'age' row 1, feature 'age'" in message
    refused(models["pets"], *body([3.0, 1e300]), match="feature 'age'")
    refused(models["pets"], *body([3.0, -1.0]), match="feature 'age'")


def test_line_regression_json_and_binary(models: dict[str, LoadedModel], store: Path) -> None:
    model = models["line"]
    expected = oracle(store, "line").predict(LINE)
    for body, header_length in (
        (json_body([{"name": "x", "shape": [3, 2], "datatype": "FP64", "data": LINE.tolist()}]), None),
        binary_body([("b", LINE[:, 1].copy()), ("a", LINE[:, 0].copy())]),
    ):  # fmt: skip
        header, outputs = read_reply(*infer(model, body, header_length))
        assert [o["name"] for o in header["outputs"]] == ["predict"]
        assert header["outputs"][0]["datatype"] == "FP64"
        np.testing.assert_array_equal(outputs["predict"], expected)


def test_through_tritonclient_request_and_response(models: dict[str, LoadedModel]) -> None:
    """tritonclient's own request builder and response parser, in their default (binary) mode
    and in JSON mode."""
    model = models["pets"]
    for binary in (True, False):
        colour = triton_http.InferInput("colour", [4], "BYTES")
        colour.set_data_from_numpy(strings(PETS_COLOUR), binary_data=binary)
        weight = triton_http.InferInput("weight", [4], "FP64")
        weight.set_data_from_numpy(np.array(PETS_WEIGHT), binary_data=binary)
        age = triton_http.InferInput("age", [4], "INT64")
        age.set_data_from_numpy(np.array(PETS_AGE, dtype=np.int64), binary_data=binary)
        outputs = None if binary else [triton_http.InferRequestedOutput("predict_proba", False)]
        body, json_size = triton_http.InferenceServerClient.generate_request_body(
            [weight, age, colour], outputs=outputs, request_id="req-7"
        )
        header_length = None if json_size is None else str(json_size)
        rows = decode(model, body, header_length)
        expected = run(model, rows)
        reply, headers = infer(model, body, header_length)
        assert (HEADER_LENGTH in headers) is binary
        result = triton_http.InferenceServerClient.parse_response_body(
            reply,
            header_length=int(headers[HEADER_LENGTH]) if HEADER_LENGTH in headers else None,
        )
        assert result.get_response()["id"] == "req-7"
        assert expected.probabilities is not None
        np.testing.assert_array_equal(result.as_numpy("predict_proba"), expected.probabilities)
        if binary:
            labels = [label.decode() for label in result.as_numpy("predict").tolist()]
            assert labels == expected.predictions.tolist()
        else:
            assert result.as_numpy("predict") is None


# -- replies ---------------------------------------------------------------------------------
def flowers_request(**extra: Any) -> bytes:
    tensor = {"name": "input-0", "shape": [4, 4], "datatype": "FP64", "data": FLOWERS.tolist()}
    return json_body([tensor], **extra)


def test_reply_has_all_outputs_by_default(models: dict[str, LoadedModel]) -> None:
    model = models["flowers"]
    body, headers = infer(model, flowers_request())
    assert headers == {"Content-Type": "application/json"}
    header, outputs = read_reply(body, headers)
    assert header["model_name"] == "flowers"
    assert header["model_version"] == "1"
    assert "id" not in header
    assert [(o["name"], o["datatype"], o["shape"]) for o in header["outputs"]] == [
        ("predict", "BYTES", [4]),
        ("predict_proba", "FP64", [4, 3]),
    ]
    expected = run(model, floats(FLOWERS))
    assert outputs["predict"].tolist() == expected.predictions.tolist()
    assert expected.probabilities is not None
    np.testing.assert_array_equal(outputs["predict_proba"], expected.probabilities)
    np.testing.assert_allclose(outputs["predict_proba"].sum(axis=1), 1.0)


def test_reply_echoes_the_request_id(models: dict[str, LoadedModel]) -> None:
    header, _ = read_reply(*infer(models["flowers"], flowers_request(id="abc-123")))
    assert header["id"] == "abc-123"


@pytest.mark.parametrize(
    ("requested", "names"),
    [
        ([{"name": "predict"}], ["predict"]),
        ([{"name": "predict_proba"}], ["predict_proba"]),
        ([{"name": "predict_proba"}, {"name": "predict"}], ["predict_proba", "predict"]),
        ([], ["predict", "predict_proba"]),
    ],
)
def test_reply_outputs_selection(
    models: dict[str, LoadedModel], requested: list[dict[str, Any]], names: list[str]
) -> None:
    header, outputs = read_reply(*infer(models["flowers"], flowers_request(outputs=requested)))
    assert [o["name"] for o in header["outputs"]] == names
    assert list(outputs) == names


@pytest.mark.parametrize(
    ("requested", "match"),
    [
        ([{"name": "probabilities"}], "unknown output 'probabilities'.*'predict', 'predict_proba'"),
        ([{"name": "predict"}, {"name": "predict"}], "more than once"),
        ([{"name": "predict", "parameters": {"binary_data": "yes"}}], "true or false"),
        ([{"name": "predict", "parameters": {"classification": 2}}], "classification"),
        ([{"name": "predict", "parameters": {"shared_memory_region": "r"}}], "shared memory"),
    ],
)
def test_bad_outputs_are_refused_before_the_model_runs(
    models: dict[str, LoadedModel], requested: list[dict[str, Any]], match: str
) -> None:
    model = models["flowers"]
    refused(model, flowers_request(outputs=requested), match=match)
    request, _ = parse_request(flowers_request(), None)
    output = run(model, request_rows(model, request, b""))
    with pytest.raises(BadTensor, match=match):
        response_body(model, parse_request(flowers_request(outputs=requested), None)[0], output)


def test_regression_has_no_predict_proba(models: dict[str, LoadedModel]) -> None:
    body = json_body(
        [{"name": "x", "shape": [3, 2], "datatype": "FP64", "data": LINE.tolist()}],
        outputs=[{"name": "predict_proba"}],
    )
    message = refused(models["line"], body, match="unknown output 'predict_proba'")
    assert message.endswith("outputs are 'predict'")


def test_binary_data_per_output(models: dict[str, LoadedModel]) -> None:
    model = models["flowers"]
    json_reply = read_reply(*infer(model, flowers_request()))[1]
    body = flowers_request(
        outputs=[
            {"name": "predict", "parameters": {"binary_data": True}},
            {"name": "predict_proba"},
        ]
    )
    reply, headers = infer(model, body)
    header, outputs = read_reply(reply, headers)
    assert header["outputs"][0]["parameters"]["binary_data_size"] == sum(
        4 + len(label) for label in json_reply["predict"].tolist()
    )
    assert "data" in header["outputs"][1]
    assert (
        int(headers[HEADER_LENGTH])
        == len(reply) - header["outputs"][0]["parameters"]["binary_data_size"]
    )
    for name in ("predict", "predict_proba"):
        np.testing.assert_array_equal(outputs[name], json_reply[name])


def test_binary_data_output_on_the_request(models: dict[str, LoadedModel]) -> None:
    model = models["flowers"]
    json_reply = read_reply(*infer(model, flowers_request()))[1]
    reply, headers = infer(model, flowers_request(parameters={"binary_data_output": True}))
    header, outputs = read_reply(reply, headers)
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]][1] == 4 * 3 * 8
    for name in ("predict", "predict_proba"):
        np.testing.assert_array_equal(outputs[name], json_reply[name])
    # An output's own binary_data: false wins over the request's default.
    body = flowers_request(
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "predict"},
            {"name": "predict_proba", "parameters": {"binary_data": False}},
        ],
    )
    header, outputs = read_reply(*infer(model, body))
    assert "binary_data_size" in header["outputs"][0]["parameters"]
    assert "parameters" not in header["outputs"][1]
    np.testing.assert_array_equal(outputs["predict_proba"], json_reply["predict_proba"])
    refused(model, flowers_request(parameters={"binary_data_output": 1}), match="true or false")


def test_regression_binary_reply_is_little_endian_fp64(
    models: dict[str, LoadedModel], store: Path
) -> None:
    body = json_body(
        [{"name": "x", "shape": [3, 2], "datatype": "FP64", "data": LINE.tolist()}],
        parameters={"binary_data_output": True},
    )
    reply, headers = infer(models["line"], body)
    tail = reply[int(headers[HEADER_LENGTH]) :]
    assert tail == oracle(store, "line").predict(LINE).astype("<f8").tobytes()


# -- malformed requests: always BadTensor, never anything else ------------------------------
def flowers_tensor(**changes: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": "input-0",
        "shape": [1, 4],
        "datatype": "FP64",
        "data": [5.1, 3.5, 1.4, 0.2],
    }
    tensor.update(changes)
    return tensor


MALFORMED_FLOWERS: list[tuple[str, bytes, str | None, str]] = [
    ("not JSON", b'{"inputs": [', None, "not valid JSON"),
    ("empty body", b"", None, "not valid JSON"),
    ("not UTF-8", b'{"id": "\xff\xfe", "inputs": []}', None, "not valid JSON"),
    ("lone surrogate", b'{"id": "\\ud800", "inputs": []}', None, "not valid JSON"),
    ("trailing garbage", json_body([flowers_tensor()]) + b"}", None, "not valid JSON"),
    ("schema: no datatype", b'{"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]}', None, r"inputs\.0\.datatype: Field required"),
    ("schema: unknown datatype", json_body([flowers_tensor(datatype="FP128")]), None, "datatype"),
    ("schema: float shape", json_body([flowers_tensor(shape=[1.0, 4])]), None, "shape"),
    ("schema: unknown key", json_body([flowers_tensor(contents={})]), None, "contents"),
    ("schema: no inputs", b'{"inputs": []}', None, "inputs"),
    ("duplicate top-level key", b'{"inputs": [], "inputs": ' + json.dumps([flowers_tensor()]).encode() + b"}", None, "Duplicate key 'inputs'"),
    ("duplicate key in an input", b'{"inputs": [{"name": "x", "name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}', None, "Duplicate key 'name'"),
    ("header length past the body", json_body([flowers_tensor()]), "9999", "9999"),
    ("negative header length", json_body([flowers_tensor()]), "-5", "non-negative integer"),
    ("header length not a number", json_body([flowers_tensor()]), "abc", "non-negative integer"),
    ("header length a float", json_body([flowers_tensor()]), "12.0", "non-negative integer"),
    ("header length empty", json_body([flowers_tensor()]), "", "non-negative integer"),
    ("header length zero", json_body([flowers_tensor()]), "0", "raw binary"),
    ("header length cuts the JSON", json_body([flowers_tensor()]), "20", "not valid JSON"),
    ("count mismatch", json_body([flowers_tensor(shape=[2, 4])]), None, r"needs 8 elements, but data has 4"),
    ("nested data of the wrong shape", json_body([flowers_tensor(shape=[2, 4], data=[[1, 2, 3], [4, 5, 6, 7, 8]])]), None, "does not match shape"),
    ("nested deeper than the shape", json_body([flowers_tensor(data=[[[1], [2], [3], [4]]])]), None, "element 0: an array .*nested deeper"),
    ("flat data with a nested element", json_body([flowers_tensor(data=[1, 2, [3], 4])]), None, "element 2: an array"),
    ("NaN", b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [NaN, 3.5, 1.4, 0.2]}]}', None, "input 'input-0' row 0, feature 'sepal_length': Input should be a finite number"),
    ("Infinity", b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, Infinity, 1.4, 0.2]}]}', None, "feature 'sepal_width': Input should be a finite number"),
    ("-Infinity", b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, -Infinity, 0.2]}]}', None, "feature 'petal_length'.*finite"),
    ("overflowing number", b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 1e999]}]}', None, "feature 'petal_width'.*finite"),
    ("overflowing FP32", json_body([flowers_tensor(datatype="FP32", data=[1e300, 3.5, 1.4, 0.2])]), None, "feature 'sepal_length'.*finite"),
    ("huge integer", json_body([flowers_tensor(data=[10**400, 3.5, 1.4, 0.2])]), None, "out of range for FP64"),
    ("out of bounds", json_body([flowers_tensor(data=[5.1, 3.5, 1.4, -0.2])]), None, "feature 'petal_width': Input should be greater than or equal to 0"),
    ("BOOL datatype", json_body([flowers_tensor(datatype="BOOL", data=[True, False, True, True])]), None, "BOOL is not accepted"),
    ("strings in FP32", json_body([flowers_tensor(datatype="FP32", data=[5.1, "3.5", 1.4, 0.2])]), None, "element 1: a string in FP32 data"),
    ("bools in FP64", json_body([flowers_tensor(data=[5.1, True, 1.4, 0.2])]), None, "element 1: a boolean"),
    ("bools in INT64", json_body([flowers_tensor(datatype="INT64", data=[5, 3, 1, False])]), None, "element 3: a boolean"),
    ("null in data", json_body([flowers_tensor(data=[5.1, None, 1.4, 0.2])]), None, "element 1: null"),
    ("object in data", json_body([flowers_tensor(data=[5.1, {}, 1.4, 0.2])]), None, "element 1: an object"),
    ("fraction in INT64", json_body([flowers_tensor(datatype="INT64", data=[5, 3, 1.5, 0])]), None, "element 2: the non-integer number 1.5"),
    ("out of range for UINT8", json_body([flowers_tensor(datatype="UINT8", data=[5, 3, 300, 0])]), None, "out of range for UINT8"),
    ("negative UINT32", json_body([flowers_tensor(datatype="UINT32", data=[5, 3, -1, 0])]), None, "out of range for UINT32"),
    ("BYTES for a float feature", json_body([flowers_tensor(datatype="BYTES", data=["5.1", "3.5", "1.4", "0.2"])]), None, "'sepal_length' is a number.*not BYTES"),
    ("no data at all", json_body([flowers_tensor(data=None)]), None, "neither data nor"),
    ("shared memory", json_body([flowers_tensor(data=None, parameters={"shared_memory_region": "r"})]), None, "shared memory"),
    ("N = 0", json_body([flowers_tensor(shape=[0, 4], data=[])]), None, "no rows"),
    ("2-D with a wrong second dim", json_body([flowers_tensor(shape=[1, 3], data=[1, 2, 3])]), None, r"shape \[1, 3\] is not \[N, 4\]"),
    ("3-D", json_body([flowers_tensor(shape=[1, 1, 4])]), None, r"shape \[1, 1, 4\] is not \[N, 4\]"),
    ("one row as 1-D", json_body([flowers_tensor(shape=[4])]), None, r"shape \[4\] is not \[N, 4\]"),
    ("-1 in a request shape", json_body([flowers_tensor(shape=[-1, 4])]), None, "negative dimension"),
    ("duplicate tensor names", json_body([flowers_tensor(), flowers_tensor()]), None, "'input-0' appears more than once"),
    ("missing feature tensor", json_body([{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in FLOWER_FEATURES[:3]]), None, "missing input 'petal_width'"),
    ("unknown extra tensor", json_body([{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in [*FLOWER_FEATURES, "colour"]]), None, "unknown input 'colour'"),
    ("per-feature tensors of different N", json_body([{"name": n, "shape": [1 + (n == "petal_width")], "datatype": "FP64", "data": [1.0] * (1 + (n == "petal_width"))} for n in FLOWER_FEATURES]), None, "'petal_width' has 2 rows"),
    ("per-feature tensor of shape [N, 2]", json_body([{"name": n, "shape": [1, 2 - (n != "sepal_width")], "datatype": "FP64", "data": [1.0] * (2 - (n != "sepal_width"))} for n in FLOWER_FEATURES]), None, r"'sepal_width': shape \[1, 2\] is not \[N\] or \[N, 1\]"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "header_length", "match"),
    [pytest.param(body, length, match, id=name) for name, body, length, match in MALFORMED_FLOWERS],
)
def test_malformed_flowers_requests(
    models: dict[str, LoadedModel], body: bytes, header_length: str | None, match: str
) -> None:
    refused(models["flowers"], body, header_length, match=match)


def binary_flowers(raw: bytes, **parameters: Any) -> tuple[bytes, str]:
    tensor = {
        "name": "input-0",
        "shape": [1, 4],
        "datatype": "FP64",
        "parameters": {"binary_data_size": 32, **parameters},
    }
    head = json_body([tensor])
    return head + raw, str(len(head))


ONE_ROW = np.array([[5.1, 3.5, 1.4, 0.2]])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(binary_flowers(ONE_ROW.tobytes(), binary_data_size=40), "only 32 bytes", id="size too large"),
        pytest.param(binary_flowers(ONE_ROW.tobytes() + b"\0" * 8), "8 bytes of binary data .* belong to no input", id="leftover tail"),
        pytest.param(binary_flowers(ONE_ROW.tobytes()[:24], binary_data_size=24), "needs 4 x 8 bytes", id="size short of the shape"),
        pytest.param(binary_flowers(ONE_ROW.tobytes(), binary_data_size=-32), "non-negative integer", id="negative size"),
        pytest.param(binary_flowers(ONE_ROW.tobytes(), binary_data_size=True), "non-negative integer", id="bool size"),
        pytest.param(binary_flowers(ONE_ROW.tobytes(), binary_data_size="32"), "non-negative integer", id="string size"),
        pytest.param(binary_flowers(np.array([[np.nan, 3.5, 1.4, 0.2]]).tobytes()), "row 0, feature 'sepal_length': Input should be a finite number", id="NaN FP64"),
        pytest.param(binary_flowers(np.array([[5.1, 3.5, np.inf, 0.2]]).tobytes()), "feature 'petal_length': Input should be a finite number", id="inf FP64"),
    ],
)  # fmt: skip
def test_malformed_binary_flowers(
    models: dict[str, LoadedModel], body: tuple[bytes, str], match: str
) -> None:
    refused(models["flowers"], *body, match=match)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_binary_fp32_is_refused(models: dict[str, LoadedModel], value: float) -> None:
    data = np.array([[5.1, 3.5, 1.4, 0.2], [6.0, 3.0, 4.0, value]], dtype=np.float32)
    message = refused(models["flowers"], *binary_body([("input-0", data)]))
    assert (
        message == "input 'input-0' row 1, feature 'petal_width': Input should be a finite number"
    )


@pytest.mark.parametrize(
    ("datatype", "bits"),
    [("FP16", 0x7D00), ("FP32", 0x7FA00000), ("FP64", 0x7FF4000000000000)],
)
@pytest.mark.parametrize("model_name", ["flowers", "pets"])
def test_signalling_nan_in_binary_data_is_refused(
    models: dict[str, LoadedModel], model_name: str, datatype: str, bits: int
) -> None:
    """A signalling NaN (quiet bit clear) raises the FPU's invalid flag when cast: it must be
    refused like any NaN, for float features and for int features fed FP data."""
    width = np.dtype(triton_to_np_dtype(datatype)).itemsize
    snan = np.frombuffer(bits.to_bytes(width, "little"), dtype=triton_to_np_dtype(datatype))
    if model_name == "flowers":
        data = np.concatenate([FLOWERS[0, :3].astype(snan.dtype), snan]).reshape(1, 4)
        tensors = [("input-0", data)]
        expected = "input 'input-0' row 0, feature 'petal_width': "
    else:
        tensors = [
            ("colour", strings(["black"])),
            ("weight", np.array([4.0])),
            ("age", snan.copy()),
        ]
        expected = "input 'age' row 0, feature 'age': "
    message = refused(models[model_name], *binary_body(tensors))
    assert message.startswith(expected)


def test_binary_data_with_json_data_too_is_refused(models: dict[str, LoadedModel]) -> None:
    tensor = flowers_tensor(parameters={"binary_data_size": 32})
    head = json_body([tensor])
    refused(models["flowers"], head + ONE_ROW.tobytes(), str(len(head)), match="both data")


def test_missing_binary_data_size_with_a_tail_is_refused(models: dict[str, LoadedModel]) -> None:
    head = json_body([flowers_tensor(data=None)])
    refused(models["flowers"], head + ONE_ROW.tobytes(), str(len(head)), match="neither data")
    head = json_body([flowers_tensor()])
    refused(models["flowers"], head + ONE_ROW.tobytes(), str(len(head)), match="belong to no input")


def test_binary_parts_follow_input_order(models: dict[str, LoadedModel]) -> None:
    """Two inputs' binary parts swapped in the tail decode as the other feature's values."""
    columns = [FLOWERS[:, j].copy() for j in range(4)]
    body, length = binary_body(list(zip(FLOWER_FEATURES, columns, strict=True)))
    head, tail = body[: int(length)], body[int(length) :]
    swapped = tail[32:64] + tail[:32] + tail[64:]
    rows = decode(models["flowers"], head + swapped, length)
    assert [row[:2] for row in rows] == [(row[1], row[0]) for row in floats(FLOWERS)]


def test_too_many_rows_is_a_bad_tensor(models: dict[str, LoadedModel]) -> None:
    # A request over the row limit is refused like any other (400); 413 is for bytes.
    data = np.tile(FLOWERS, (13, 1))[:51]
    with pytest.raises(BadTensor, match="Too many rows: N is 51, at most 50 per request"):
        decode(models["flowers"], *binary_body([("input-0", data)]))
    tensor = flowers_tensor(shape=[51, 4], data=data.tolist())
    with pytest.raises(BadTensor, match="Too many rows"):
        decode(models["flowers"], json_body([tensor]))
    assert len(decode(models["flowers"], *binary_body([("input-0", data[:50])]))) == 50


def pets_inputs(**overrides: dict[str, Any] | None) -> list[dict[str, Any]]:
    inputs: dict[str, dict[str, Any] | None] = {
        "colour": {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["black", "white"]},
        "weight": {"name": "weight", "shape": [2], "datatype": "FP32", "data": [3.5, 4.0]},
        "age": {"name": "age", "shape": [2], "datatype": "INT64", "data": [1, 2]},
    }
    inputs.update(overrides)
    return [tensor for tensor in inputs.values() if tensor is not None]


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        pytest.param(pets_inputs(colour={"name": "colour", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}), "'colour' is a category and takes BYTES.*not FP32", id="FP32 for a category"),
        pytest.param(pets_inputs(colour={"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["black", 1]}), "element 1: a number in BYTES data", id="number in BYTES"),
        pytest.param(pets_inputs(colour={"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["black", "purple"]}), "input 'colour' row 1, feature 'colour': Input should be 'black', 'ginger' or 'white'", id="unknown category"),
        pytest.param(pets_inputs(age={"name": "age", "shape": [2], "datatype": "INT64", "data": [1, 41]}), "input 'age' row 1, feature 'age': Input should be less than or equal to 40", id="int above maximum"),
        pytest.param(pets_inputs(age={"name": "age", "shape": [2], "datatype": "UINT64", "data": [1, 2**64 - 1]}), "feature 'age'", id="huge UINT64"),
        pytest.param(pets_inputs(age={"name": "age", "shape": [2], "datatype": "BOOL", "data": [True, False]}), "BOOL is not accepted", id="BOOL for an int"),
        pytest.param(pets_inputs(weight={"name": "weight", "shape": [2], "datatype": "FP32", "data": [3.5, "NaN"]}), "element 1: a string", id="string NaN"),
        pytest.param(pets_inputs(age=None), "missing input 'age'", id="missing age"),
        pytest.param([*pets_inputs(), {"name": "name", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}], "unknown input 'name'", id="extra input"),
        pytest.param(pets_inputs(weight={"name": "weight", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}), "has 3 rows, but input 'colour' has 2", id="N mismatch"),
        pytest.param([{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["black", "3.5", "4"]}], "mixes category and numeric", id="2-D for mixed features"),
    ],
)  # fmt: skip
def test_malformed_pets_requests(
    models: dict[str, LoadedModel], inputs: list[dict[str, Any]], match: str
) -> None:
    refused(models["pets"], json_body(inputs), match=match)


def pets_binary_colour(raw: bytes, count: int = 2) -> tuple[bytes, str]:
    inputs = pets_inputs(
        colour={
            "name": "colour",
            "shape": [count],
            "datatype": "BYTES",
            "parameters": {"binary_data_size": len(raw)},
        }
    )
    head = json_body(inputs)
    return head + raw, str(len(head))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        pytest.param(b"\x05\x00\x00\x00black\x02\x00\x00\x00\xff\xfe", "BYTES element 1 is not valid UTF-8", id="invalid UTF-8"),
        pytest.param(b"\x05\x00\x00\x00black\x05\x00", "element 1 has a truncated length", id="truncated length"),
        pytest.param(b"\x05\x00\x00\x00black\x09\x00\x00\x00white", "element 1 runs past its data", id="length past the data"),
        pytest.param(serialize_byte_tensor(strings(["black"])).item(), "needs 2 BYTES elements, but the data holds 1", id="too few elements"),
        pytest.param(serialize_byte_tensor(strings(["black"] * 3)).item(), "more than the 2 BYTES elements", id="too many elements"),
    ],
)  # fmt: skip
def test_malformed_binary_bytes(models: dict[str, LoadedModel], raw: bytes, match: str) -> None:
    refused(models["pets"], *pets_binary_colour(raw), match=match)


def test_valid_binary_bytes_with_empty_and_non_ascii_strings_reach_validation(
    models: dict[str, LoadedModel],
) -> None:
    raw = serialize_byte_tensor(strings(["", "blanc\u00e9"])).item()
    message = refused(models["pets"], *pets_binary_colour(raw))
    assert message.startswith("input 'colour' row 0, feature 'colour'")
    assert "row 1, feature 'colour'" in message


def test_many_validation_errors_are_summarised(models: dict[str, LoadedModel]) -> None:
    data = np.full((20, 4), np.nan)
    message = refused(models["flowers"], *binary_body([("input-0", data)]))
    assert message.count("Input should be a finite number") == 5
    assert message.endswith("(and 75 more)")


def test_no_exception_escapes_for_truncated_bodies(models: dict[str, LoadedModel]) -> None:
    """Every prefix of a valid binary request, with its header length, is a clean refusal."""
    body, length = binary_body(
        [("colour", strings(PETS_COLOUR)), ("weight", np.array(PETS_WEIGHT)), ("age", np.array(PETS_AGE))]
    )  # fmt: skip
    for end in range(len(body)):
        with pytest.raises(BadTensor):
            decode(models["pets"], body[:end], length)
        with pytest.raises(BadTensor):
            decode(models["pets"], body[:end], None)
    assert len(decode(models["pets"], body, length)) == 4


# -- metadata --------------------------------------------------------------------------------
def test_metadata_flowers(models: dict[str, LoadedModel]) -> None:
    metadata = model_metadata(models["flowers"], [1, 2])
    assert metadata.name == "flowers"
    assert metadata.versions == ["1", "2"]
    assert metadata.platform == "scikit-learn"
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [
        (name, "FP64", [-1]) for name in FLOWER_FEATURES
    ]
    assert [(t.name, t.datatype, t.shape) for t in metadata.outputs] == [
        ("predict", "BYTES", [-1]),
        ("predict_proba", "FP64", [-1, 3]),
    ]
    assert metadata.parameters is not None
    assert "[N, 4] FP64" in str(metadata.parameters["content"])


def test_metadata_pets(models: dict[str, LoadedModel]) -> None:
    metadata = model_metadata(models["pets"], [1])
    assert metadata.versions == ["1"]
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [
        ("colour", "BYTES", [-1]),
        ("weight", "FP64", [-1]),
        ("age", "INT64", [-1]),
    ]
    assert [(t.name, t.datatype, t.shape) for t in metadata.outputs] == [
        ("predict", "BYTES", [-1]),
        ("predict_proba", "FP64", [-1, 2]),
    ]
    assert metadata.parameters is not None
    assert "cannot mix" in str(metadata.parameters["content"])


def test_metadata_line(models: dict[str, LoadedModel]) -> None:
    metadata = model_metadata(models["line"], [1])
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [
        ("a", "FP64", [-1]),
        ("b", "FP64", [-1]),
    ]
    assert [(t.name, t.datatype, t.shape) for t in metadata.outputs] == [("predict", "FP64", [-1])]


def test_metadata_describes_what_the_codec_accepts(models: dict[str, LoadedModel]) -> None:
    """A request built from the metadata alone (one tensor per input, its datatype) decodes."""
    for name, model in models.items():
        metadata = model_metadata(model, [1])
        example = model.inputs.example["instances"][0]
        inputs = [
            {
                "name": tensor.name,
                "shape": [1],
                "datatype": tensor.datatype,
                "data": [example[tensor.name]],
            }
            for tensor in metadata.inputs
        ]
        rows = decode(model, json_body(inputs))
        assert rows == [tuple(example[tensor.name] for tensor in metadata.inputs)], name

"""The Open Inference Protocol codec over gRPC (app.codecs.grpc) on real fitted models.

Requests are built as any client builds them: the protocol's messages, raw tensors with numpy's
`tobytes()` and tritonclient's `serialize_byte_tensor`; replies are read back with
`numpy.frombuffer` and `deserialize_bytes_tensor`. Expected answers are REST v2's for the same rows
(app.codecs.v2), and the fitted estimators loaded straight from the store.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from app.codecs.grpc.infer import infer_reply, infer_request
from app.codecs.grpc.metadata import model_metadata_response
from app.codecs.grpc.proto import grpc_predict_v2_pb2 as pb
from app.codecs.v2.header import parse_request
from app.codecs.v2.metadata import model_metadata
from app.codecs.v2.response import response_body
from app.codecs.v2.tensors import request_rows
from app.errors import BadTensor
from app.serving.model import LoadedModel, run
from app.serving.registry import scan_store
from tests.conftest import build_store

FLOWERS = np.array(
    [[5.1, 3.5, 1.4, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0], [6.1, 2.9, 4.7, 1.4]]
)
PETS: dict[str, list[Any]] = {
    "colour": ["ginger", "black", "white"],
    "weight": [3.5, 5.25, 4.0],
    "age": [4, 11, 0],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("grpc") / "models")


@pytest.fixture(scope="module")
def models(store: Path) -> dict[str, LoadedModel]:
    snapshot = scan_store(store, max_rows=50, trusted_types=[])
    assert not snapshot.problems
    return {name: entry.versions[1] for name, entry in snapshot.entries.items()}


def request(model: str, **fields: Any) -> Any:
    return pb.ModelInferRequest(model_name=model, **fields)


def typed_input(message: Any, name: str, datatype: str, shape: list[int], **contents: Any) -> None:
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)


def raw_input(message: Any, name: str, datatype: str, array: np.ndarray[Any, Any]) -> None:
    message.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
    if array.dtype == np.object_:
        message.raw_input_contents.append(serialize_byte_tensor(array).item())
    else:
        message.raw_input_contents.append(array.astype(array.dtype.newbyteorder("<")).tobytes())


def answer(model: LoadedModel, message: Any) -> Any:
    decoded = infer_request(message)(model)
    return infer_reply(model, run(model, decoded.rows), decoded.context)


def refused(model: LoadedModel, message: Any, match: str) -> None:
    with pytest.raises(BadTensor, match=match):
        infer_request(message)(model)


def outputs(response: Any) -> dict[str, np.ndarray[Any, Any]]:
    """Each output as an array, read from raw_output_contents or from its typed field."""
    found: dict[str, np.ndarray[Any, Any]] = {}
    raw = list(response.raw_output_contents)
    for position, tensor in enumerate(response.outputs):
        if raw:
            if tensor.datatype == "BYTES":
                array = np.array([b.decode() for b in deserialize_bytes_tensor(raw[position])])
            else:
                dtype = {"FP64": "<f8", "INT64": "<i8", "BOOL": "|b1"}[tensor.datatype]
                array = np.frombuffer(raw[position], dtype=dtype)
        elif tensor.datatype == "BYTES":
            array = np.array([b.decode() for b in tensor.contents.bytes_contents])
        else:
            field = {"FP64": "fp64_contents", "INT64": "int64_contents"}[tensor.datatype]
            array = np.array(getattr(tensor.contents, field))
        found[tensor.name] = array.reshape(list(tensor.shape))
    return found


def rest_outputs(model: LoadedModel, rows: list[list[float]]) -> dict[str, Any]:
    """REST v2's answer for the same rows (JSON data)."""
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}
            ]
        }
    ).encode()
    parsed, tail = parse_request(body, None)
    reply, _ = response_body(model, parsed, run(model, request_rows(model, parsed, tail)))
    return {output["name"]: output["data"] for output in json.loads(reply)["outputs"]}


# -- requests that decode, answers equal to REST v2's ------------------------------------------
@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_flowers_matrix_answers_as_rest_does(
    models: dict[str, LoadedModel], store: Path, raw: bool
) -> None:
    model = models["flowers"]
    message = request("flowers", id="call-1")
    if raw:
        raw_input(message, "input-0", "FP64", FLOWERS)
    else:
        typed_input(message, "input-0", "FP64", [4, 4], fp64_contents=FLOWERS.ravel().tolist())
    response = answer(model, message)
    assert (response.model_name, response.model_version, response.id) == ("flowers", "1", "call-1")
    assert bool(response.raw_output_contents) is raw
    got = outputs(response)
    rest = rest_outputs(model, FLOWERS.tolist())
    assert got["predict"].tolist() == rest["predict"]
    assert got["predict_proba"].ravel().tolist() == rest["predict_proba"]
    estimator = joblib.load(store / "flowers" / "1" / "model.joblib")
    np.testing.assert_array_equal(got["predict_proba"], estimator.predict_proba(FLOWERS))
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("predict", "BYTES", [4]),
        ("predict_proba", "FP64", [4, 3]),
    ]


def test_fp32_and_int_datatypes_decode_to_the_same_rows(models: dict[str, LoadedModel]) -> None:
    model = models["flowers"]
    as_fp32 = request("flowers")
    typed_input(as_fp32, "x", "FP32", [1, 4], fp32_contents=[5.0, 3.5, 1.5, 0.25])
    as_int = request("flowers")
    typed_input(as_int, "x", "INT32", [1, 4], int_contents=[5, 3, 1, 0])
    assert infer_request(as_fp32)(model).rows == [(5.0, 3.5, 1.5, 0.25)]
    assert infer_request(as_int)(model).rows == [(5.0, 3.0, 1.0, 0.0)]


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_pets_per_feature_tensors_with_bytes_and_int64(
    models: dict[str, LoadedModel], store: Path, raw: bool
) -> None:
    model = models["pets"]
    message = request("pets")
    colour = np.array([c.encode() for c in PETS["colour"]], dtype=np.object_)
    if raw:
        raw_input(message, "age", "INT64", np.array(PETS["age"], dtype=np.int64))
        raw_input(message, "colour", "BYTES", colour)
        raw_input(message, "weight", "FP64", np.array(PETS["weight"]))
    else:
        typed_input(message, "age", "INT64", [3], int64_contents=PETS["age"])
        typed_input(message, "colour", "BYTES", [3], bytes_contents=list(colour))
        typed_input(message, "weight", "FP64", [3, 1], fp64_contents=PETS["weight"])
    decoded = infer_request(message)(model)
    assert decoded.rows == list(zip(PETS["colour"], PETS["weight"], PETS["age"], strict=True))
    got = outputs(infer_reply(model, run(model, decoded.rows), decoded.context))
    estimator = joblib.load(store / "pets" / "1" / "model.joblib")
    assert got["predict"].tolist() == estimator.predict(pd.DataFrame(PETS)).tolist()


def test_regressor_answers_fp64_and_only_the_outputs_asked(models: dict[str, LoadedModel]) -> None:
    model = models["line"]
    message = request("line")
    typed_input(message, "x", "FP64", [2, 2], fp64_contents=[1.0, 2.0, -3.5, 0.25])
    message.outputs.add(name="predict")
    response = answer(model, message)
    assert [(t.name, t.datatype) for t in response.outputs] == [("predict", "FP64")]
    assert outputs(response)["predict"].tolist() == pytest.approx([3.0, -4.25], abs=1e-9)
    with_proba = request("line")
    typed_input(with_proba, "x", "FP64", [1, 2], fp64_contents=[1.0, 2.0])
    with_proba.outputs.add(name="predict_proba")
    refused(model, with_proba, "unknown output 'predict_proba'")


def test_parameters_become_plain_values(models: dict[str, LoadedModel]) -> None:
    message = request("line", id="p")
    message.parameters["flag"].bool_param = True
    message.parameters["count"].int64_param = 3
    message.parameters["ratio"].double_param = 0.5
    message.parameters["note"].string_param = "hi"
    message.parameters["big"].uint64_param = 2**63
    message.parameters["unset"].SetInParent()
    typed_input(message, "x", "FP64", [1, 2], fp64_contents=[1.0, 2.0])
    head = infer_request(message)(models["line"]).context.request
    assert head.parameters == {"flag": True, "count": 3, "ratio": 0.5, "note": "hi", "big": 2**63}


def test_model_metadata_equals_rest(models: dict[str, LoadedModel]) -> None:
    model = models["pets"]
    grpc_meta = model_metadata_response(model, [1])
    rest = model_metadata(model, [1])
    assert (grpc_meta.name, list(grpc_meta.versions), grpc_meta.platform) == (
        rest.name,
        rest.versions,
        rest.platform,
    )
    for ours, theirs in ((grpc_meta.inputs, rest.inputs), (grpc_meta.outputs, rest.outputs)):
        assert [(t.name, t.datatype, list(t.shape)) for t in ours] == [
            (t.name, t.datatype, t.shape) for t in theirs
        ]


# -- requests refused, each with its reason -----------------------------------------------------
def _flowers(datatype: str = "FP64", shape: list[int] | None = None, **contents: Any) -> Any:
    message = request("flowers")
    typed_input(message, "input-0", datatype, shape or [1, 4], **contents)
    return message


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (request("flowers"), "inputs: List should have at least 1 item"),
        (
            _flowers(fp64_contents=[1.0, 2.0, 3.0]),
            "needs 4 elements, but contents.fp64_contents has 3",
        ),
        (
            _flowers(int64_contents=[1, 2, 3, 4]),
            "FP64 elements go in contents.fp64_contents, not contents.int64_contents",
        ),
        (_flowers("FP16", fp32_contents=[1.0] * 4), "FP16 has no typed contents field"),
        (_flowers("INT8", int_contents=[1, 2, 300, 4]), "out of range for INT8"),
        (_flowers("FOO", fp64_contents=[1.0] * 4), "datatype: Input should be"),
        (_flowers("BOOL", bool_contents=[True] * 4), "BOOL is not accepted"),
        (_flowers("BYTES", bytes_contents=[b"1"] * 4), "is a number and takes FP64"),
        (_flowers(shape=[1, 3], fp64_contents=[1.0] * 3), r"shape \[1, 3\] is not \[N, 4\]"),
        (_flowers(shape=[51, 4], fp64_contents=[1.0] * 204), "Too many rows: N is 51, at most 50"),
        (_flowers(shape=[-1, 4], fp64_contents=[1.0] * 4), "negative dimension"),
        (_flowers(fp64_contents=[float("nan"), 1.0, 1.0, 1.0]), "finite"),
    ],  # fmt: skip
    ids=[
        "no-inputs",
        "element-count",
        "wrong-field",
        "fp16-typed",
        "int8-range",
        "datatype",
        "bool",
        "bytes-for-number",
        "shape",
        "too-many-rows",
        "negative-dim",
        "nan",
    ],  # fmt: skip
)
def test_bad_tensors_are_refused(models: dict[str, LoadedModel], message: Any, match: str) -> None:
    refused(models["flowers"], message, match)


def test_bad_raw_inputs_are_refused(models: dict[str, LoadedModel]) -> None:
    model = models["flowers"]
    short = request("flowers")
    short.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    short.raw_input_contents.append(np.zeros(3).tobytes())
    refused(
        model, short, r"raw_input_contents\[0\] is 24 bytes, but shape \[1, 4\] of FP64 needs 4 x 8"
    )
    missing = request("pets")
    raw_input(missing, "colour", "BYTES", np.array([b"black"], dtype=np.object_))
    missing.inputs.add(name="weight", datatype="FP64", shape=[1])
    refused(models["pets"], missing, "raw_input_contents has 1 entries, but the request has 2")
    both = _flowers(fp64_contents=[1.0] * 4)
    both.raw_input_contents.append(np.zeros(4).tobytes())
    refused(model, both, "contents.fp64_contents as well as raw_input_contents")
    not_utf8 = request("pets")
    typed_input(not_utf8, "colour", "BYTES", [1], bytes_contents=[b"\xff"])
    typed_input(not_utf8, "weight", "FP64", [1], fp64_contents=[3.0])
    typed_input(not_utf8, "age", "INT64", [1], int64_contents=[3])
    refused(models["pets"], not_utf8, "not valid UTF-8")


def test_outputs_are_checked_before_decoding(models: dict[str, LoadedModel]) -> None:
    message = _flowers(fp64_contents=[1.0] * 3)  # also a wrong count: the output is named first
    message.outputs.add(name="predict").parameters["classification"].int64_param = 2
    refused(models["flowers"], message, "the classification extension is not supported")


def test_the_committed_generated_code_is_what_make_proto_writes(tmp_path: Path) -> None:
    """app/codecs/grpc/proto's *_pb2*.py are regenerated from the .proto by `make proto` and
    committed: they must be exactly what grpcio-tools writes for the .proto as it is."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # no types shipped

    repo = Path(__file__).resolve().parents[3]
    proto = "app/codecs/grpc/proto/grpc_predict_v2.proto"
    shutil.copytree(repo / "app" / "codecs" / "grpc" / "proto", tmp_path / Path(proto).parent)
    for generated in (tmp_path / Path(proto).parent).glob("*_pb2*.py"):
        generated.unlink()
    argv = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}"]
    assert protoc.main([*argv, str(tmp_path / proto)]) == 0
    for name in ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2_grpc.py"):
        committed = (repo / Path(proto).parent / name).read_text()
        assert (tmp_path / Path(proto).parent / name).read_text() == committed, name

"""The Open Inference Protocol's `ModelInfer` over gRPC, as the data plane sees it: a decoder (the
request's tensors, in typed contents or raw bytes, to validated rows by the rules every surface
shares, app.codecs.v2.rows) and an encoder (the outputs REST v2 answers, `predict` and
`predict_proba`, in typed contents, or in `raw_output_contents` when the request sent raw bytes:
Triton's clients send raw inputs and read only raw outputs).

The protobuf messages are untyped (generated, built at import): every field read here becomes a
typed value, so nothing above this module handles them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.codecs.grpc.proto import grpc_predict_v2_pb2 as pb
from app.codecs.v2.header import schema_message
from app.codecs.v2.protocol import (
    NUMERIC_DTYPES,
    PREDICT,
    available_outputs,
    label_datatype,
    selected_outputs,
)
from app.codecs.v2.response import encode_binary, predict_values
from app.codecs.v2.rows import (
    Elements,
    binary_elements,
    check_request,
    tensor_rows,
    timeout_of,
)
from app.errors import BadTensor
from app.serving.dataplane import Decoded
from app.serving.model import LoadedModel, ModelOutput
from schemas.v2 import InferenceRequest, Parameters, RequestInput

# Where each datatype's elements go in `InferTensorContents` (FP16 and BF16 have no field: they
# travel only as raw bytes).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True)
class InferCall:
    """What the encoder needs of the request: its head (id, outputs asked for) and whether it
    sent raw bytes (then the reply does too)."""

    request: InferenceRequest
    raw: bool


def infer_request(message: Any) -> Callable[[LoadedModel], Decoded[InferCall]]:
    """The decoder of one `ModelInferRequest`."""

    def decode(model: LoadedModel) -> Decoded[InferCall]:
        head = request_head(message)
        check_request(model, head)
        inputs = head.inputs
        raw = list(message.raw_input_contents)
        if raw:
            _check_raw(message, len(inputs), len(raw))

        def elements(position: int) -> Elements:
            if raw:
                where = f"raw_input_contents[{position}]"
                return binary_elements(inputs[position], raw[position], where)
            return typed_elements(inputs[position], message.inputs[position].contents)

        rows = tensor_rows(model, inputs, elements)
        return Decoded(rows, InferCall(head, bool(raw)), timeout_of(head))

    return decode


def request_head(message: Any) -> InferenceRequest:
    """The request without its elements, validated by the same schema (and limits) as a REST v2
    request: names, shapes, datatypes, parameters, outputs."""
    head = {
        "id": message.id or None,
        "parameters": parameters(message.parameters),
        "inputs": [
            {
                "name": tensor.name,
                "shape": list(tensor.shape),
                "datatype": tensor.datatype,
                "parameters": parameters(tensor.parameters),
            }
            for tensor in message.inputs
        ],
        "outputs": [
            {"name": output.name, "parameters": parameters(output.parameters)}
            for output in message.outputs
        ]
        or None,
    }
    try:
        return InferenceRequest.model_validate(head, strict=True)
    except ValidationError as exc:
        raise BadTensor(schema_message(exc)) from exc


def parameters(entries: Any) -> Parameters | None:
    """A map of `InferParameter`s as plain values (None when empty); unset values are left out."""
    found: Parameters = {}
    for key, value in entries.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            found[str(key)] = getattr(value, which)
    return found or None


def _check_raw(message: Any, inputs: int, parts: int) -> None:
    if parts != inputs:
        raise BadTensor(
            f"raw_input_contents has {parts} entries, but the request has {inputs} inputs: "
            "send one entry per input, in the order of the inputs"
        )
    for tensor in message.inputs:
        filled = [field.name for field, _ in tensor.contents.ListFields()]
        if filled:
            raise BadTensor(
                f"input {tensor.name!r} has contents.{filled[0]} as well as raw_input_contents: "
                "send every input one way"
            )


def typed_elements(tensor: RequestInput, contents: Any) -> Elements:
    """An input's elements from the typed field of its datatype, checked against its shape."""
    name, datatype = tensor.name, tensor.datatype
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadTensor(
            f"input {name!r}: {datatype} has no typed contents field: send it in raw_input_contents"
        )
    stray = [found.name for found, _ in contents.ListFields() if found.name != field]
    if stray:
        raise BadTensor(
            f"input {name!r}: {datatype} elements go in contents.{field}, not contents.{stray[0]}"
        )
    values = list(getattr(contents, field))
    count = math.prod(tensor.shape)
    if len(values) != count:
        raise BadTensor(
            f"input {name!r}: shape {tensor.shape} needs {count} elements, but "
            f"contents.{field} has {len(values)}"
        )
    if datatype == "BYTES":
        try:
            return [value.decode("utf-8") for value in values]
        except UnicodeDecodeError as exc:
            raise BadTensor(f"input {name!r}: a BYTES element is not valid UTF-8") from exc
    try:
        return np.array(values, dtype=NUMERIC_DTYPES[datatype])
    except OverflowError as exc:  # e.g. 300 in int_contents for an INT8 input
        raise BadTensor(f"input {name!r}: a value is out of range for {datatype}") from exc


def infer_reply(model: LoadedModel, output: ModelOutput, call: InferCall) -> Any:
    """The `ModelInferResponse`: the outputs asked for (all by default), named and typed as REST
    v2 names and types them."""
    selected = selected_outputs(
        call.request, available_outputs(model.card, output.probabilities is not None)
    )
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=str(model.version), id=call.request.id or ""
    )
    rows = len(output)
    for name, _ in selected:
        values: Any
        if name == PREDICT:
            datatype = label_datatype(model.card)
            values, shape = predict_values(datatype, output.predictions), [rows]
        else:
            assert output.probabilities is not None
            datatype = "FP64"
            values = np.ascontiguousarray(output.probabilities, dtype="<f8")
            shape = [rows, int(values.shape[1])]
        tensor = response.outputs.add(name=name, datatype=datatype, shape=shape)
        if call.raw:
            response.raw_output_contents.append(encode_binary(values))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(label.encode("utf-8") for label in values)
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values.ravel().tolist())
    return response

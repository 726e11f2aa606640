"""Open Inference Protocol request tensors over REST: each input's elements from its JSON `data`
or from its slice of the binary tensor extension's tail, then rows by the shared rules of
app.codecs.v2.rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from app.codecs.v2.protocol import NUMERIC_DTYPES
from app.codecs.v2.rows import Elements, binary_elements, check_request, tensor_rows
from app.errors import BadTensor
from app.serving.model import LoadedModel
from app.serving.schema import Row
from schemas.v2 import InferenceRequest, RequestInput


def request_rows(model: LoadedModel, request: InferenceRequest, tail: bytes) -> list[Row]:
    """Decode the input tensors into validated rows, in the card's feature order."""
    check_request(model, request)
    inputs = request.inputs
    binary = _binary_parts(inputs, tail)
    return tensor_rows(model, inputs, lambda position: _decode(inputs[position], binary[position]))


def _binary_parts(inputs: list[RequestInput], tail: bytes) -> list[bytes | None]:
    """Each input's slice of the binary tail (None for JSON data), in input order; the tail
    must be consumed exactly."""
    parts: list[bytes | None] = []
    offset = 0
    for tensor in inputs:
        parameters = tensor.parameters or {}
        if "shared_memory_region" in parameters:
            raise BadTensor(f"input {tensor.name!r}: shared memory is not supported")
        size = parameters.get("binary_data_size")
        if size is None:
            if tensor.data is None:
                raise BadTensor(
                    f"input {tensor.name!r} has neither data nor parameters.binary_data_size"
                )
            parts.append(None)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadTensor(
                f"input {tensor.name!r}: parameters.binary_data_size must be a non-negative integer"
            )
        if tensor.data is not None:
            raise BadTensor(f"input {tensor.name!r} has both data and binary_data_size")
        left = len(tail) - offset
        if size > left:
            raise BadTensor(
                f"input {tensor.name!r}: binary_data_size is {size}, but only {left} bytes "
                "of binary data are left in the body"
            )
        parts.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise BadTensor(
            f"{len(tail) - offset} bytes of binary data in the body belong to no input "
            "(the inputs' binary_data_size add up to less)"
        )
    return parts


def _decode(tensor: RequestInput, binary: bytes | None) -> Elements:
    """The tensor's elements, flat and row-major: an array in the declared datatype, or the
    strings of a BYTES tensor; the element count must match the shape."""
    if binary is not None:
        return binary_elements(tensor, binary, "binary_data_size")
    name, datatype = tensor.name, tensor.datatype
    assert tensor.data is not None
    leaves = _flatten(tensor.data, tensor.shape, name)
    kinds = set(map(type, leaves))
    if datatype == "BYTES":
        if not kinds <= {str}:
            raise _wrong_element(tensor, leaves, {str}, "strings")
        return leaves
    integral = not datatype.startswith("FP")
    allowed: set[type] = {int} if integral else {int, float}
    if not kinds <= allowed:
        raise _wrong_element(tensor, leaves, allowed, "integers" if integral else "numbers")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # FP overflow gives inf, refused later
            return np.array(leaves, dtype=NUMERIC_DTYPES[datatype])
    except OverflowError as exc:
        raise BadTensor(f"input {name!r}: a value is out of range for {datatype}") from exc


def _flatten(data: list[Any], shape: list[int], name: str) -> list[Any]:
    """JSON data, flat or nested to exactly the shape, as a flat row-major list."""
    count = math.prod(shape)
    if data and type(data[0]) is list:
        level: list[Any] = [data]
        for dim in shape:
            flat: list[Any] = []
            for item in level:
                if type(item) is not list or len(item) != dim:
                    raise BadTensor(f"input {name!r}: the nested data does not match shape {shape}")
                flat.extend(item)
            level = flat
        return level  # a list still left here is an element of the wrong kind: caught later
    if len(data) != count:
        raise BadTensor(
            f"input {name!r}: shape {shape} needs {count} elements, but data has {len(data)}"
        )
    return data


def _wrong_element(
    tensor: RequestInput, leaves: list[Any], allowed: set[type], expected: str
) -> BadTensor:
    index, value = next((i, v) for i, v in enumerate(leaves) if type(v) not in allowed)
    return BadTensor(
        f"input {tensor.name!r} element {index}: {_json_kind(value)} in {tensor.datatype} data, "
        f"which takes {expected}"
    )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array (the data is nested deeper than its shape)"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, float):
        return f"the non-integer number {value!r}"
    return "a number"

"""Open Inference Protocol input tensors to rows in the card's feature order, whatever carried
the elements: REST's JSON `data` or binary tail (app.codecs.v2.tensors), gRPC's typed contents or
raw bytes (app.codecs.grpc).

Accepted inputs, for a model whose card lists n features:
- one 2-D tensor of shape [N, n] (any name), columns in feature order; one datatype for all;
- or one [N] (or [N, 1]) tensor per feature, named exactly as the feature, in any order.
Numeric features take FP16/FP32/FP64 and (U)INT8..64; category features take BYTES; BOOL is
refused everywhere (booleans are not numbers here). The rows are then validated by the model's
own `InputSchema`, so the rules are those of every other surface. Binary data is little-endian
and row-major.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.codecs.v2.protocol import (
    FEATURE_DATATYPE,
    MAX_MESSAGES,
    NUMERIC_DTYPES,
    available_outputs,
    has_proba,
    quoted,
    selected_outputs,
)
from app.errors import BadTensor, InvalidInput
from app.serving.model import LoadedModel
from app.serving.schema import Row
from schemas.cards import FeatureSpec
from schemas.v2 import InferenceRequest, RequestInput

# One input's elements, flat and row-major: an array in its datatype, or a BYTES tensor's strings.
Elements = np.ndarray[Any, Any] | list[str]


@dataclass(frozen=True)
class _Source:
    """One feature's values: which input carries them, and which column of it (2-D input)."""

    tensor: RequestInput
    column: int | None


def check_request(model: LoadedModel, request: InferenceRequest) -> None:
    """Refuse a bad outputs list or a repeated input name before anything is decoded (and
    before the model runs)."""
    selected_outputs(request, available_outputs(model.card, has_proba(model)))
    _refuse_duplicate_names(request.inputs)


def tensor_rows(
    model: LoadedModel, inputs: list[RequestInput], elements: Callable[[int], Elements]
) -> list[Row]:
    """Validated rows, in the card's feature order. `inputs` are the tensors' heads (name,
    shape, datatype); `elements(position)` decodes the input at that position, and is called
    only once every shape and datatype is known to fit the model."""
    for tensor in inputs:
        if any(dim < 0 for dim in tensor.shape):
            raise BadTensor(
                f"input {tensor.name!r}: shape {tensor.shape} has a negative dimension; a "
                "request's shapes are concrete (-1 only appears in metadata)"
            )
    features = model.card.features
    sources, count = _layout(model, inputs)
    if count < 1:
        raise BadTensor("The request has no rows: N must be at least 1")
    if count > model.inputs.max_rows:
        raise BadTensor(f"Too many rows: N is {count}, at most {model.inputs.max_rows} per request")

    decoded = {tensor.name: elements(position) for position, tensor in enumerate(inputs)}
    columns = [
        _column(feature, source, decoded[source.tensor.name], count)
        for feature, source in zip(features, sources, strict=True)
    ]
    rows = list(zip(*columns, strict=True))
    try:
        return model.inputs.validate_rows(rows, loc=())
    except InvalidInput as exc:
        raise BadTensor(_validation_message(exc, features, sources)) from exc


def binary_elements(tensor: RequestInput, data: bytes, what: str) -> Elements:
    """Raw elements (little-endian numbers; BYTES elements each a 4-byte little-endian length
    then UTF-8), checked against the shape. `what` names where the bytes came from."""
    count = math.prod(tensor.shape)
    name, datatype = tensor.name, tensor.datatype
    if datatype == "BYTES":
        return _split_bytes(data, count, name)
    dtype = np.dtype(NUMERIC_DTYPES[datatype])
    if len(data) != count * dtype.itemsize:
        raise BadTensor(
            f"input {name!r}: {what} is {len(data)} bytes, but shape "
            f"{tensor.shape} of {datatype} needs {count} x {dtype.itemsize} bytes"
        )
    return np.frombuffer(data, dtype=dtype)


def _refuse_duplicate_names(inputs: list[RequestInput]) -> None:
    seen: set[str] = set()
    for tensor in inputs:
        if tensor.name in seen:
            raise BadTensor(f"input {tensor.name!r} appears more than once")
        seen.add(tensor.name)


def _layout(model: LoadedModel, inputs: list[RequestInput]) -> tuple[list[_Source], int]:
    """Where each feature's values come from, and N, checked against shapes and datatypes."""
    features = model.card.features
    names = [feature.name for feature in features]
    width = len(features)
    single = inputs[0] if len(inputs) == 1 else None
    if single is not None and (
        single.name not in names or (single.shape[1:] == [width] and width > 1)
    ):
        return _matrix_layout(single, features), single.shape[0]
    unknown = [tensor.name for tensor in inputs if tensor.name not in names]
    if unknown:
        raise BadTensor(
            f"unknown input {unknown[0]!r}: this model takes one tensor per feature, named "
            f"{quoted(names)}{_matrix_hint(features)}"
        )
    by_name = {tensor.name: tensor for tensor in inputs}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise BadTensor(
            f"missing input{'s' if len(missing) > 1 else ''} {quoted(missing)}: this model takes one tensor per feature, "
            f"named {quoted(names)}{_matrix_hint(features)}"
        )
    count: int | None = None
    first = ""
    for feature in features:
        tensor = by_name[feature.name]
        if len(tensor.shape) > 2 or tensor.shape[1:] not in ([], [1]):
            raise BadTensor(
                f"input {tensor.name!r}: shape {tensor.shape} is not [N] or [N, 1] (one value "
                "per row for this feature)"
            )
        if count is None:
            count, first = tensor.shape[0], tensor.name
        elif tensor.shape[0] != count:
            raise BadTensor(
                f"input {tensor.name!r} has {tensor.shape[0]} rows, but input {first!r} has "
                f"{count}: every feature's tensor needs the same N"
            )
        _check_datatype(tensor, feature)
    assert count is not None
    return [_Source(tensor=by_name[name], column=None) for name in names], count


def _matrix_layout(tensor: RequestInput, features: list[FeatureSpec]) -> list[_Source]:
    width = len(features)
    shape_ok = (len(tensor.shape) == 2 and tensor.shape[1] == width) or (
        width == 1 and len(tensor.shape) == 1
    )
    if not shape_ok:
        raise BadTensor(
            f"input {tensor.name!r}: shape {tensor.shape} is not [N, {width}]; a single input "
            f"is a 2-D tensor with one column per feature ({quoted(_names(features))}), or "
            "send one [N] tensor per feature, named as the feature"
        )
    kinds = {feature.dtype == "category" for feature in features}
    if len(kinds) > 1:
        raise BadTensor(
            f"input {tensor.name!r}: this model mixes category and numeric features, which one "
            f"2-D tensor cannot carry: send one [N] tensor per feature, named "
            f"{quoted(_names(features))}"
        )
    for feature in features:
        _check_datatype(tensor, feature)
    return [_Source(tensor=tensor, column=index) for index in range(width)]


def _check_datatype(tensor: RequestInput, feature: FeatureSpec) -> None:
    datatype = tensor.datatype
    if feature.dtype == "category":
        if datatype != "BYTES":
            raise BadTensor(
                f"input {tensor.name!r}: feature {feature.name!r} is a category and takes "
                f"BYTES (strings), not {datatype}"
            )
        return
    if datatype == "BOOL":
        raise BadTensor(
            f"input {tensor.name!r}: BOOL is not accepted (booleans are not numbers here); "
            f"feature {feature.name!r} takes {FEATURE_DATATYPE[feature.dtype]} or another "
            "FP/INT datatype"
        )
    if datatype not in NUMERIC_DTYPES:
        raise BadTensor(
            f"input {tensor.name!r}: feature {feature.name!r} is a number and takes "
            f"{FEATURE_DATATYPE[feature.dtype]} or another FP/INT datatype, not {datatype}"
        )


def _split_bytes(binary: bytes, count: int, name: str) -> list[str]:
    """Binary BYTES: each element a 4-byte little-endian length, then that many UTF-8 bytes."""
    items: list[str] = []
    offset, size = 0, len(binary)
    while offset < size:
        if len(items) == count:
            raise BadTensor(f"input {name!r}: more than the {count} BYTES elements of its shape")
        if offset + 4 > size:
            raise BadTensor(f"input {name!r}: BYTES element {len(items)} has a truncated length")
        (length,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + length > size:
            raise BadTensor(f"input {name!r}: BYTES element {len(items)} runs past its data")
        try:
            items.append(binary[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadTensor(
                f"input {name!r}: BYTES element {len(items)} is not valid UTF-8"
            ) from exc
        offset += length
    if len(items) != count:
        raise BadTensor(
            f"input {name!r}: shape needs {count} BYTES elements, but the data holds {len(items)}"
        )
    return items


def _column(
    feature: FeatureSpec, source: _Source, values: np.ndarray[Any, Any] | list[str], count: int
) -> list[Any]:
    """One feature's Python values: float for float features, int for int features (from any
    integral number; a fractional one stays float for validation to refuse), str for
    categories."""
    if isinstance(values, list):  # BYTES, already checked to be a category feature
        return values if source.column is None else values[source.column :: _width(source)]
    array = values if source.column is None else values.reshape(count, -1)[:, source.column]
    if array.dtype.kind in "iu" and feature.dtype == "int":
        ints: list[Any] = array.tolist()  # exact Python ints, whatever their size
        return ints
    # Binary FP data may hold signalling NaNs, whose cast raises the "invalid" flag: they stay
    # NaN, which validation refuses like any other non-finite value.
    with np.errstate(invalid="ignore", over="ignore"):
        numbers = np.asarray(array, dtype=np.float64)
        if feature.dtype == "float":
            floats: list[Any] = numbers.tolist()
            return floats
        integral = (
            np.isfinite(numbers) & (np.floor(numbers) == numbers) & (np.abs(numbers) < 2.0**63)
        )
    if integral.all():
        whole: list[Any] = numbers.astype(np.int64).tolist()
        return whole
    return [int(v) if v.is_integer() else v for v in numbers.tolist()]


def _width(source: _Source) -> int:
    return source.tensor.shape[1] if len(source.tensor.shape) == 2 else 1


def _validation_message(
    exc: InvalidInput, features: list[FeatureSpec], sources: list[_Source]
) -> str:
    issues = exc.detail if isinstance(exc.detail, list) else []
    parts: list[str] = []
    for issue in issues[:MAX_MESSAGES]:
        loc = list(issue.get("loc", []))
        msg = str(issue.get("msg", ""))
        # Row errors are located at [row index, "row", feature position].
        if len(loc) == 3 and isinstance(loc[0], int) and isinstance(loc[2], int):
            row, position = loc[0], loc[2]
            if 0 <= position < len(features):
                tensor = sources[position].tensor.name
                feature = features[position].name
                parts.append(f"input {tensor!r} row {row}, feature {feature!r}: {msg}")
                continue
        parts.append(f"{'.'.join(str(part) for part in loc) or 'inputs'}: {msg}")
    if not parts:
        return f"The inputs failed validation: {exc}"
    more = f" (and {len(issues) - MAX_MESSAGES} more)" if len(issues) > MAX_MESSAGES else ""
    return "; ".join(parts) + more


def _names(features: list[FeatureSpec]) -> list[str]:
    return [feature.name for feature in features]


def _matrix_hint(features: list[FeatureSpec]) -> str:
    kinds = {feature.dtype == "category" for feature in features}
    if len(kinds) > 1 or len(features) == 1:
        return ""
    return f", or one 2-D [N, {len(features)}] tensor with the features as columns, in that order"


def timeout_of(request: InferenceRequest) -> float | None:
    """The request's `timeout` parameter in seconds (REST and gRPC alike), as Triton reads it (its schedule-policy
    extension): a whole number of microseconds, 0 (or absent) for none. It tightens the
    request's deadline, never extends it."""
    value = (request.parameters or {}).get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadTensor(
            f"parameters.timeout must be a whole number of microseconds (0 for none), not {value!r}"[
                :200
            ]
        )
    return value / 1e6 if value else None

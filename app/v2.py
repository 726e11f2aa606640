"""The Open Inference Protocol (KServe V2 / Triton) tensor codec, free of FastAPI.

A request body is a JSON header, optionally followed by the binary tensor extension's raw bytes
(`Inference-Header-Content-Length` says where the JSON ends). Its input tensors are decoded
into rows in the card's feature order and validated by the model's own `InputSchema`, so the
rules are those of every other surface; every malformed tensor is a `BadTensor` (400). Replies
are JSON or JSON + binary, as the request asks. Binary data is little-endian and row-major.

Accepted inputs, for a model whose card lists n features:
- one 2-D tensor of shape [N, n] (any name), columns in feature order; one datatype for all;
- or one [N] (or [N, 1]) tensor per feature, named exactly as the feature, in any order.
Numeric features take FP16/FP32/FP64 and (U)INT8..64; category features take BYTES; BOOL is
refused everywhere (booleans are not numbers here).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import orjson
from pydantic import ValidationError

from app.errors import BadTensor, InvalidInput
from app.inference import LoadedModel, ModelOutput, Row
from schemas.cards import FeatureSpec, ModelCard
from schemas.v2 import Datatype, InferenceRequest, ModelMetadata, RequestInput, TensorMetadata

HEADER_LENGTH = "Inference-Header-Content-Length"

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

_NUMERIC_DTYPES: dict[str, str] = {
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_FEATURE_DATATYPE: dict[str, Datatype] = {"float": "FP64", "int": "INT64", "category": "BYTES"}
_MAX_MESSAGES = 5  # validation problems named in one error message
# Header lengths beyond 10**18 bytes are nonsense, not numbers to parse.
HEADER_LENGTH_DIGITS = "[0-9]{1,18}"
# An array holding only numbers: emptied in the header's skeleton for the duplicate-key check.
_NUMERIC_ARRAY = re.compile(rb"\[[-+0-9.eE,\s]*\]")


# -- request header --------------------------------------------------------------------------
def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """Split a body into its JSON header (validated as `InferenceRequest`) and the binary tail.

    Without `header_length` the whole body is JSON and the tail is empty; with it, the first N
    bytes are JSON and the rest is binary tensor data. Anything malformed is a `BadTensor`.
    """
    if header_length is None:
        head, tail = body, b""
    else:
        text = header_length.strip()
        if not re.fullmatch(HEADER_LENGTH_DIGITS, text):
            raise BadTensor(
                f"{HEADER_LENGTH} must be a non-negative integer, got {header_length[:40]!r}"
            )
        length = int(text)
        if length > len(body):
            raise BadTensor(f"{HEADER_LENGTH} is {length}, but the body has only {len(body)} bytes")
        if length == 0:
            raise BadTensor(
                f"{HEADER_LENGTH} 0 (a raw binary request without a JSON header) is not "
                "supported: send a JSON header describing the inputs"
            )
        head, tail = body[:length], body[length:]
    try:
        # Strict: 1.0 is not a shape dimension, 5 is not an id; data elements are checked later.
        request = InferenceRequest.model_validate_json(head, strict=True)
    except ValidationError as exc:
        raise BadTensor(_schema_message(exc)) from exc
    _refuse_duplicate_keys(head)
    return request, tail


def _schema_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    invalid = [
        error["msg"].removeprefix("Invalid JSON: ")
        for error in errors
        if error["type"] == "json_invalid"
    ]
    if invalid:
        return f"The request header is not valid JSON: {'; '.join(invalid)}"[:1000]
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or 'request'}: {error['msg']}"
        for error in errors[:_MAX_MESSAGES]
    ]
    more = f" (and {len(errors) - _MAX_MESSAGES} more)" if len(errors) > _MAX_MESSAGES else ""
    return f"Invalid inference request: {'; '.join(parts)}{more}"[:1000]


class _Duplicate(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _Duplicate(next(name for name in names if names.count(name) > 1))
    return {}  # only the keys matter here


def _refuse_duplicate_keys(head: bytes) -> None:
    """Refuse an object with a repeated key (I-JSON, RFC 7493), as the JSON surface does: the
    parser keeps the last one silently. Called on a header that parsed. A first pass reads only
    its skeleton (numeric arrays emptied: they hold no keys), which is cheap even for large
    data; since emptying could also touch a key such as "x[1]", a duplicate found there is
    confirmed on the whole header before the request is refused."""
    try:
        json.loads(_NUMERIC_ARRAY.sub(b"[]", head), object_pairs_hook=_unique_keys)
        return
    except _Duplicate:
        pass
    except (ValueError, RecursionError):  # not expected of a header that parsed: check it all
        pass
    try:
        json.loads(head, object_pairs_hook=_unique_keys)
    except _Duplicate as exc:
        raise BadTensor(f"Duplicate key {exc.args[0]!r} in the request header") from exc
    except (ValueError, RecursionError) as exc:
        raise BadTensor(f"The request header could not be read: {exc}"[:300]) from exc


# -- request tensors -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """One feature's values: which input carries them, and which column of it (2-D input)."""

    tensor: RequestInput
    column: int | None


def request_rows(model: LoadedModel, request: InferenceRequest, tail: bytes) -> list[Row]:
    """Decode the input tensors into validated rows, in the card's feature order."""
    # Refuse a bad outputs list before any decoding (and before the model runs).
    _selected_outputs(request, _available_outputs(model.card, _has_proba(model)))
    inputs = request.inputs
    _refuse_duplicate_names(inputs)
    binary = _binary_parts(inputs, tail)
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

    decoded: dict[str, np.ndarray[Any, Any] | list[str]] = {}
    for position, tensor in enumerate(inputs):
        decoded[tensor.name] = _decode(tensor, binary[position])
    columns = [
        _column(feature, source, decoded[source.tensor.name], count)
        for feature, source in zip(features, sources, strict=True)
    ]
    rows = list(zip(*columns, strict=True))
    try:
        return model.inputs.validate_rows(rows, loc=())
    except InvalidInput as exc:
        raise BadTensor(_validation_message(exc, features, sources)) from exc


def _refuse_duplicate_names(inputs: list[RequestInput]) -> None:
    seen: set[str] = set()
    for tensor in inputs:
        if tensor.name in seen:
            raise BadTensor(f"input {tensor.name!r} appears more than once")
        seen.add(tensor.name)


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
            f"{_quoted(names)}{_matrix_hint(features)}"
        )
    by_name = {tensor.name: tensor for tensor in inputs}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise BadTensor(
            f"missing input{'s' if len(missing) > 1 else ''} {_quoted(missing)}: this model takes one tensor per feature, "
            f"named {_quoted(names)}{_matrix_hint(features)}"
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
            f"is a 2-D tensor with one column per feature ({_quoted(_names(features))}), or "
            "send one [N] tensor per feature, named as the feature"
        )
    kinds = {feature.dtype == "category" for feature in features}
    if len(kinds) > 1:
        raise BadTensor(
            f"input {tensor.name!r}: this model mixes category and numeric features, which one "
            f"2-D tensor cannot carry: send one [N] tensor per feature, named "
            f"{_quoted(_names(features))}"
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
            f"feature {feature.name!r} takes {_FEATURE_DATATYPE[feature.dtype]} or another "
            "FP/INT datatype"
        )
    if datatype not in _NUMERIC_DTYPES:
        raise BadTensor(
            f"input {tensor.name!r}: feature {feature.name!r} is a number and takes "
            f"{_FEATURE_DATATYPE[feature.dtype]} or another FP/INT datatype, not {datatype}"
        )


def _decode(tensor: RequestInput, binary: bytes | None) -> np.ndarray[Any, Any] | list[str]:
    """The tensor's elements, flat and row-major: an array in the declared datatype, or the
    strings of a BYTES tensor; the element count must match the shape."""
    count = math.prod(tensor.shape)
    name, datatype = tensor.name, tensor.datatype
    if binary is not None:
        if datatype == "BYTES":
            return _split_bytes(binary, count, name)
        dtype = np.dtype(_NUMERIC_DTYPES[datatype])
        if len(binary) != count * dtype.itemsize:
            raise BadTensor(
                f"input {name!r}: binary_data_size is {len(binary)} bytes, but shape "
                f"{tensor.shape} of {datatype} needs {count} x {dtype.itemsize} bytes"
            )
        return np.frombuffer(binary, dtype=dtype)
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
            return np.array(leaves, dtype=_NUMERIC_DTYPES[datatype])
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
    for issue in issues[:_MAX_MESSAGES]:
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
    more = f" (and {len(issues) - _MAX_MESSAGES} more)" if len(issues) > _MAX_MESSAGES else ""
    return "; ".join(parts) + more


def _names(features: list[FeatureSpec]) -> list[str]:
    return [feature.name for feature in features]


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _matrix_hint(features: list[FeatureSpec]) -> str:
    kinds = {feature.dtype == "category" for feature in features}
    if len(kinds) > 1 or len(features) == 1:
        return ""
    return f", or one 2-D [N, {len(features)}] tensor with the features as columns, in that order"


# -- response --------------------------------------------------------------------------------
def _has_proba(model: LoadedModel) -> bool:
    return model.card.task == "classification" and hasattr(model.estimator, "predict_proba")


def _available_outputs(card: ModelCard, has_proba: bool) -> list[str]:
    return [PREDICT, PREDICT_PROBA] if card.task == "classification" and has_proba else [PREDICT]


def _flag(parameters: dict[str, Any] | None, key: str, where: str) -> bool | None:
    value = (parameters or {}).get(key)
    if value is not None and not isinstance(value, bool):
        raise BadTensor(f"{where}: parameters.{key} must be true or false")
    return value


def _selected_outputs(
    request: InferenceRequest, available: list[str]
) -> list[tuple[str, bool | None]]:
    """The outputs to send, in order, each with its own `binary_data` choice (None: unset)."""
    _flag(request.parameters, "binary_data_output", "request")
    if not request.outputs:  # absent (or empty): every output, with defaults
        return [(name, None) for name in available]
    chosen: list[tuple[str, bool | None]] = []
    for requested in request.outputs:
        name = requested.name
        if name not in available:
            raise BadTensor(
                f"unknown output {name!r}: this model's outputs are {_quoted(available)}"
            )
        if any(name == seen for seen, _ in chosen):
            raise BadTensor(f"output {name!r} is requested more than once")
        parameters = requested.parameters or {}
        for unsupported, what in (
            ("classification", "the classification extension"),
            ("shared_memory_region", "shared memory"),
        ):
            if unsupported in parameters:
                raise BadTensor(f"output {name!r}: {what} is not supported")
        chosen.append((name, _flag(parameters, "binary_data", f"output {name!r}")))
    return chosen


def _label_datatype(card: ModelCard) -> Datatype:
    """The `predict` output's datatype, from the card's class labels."""
    if card.task == "regression":
        return "FP64"
    classes = card.target.classes or []
    if classes and all(isinstance(label, bool) for label in classes):
        return "BOOL"
    if classes and all(isinstance(label, int) and not isinstance(label, bool) for label in classes):
        return "INT64"
    if classes and all(
        isinstance(label, int | float) and not isinstance(label, bool) for label in classes
    ):
        return "FP64"
    return "BYTES"


def _predict_values(datatype: Datatype, predictions: np.ndarray[Any, Any]) -> Any:
    """Labels or values as an array of the datatype (a list of str for BYTES)."""
    if datatype == "BYTES":
        return [str(label) for label in predictions.tolist()]
    target = {"BOOL": "|b1", "INT64": "<i8"}.get(datatype, "<f8")
    return np.ascontiguousarray(np.asarray(predictions).astype(target))


def _encode_binary(values: Any) -> bytes:
    if isinstance(values, list):  # BYTES
        parts: list[bytes] = []
        for text in values:
            encoded = text.encode("utf-8")
            parts.append(struct.pack("<I", len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    array: np.ndarray[Any, Any] = values
    return array.tobytes(order="C")


def response_body(
    model: LoadedModel, request: InferenceRequest, output: ModelOutput
) -> tuple[bytes, dict[str, str]]:
    """The reply as (body, headers): JSON, or JSON followed by the binary outputs when any
    output is to be sent binary (`Inference-Header-Content-Length` then gives the JSON size)."""
    has_proba = output.probabilities is not None
    selected = _selected_outputs(request, _available_outputs(model.card, has_proba))
    binary_default = _flag(request.parameters, "binary_data_output", "request") or False
    rows = int(output.predictions.shape[0])
    entries: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for name, binary in selected:
        values: Any
        datatype: Datatype
        if name == PREDICT:
            datatype = _label_datatype(model.card)
            values = _predict_values(datatype, output.predictions)
            shape = [rows]
        else:
            assert output.probabilities is not None
            datatype = "FP64"
            values = np.ascontiguousarray(output.probabilities, dtype="<f8")
            shape = [rows, int(output.probabilities.shape[1])]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary if binary is not None else binary_default:
            raw = _encode_binary(values)
            entry["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            entry["data"] = values if isinstance(values, list) else values.ravel().tolist()
        entries.append(entry)
    header: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if request.id is not None:
        header["id"] = request.id
    header["outputs"] = entries
    head = orjson.dumps(header)
    if parts:
        return head + b"".join(parts), {
            "Content-Type": "application/octet-stream",
            HEADER_LENGTH: str(len(head)),
        }
    return head, {"Content-Type": "application/json"}


# -- metadata --------------------------------------------------------------------------------
def model_metadata(model: LoadedModel, versions: list[int]) -> ModelMetadata:
    """The model's V2 metadata: one [-1] input per feature, `predict` and `predict_proba`."""
    card = model.card
    features = card.features
    inputs = [
        TensorMetadata(name=feature.name, datatype=_FEATURE_DATATYPE[feature.dtype], shape=[-1])
        for feature in features
    ]
    outputs = [TensorMetadata(name=PREDICT, datatype=_label_datatype(card), shape=[-1])]
    if _has_proba(model):
        classes = len(card.target.classes or [])
        outputs.append(TensorMetadata(name=PREDICT_PROBA, datatype="FP64", shape=[-1, classes]))
    return ModelMetadata(
        name=model.name,
        versions=[str(version) for version in versions],
        platform="scikit-learn",
        inputs=inputs,
        outputs=outputs,
        parameters={"content": _content_note(features)},
    )


def _content_note(features: list[FeatureSpec]) -> str:
    kinds: set[Literal["float", "int", "category"]] = {feature.dtype for feature in features}
    width = len(features)
    if "category" in kinds and len(kinds) > 1:
        return (
            "Send one [N] tensor per input, named as listed (BYTES for categories); a single "
            "2-D tensor cannot mix strings and numbers"
        )
    datatype = "BYTES" if "category" in kinds else "FP64"
    return (
        f"One [N] tensor per input, named as listed; or a single 2-D [N, {width}] {datatype} "
        "tensor (any name) with the inputs as columns in this order"
    )


# -- documentation ---------------------------------------------------------------------------
def v2_datatypes(card: ModelCard) -> list[Datatype]:
    """The input datatypes some feature of this model takes (BOOL never)."""
    kinds = {feature.dtype == "category" for feature in card.features}
    datatypes: list[Datatype] = []
    if False in kinds:
        datatypes += [datatype for datatype in get_args(Datatype) if datatype in _NUMERIC_DTYPES]
    if True in kinds:
        datatypes.append("BYTES")
    return datatypes


def v2_outputs(model: LoadedModel) -> list[str]:
    """The output names a request may ask this model for."""
    return _available_outputs(model.card, _has_proba(model))


def v2_layout(card: ModelCard) -> str:
    """How a request lays out its inputs for this model, in a sentence (Markdown)."""
    features = card.features
    names = ", ".join(f"`{feature.name}`" for feature in features)
    categories = [feature.name for feature in features if feature.dtype == "category"]
    per_feature = f"one `[N]` tensor per feature, named as the feature: {names}"
    if categories:
        per_feature += " (BYTES for " + ", ".join(f"`{name}`" for name in categories) + ")"
    if len({feature.dtype == "category" for feature in features}) > 1 or len(features) == 1:
        return f"Inputs: {per_feature}."
    return (
        f"Inputs: one 2-D `[N, {len(features)}]` tensor (any name) with the features as columns "
        f"in this order: {names}; or {per_feature}."
    )


def v2_example(model: LoadedModel) -> dict[str, Any]:
    """A valid request for the card's example row: one [1, n] FP64 tensor for an all-numeric
    model, else one [1] tensor per feature (BYTES for categories)."""
    features = model.card.features
    row = model.inputs.example["instances"][0]
    if all(feature.dtype != "category" for feature in features):
        return {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, len(features)],
                    "datatype": "FP64",
                    "data": [row[feature.name] for feature in features],
                }
            ]
        }
    return {
        "inputs": [
            {
                "name": feature.name,
                "shape": [1],
                "datatype": _FEATURE_DATATYPE[feature.dtype],
                "data": [row[feature.name]],
            }
            for feature in features
        ]
    }

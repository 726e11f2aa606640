"""Open Inference Protocol replies: outputs `predict` and `predict_proba`, JSON or JSON + binary,
as the request asks.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from app.codecs.v2.protocol import (
    HEADER_LENGTH,
    PREDICT,
    available_outputs,
    flag,
    label_datatype,
    selected_outputs,
)
from app.serving.model import LoadedModel, ModelOutput
from schemas.v2 import Datatype, InferenceRequest


def predict_values(datatype: Datatype, predictions: np.ndarray[Any, Any]) -> Any:
    """Labels or values as an array of the datatype (a list of str for BYTES)."""
    if datatype == "BYTES":
        return [str(label) for label in predictions.tolist()]
    target = {"BOOL": "|b1", "INT64": "<i8"}.get(datatype, "<f8")
    return np.ascontiguousarray(np.asarray(predictions).astype(target))


def encode_binary(values: Any) -> bytes:
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
    selected = selected_outputs(request, available_outputs(model.card, has_proba))
    binary_default = flag(request.parameters, "binary_data_output", "request") or False
    rows = int(output.predictions.shape[0])
    entries: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for name, binary in selected:
        values: Any
        datatype: Datatype
        if name == PREDICT:
            datatype = label_datatype(model.card)
            values = predict_values(datatype, output.predictions)
            shape = [rows]
        else:
            assert output.probabilities is not None
            datatype = "FP64"
            values = np.ascontiguousarray(output.probabilities, dtype="<f8")
            shape = [rows, int(output.probabilities.shape[1])]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary if binary is not None else binary_default:
            raw = encode_binary(values)
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

"""What every part of the Open Inference Protocol codec shares: header names, output names,
datatypes, and the choice of outputs a request asks for."""

from __future__ import annotations

from typing import Any

from app.errors import BadTensor
from app.serving.model import LoadedModel
from schemas.cards import ModelCard
from schemas.v2 import Datatype, InferenceRequest

HEADER_LENGTH = "Inference-Header-Content-Length"


# Server metadata, the same over REST and gRPC.
SERVER_NAME = "modelport"


SERVER_VERSION = "0.1.0"


PREDICT = "predict"


PREDICT_PROBA = "predict_proba"


NUMERIC_DTYPES: dict[str, str] = {
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


FEATURE_DATATYPE: dict[str, Datatype] = {"float": "FP64", "int": "INT64", "category": "BYTES"}


MAX_MESSAGES = 5  # validation problems named in one error message


# Header lengths beyond 10**18 bytes are nonsense, not numbers to parse.
HEADER_LENGTH_DIGITS = "[0-9]{1,18}"


# -- response --------------------------------------------------------------------------------
def has_proba(model: LoadedModel) -> bool:
    return model.card.task == "classification" and hasattr(model.estimator, "predict_proba")


def available_outputs(card: ModelCard, has_proba: bool) -> list[str]:
    return [PREDICT, PREDICT_PROBA] if card.task == "classification" and has_proba else [PREDICT]


def flag(parameters: dict[str, Any] | None, key: str, where: str) -> bool | None:
    value = (parameters or {}).get(key)
    if value is not None and not isinstance(value, bool):
        raise BadTensor(f"{where}: parameters.{key} must be true or false")
    return value


def selected_outputs(
    request: InferenceRequest, available: list[str]
) -> list[tuple[str, bool | None]]:
    """The outputs to send, in order, each with its own `binary_data` choice (None: unset)."""
    flag(request.parameters, "binary_data_output", "request")
    if not request.outputs:  # absent (or empty): every output, with defaults
        return [(name, None) for name in available]
    chosen: list[tuple[str, bool | None]] = []
    for requested in request.outputs:
        name = requested.name
        if name not in available:
            raise BadTensor(
                f"unknown output {name!r}: this model's outputs are {quoted(available)}"
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
        chosen.append((name, flag(parameters, "binary_data", f"output {name!r}")))
    return chosen


def label_datatype(card: ModelCard) -> Datatype:
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


def quoted(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)

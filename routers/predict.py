from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, Response, params

from app.codecs.json_rows import json_reply, json_request
from app.http import paths
from app.http.deadlines import TIMEOUT_PARAMETER, disconnect_probe, request_deadline
from app.http.dependencies import (
    ModelName,
    ModelVersion,
    SessionCookie,
    dataplane_of,
    read_json_body,
    routed_reply,
    settings_of,
)
from app.http.direct_route import add_direct_routes
from schemas.errors import error_responses
from schemas.predict import PredictionRequest, PredictionResponse

_RESPONSES = error_responses(
    {
        401: "An API key is configured and the request lacks it.",
        400: "Body is not valid JSON (or not UTF-8), or X-Request-Timeout is not a positive number.",
        404: "Unknown model or version.",
        413: "Body over the byte limit.",
        415: "Body is not JSON.",
        422: "Rows fail the model's schema (more rows than the limit included).",
        429: "Refused at once: the model's queue is full, or its predicted wait outlasts the request's deadline. Retry after Retry-After seconds.",
        500: "The model failed on valid input.",
        503: "Model could not be loaded.",
        504: "The request's deadline passed before its reply was ready.",
    }
)

# The body is read raw and validated by the model's own schema (built from its card), so the
# generic shape is declared here for the docs only.
_OPERATION_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
    },
    "parameters": [TIMEOUT_PARAMETER],
}


def add_routes(app: FastAPI, *, guard: Sequence[params.Depends]) -> None:
    """The JSON prediction routes, the hot path: direct routes (no per-request dependency
    solving; app.http.direct_route)."""
    add_direct_routes(
        app,
        [(paths.PREDICT, predict_default), (paths.VERSION_PREDICT, predict_version)],
        tag="predict",
        guard=guard,
        responses=_RESPONSES,
        openapi_extra=_OPERATION_EXTRA,
        response_model=PredictionResponse,
    )


async def _predict(
    request: Request, model_name: str, version: int | None, session: str | None
) -> Response:
    # The same routing and body checks as every other surface, called directly (no dependency
    # solving on the hot path), then the data plane: decode, batch, predict, check, encode.
    dataplane = dataplane_of(request)
    settings = settings_of(request)
    routed = dataplane.resolve(model_name, version, session)
    deadline = request_deadline(request.scope, settings)
    dataplane.admit(routed.model, deadline)  # before the body is read
    body = await read_json_body(request)
    content = await dataplane.infer(
        routed.model,
        json_request(body),
        json_reply,
        work=len(body),
        deadline=deadline,
        gone=disconnect_probe(request.receive),
    )
    return routed_reply(content, routed, settings)


async def predict_default(
    model_name: ModelName, request: Request, session: SessionCookie = None
) -> Response:
    """Predict with the model's default version."""
    return await _predict(request, model_name, None, session)


async def predict_version(
    model_name: ModelName, version: ModelVersion, request: Request
) -> Response:
    """Predict with a pinned version."""
    return await _predict(request, model_name, version, None)

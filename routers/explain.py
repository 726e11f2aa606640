"""Explanations: each feature's contribution to a prediction (docs/api.md, "Explanations")."""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, Response, params

from app.codecs.explain import explain_reply, explain_request
from app.http import paths
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
from schemas.explain import ExplanationRequest, ExplanationResponse

_RESPONSES = error_responses(
    {
        401: "An API key is configured and the request lacks it.",
        400: "Body is not valid JSON (or not UTF-8).",
        404: "Unknown model or version.",
        413: "Body over the byte limit.",
        415: "Body is not JSON.",
        422: "Rows fail the model's schema, an unknown class, or more rows than the explanation limit.",
        500: "The model failed on valid input.",
        501: "No exact explanation method for this model (the detail says why).",
        503: "Model could not be loaded.",
    }
)

# Read raw and validated by the version's own schema, as for /predict: this generic shape is
# for the docs only (each model's typed operation is under its own tag).
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ExplanationRequest.model_json_schema()}},
    }
}


def add_routes(app: FastAPI, *, guard: Sequence[params.Depends]) -> None:
    """The explanation routes, direct routes like the prediction routes (`guard`: the API-key
    guard when a key is configured)."""
    add_direct_routes(
        app,
        [(paths.EXPLAIN, explain_default), (paths.VERSION_EXPLAIN, explain_version)],
        tag="explain",
        guard=guard,
        responses=_RESPONSES,
        openapi_extra=_REQUEST_BODY,
        response_model=ExplanationResponse,
    )


async def _explain(
    request: Request, model_name: str, version: int | None, session: str | None
) -> Response:
    dataplane = dataplane_of(request)
    settings = settings_of(request)
    routed = dataplane.resolve(model_name, version, session)
    body = await read_json_body(request)
    limit = settings.explain_max_rows
    content = await dataplane.explain(
        routed.model, explain_request(body, max_rows=limit), explain_reply, max_rows=limit
    )
    return routed_reply(content, routed, settings)


async def explain_default(
    model_name: ModelName, request: Request, session: SessionCookie = None
) -> Response:
    """Explain the default version's predictions: each feature's contribution."""
    return await _explain(request, model_name, None, session)


async def explain_version(
    model_name: ModelName, version: ModelVersion, request: Request
) -> Response:
    """Explain a pinned version's predictions: each feature's contribution."""
    return await _explain(request, model_name, version, None)

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, Response, params

from app.batching import REPLY_BYTES_PER_ROW, offload
from app.dependencies import (
    ModelName,
    ModelVersion,
    SessionCookie,
    read_json_body,
    registry_of,
    route_model,
    routed_reply,
    settings_of,
)
from app.replies import prediction_json
from app.routing import DirectRoute
from schemas.errors import error_responses
from schemas.predict import PredictionRequest, PredictionResponse

_RESPONSES = error_responses(
    {
        401: "An API key is configured and the request lacks it.",
        400: "Body is not valid JSON (or not UTF-8).",
        404: "Unknown model or version.",
        413: "Body over the byte limit.",
        415: "Body is not JSON.",
        422: "Rows fail the model's schema (more rows than the limit included).",
        500: "The model failed on valid input.",
        503: "Model could not be loaded.",
    }
)

# The body is read raw and validated by the model's own schema (built from its card), so the
# generic shape is declared here for the docs only.
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
    }
}


def add_routes(app: FastAPI, *, guard: Sequence[params.Depends]) -> None:
    """The JSON prediction routes, the hot path. They go on the app's own router, ahead of every
    included router (FastAPI matches an included router's routes twice per request), as
    `DirectRoute`s (no per-request dependency solving). `guard` is the API-key guard when a key
    is configured: a route with a dependency takes FastAPI's standard handler."""
    for path, endpoint in (
        ("/models/{model_name}/predict", predict_default),
        ("/models/{model_name}/versions/{version}/predict", predict_version),
    ):
        app.router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            tags=["predict"],
            dependencies=guard,
            responses=_RESPONSES,
            openapi_extra=_REQUEST_BODY,
            response_model=PredictionResponse,
            route_class_override=DirectRoute,
        )


async def _predict(
    request: Request, model_name: str, version: int | None, session: str | None
) -> Response:
    # The same routing and body checks as every other surface, called directly. Parsing and
    # formatting run on the event loop for small requests (cheaper than a thread hop), in a
    # thread for large ones; the estimator call is batched with concurrent requests.
    routed = route_model(registry_of(request), model_name, version, session)
    body = await read_json_body(request)
    model = routed.model
    rows = await offload(model.inputs.validate_json, body, work=len(body))
    output = await model.batcher.predict(rows)
    content = await offload(prediction_json, model, output, work=len(output) * REPLY_BYTES_PER_ROW)
    return routed_reply(content, routed, settings_of(request))


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

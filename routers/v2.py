"""The Open Inference Protocol (KServe V2, Triton, MLServer) over REST.

Every route has a `/versions/{version}` twin. Its routes carry the protocol's error envelope,
`{"error": "<message>"}` (app.http.v2_errors), and an unknown path under /v2 gets it too.
Unpinned requests go to the model's default version: OIP clients carry no session cookie, so
the canary split does not apply here.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.codecs.v2.infer import infer_reply, infer_request
from app.codecs.v2.metadata import model_metadata
from app.codecs.v2.protocol import HEADER_LENGTH, SERVER_NAME, SERVER_VERSION
from app.errors import ModelUnavailable
from app.http import paths
from app.http.dependencies import ApiKeyGuard, DataPlaneDep, ModelName, ModelVersion
from app.http.v2_errors import OipFallbackRoute, OipRoute
from app.serving.dataplane import DataPlane
from app.serving.model import LoadedModel
from schemas.v2 import (
    InferenceResponse,
    LiveStatus,
    ModelMetadata,
    ModelReadyStatus,
    ReadyStatus,
    ServerMetadata,
    V2Error,
)

router = APIRouter(
    route_class=OipRoute,
    tags=["v2"],
    responses={
        # "4XX" also stops FastAPI documenting its own 422 body, which /v2 never sends.
        "4XX": {"model": V2Error, "description": 'Client error: `{"error": "<message>"}`.'},
        400: {
            "model": V2Error,
            "description": "Malformed request or tensors, or more rows than the limit.",
        },
        401: {
            "model": V2Error,
            "description": "An API key is configured and the request lacks it.",
        },
        404: {"model": V2Error, "description": "Unknown model or version."},
        413: {"model": V2Error, "description": "Body over the byte limit."},
        503: {"model": V2Error, "description": "Not ready, or the model could not be loaded."},
    },
)


@router.get(paths.V2)
async def server_metadata() -> ServerMetadata:
    """Server name, version and the protocol extensions it supports."""
    return ServerMetadata(
        name=SERVER_NAME, version=SERVER_VERSION, extensions=["binary_tensor_data"]
    )


@router.get(paths.V2_LIVE)
async def server_live() -> LiveStatus:
    """Liveness: `{"live": true}` (KServe's client reads the body; Triton's reads the status)."""
    return LiveStatus(live=True)


@router.get(paths.V2_READY, responses={503: {"model": ReadyStatus}})
async def server_ready(dataplane: DataPlaneDep) -> Any:
    """Readiness: 200 `{"ready": true}` when every model loaded, else 503 `{"ready": false}`."""
    ready = dataplane.ready
    return JSONResponse(ReadyStatus(ready=ready).model_dump(), status_code=200 if ready else 503)


def _metadata(dataplane: DataPlane, name: str, version: int | None) -> ModelMetadata:
    return model_metadata(dataplane.model(name, version), dataplane.versions(name))


@router.get(paths.V2_MODEL)
async def model_metadata_default(model_name: ModelName, dataplane: DataPlaneDep) -> ModelMetadata:
    """Model metadata: inputs and outputs with datatypes and shapes from the card."""
    return _metadata(dataplane, model_name, None)


@router.get(paths.V2_MODEL_VERSION)
async def model_metadata_version(
    model_name: ModelName, version: ModelVersion, dataplane: DataPlaneDep
) -> ModelMetadata:
    """Metadata of one version."""
    return _metadata(dataplane, model_name, version)


def _ready(dataplane: DataPlane, name: str, version: int | None) -> Any:
    try:
        model = dataplane.model(name, version)
    except ModelUnavailable:
        return JSONResponse(ModelReadyStatus(name=name, ready=False).model_dump(), status_code=503)
    return ModelReadyStatus(name=model.name, ready=True)


@router.get(paths.V2_MODEL_READY, responses={503: {"model": ModelReadyStatus}})
async def model_ready_default(model_name: ModelName, dataplane: DataPlaneDep) -> ModelReadyStatus:
    """Model readiness: 200 `{"name", "ready": true}`; 503 when it could not be loaded."""
    result: ModelReadyStatus = _ready(dataplane, model_name, None)
    return result


@router.get(paths.V2_MODEL_VERSION_READY, responses={503: {"model": ModelReadyStatus}})
async def model_ready_version(
    model_name: ModelName, version: ModelVersion, dataplane: DataPlaneDep
) -> ModelReadyStatus:
    """Readiness of one version."""
    result: ModelReadyStatus = _ready(dataplane, model_name, version)
    return result


# The body is read raw: tritonclient sends no Content-Type, and binary tensors follow the JSON.
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "JSON, or with the binary tensor extension (header `Inference-Header-Content-Length: N`) N bytes of JSON followed by raw little-endian tensor data.",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferenceResponse,
        "description": "Outputs `predict` and (classifiers) `predict_proba`; binary when the request asks.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
HeaderLength = Annotated[
    str | None,
    Header(
        alias=HEADER_LENGTH,
        description="Binary tensor extension: length of the JSON part of the body.",
    ),
]


async def _infer(
    dataplane: DataPlane, model: LoadedModel, request: Request, header_length: str | None
) -> Response:
    body = await request.body()
    content, headers = await dataplane.infer(
        model, infer_request(body, header_length), infer_reply, work=len(body)
    )
    return Response(content=content, headers={**headers, "X-Model-Version": str(model.version)})


@router.post(
    paths.INFER,
    openapi_extra=_INFER_BODY,
    dependencies=[ApiKeyGuard],
    responses=_INFER_RESPONSES,
    response_model=None,
)
async def infer_default(
    model_name: ModelName,
    dataplane: DataPlaneDep,
    request: Request,
    header_length: HeaderLength = None,
) -> Response:
    """Inference on the default version: JSON or binary tensors in, `predict`/`predict_proba` out."""
    return await _infer(dataplane, dataplane.model(model_name), request, header_length)


@router.post(
    paths.VERSION_INFER,
    openapi_extra=_INFER_BODY,
    dependencies=[ApiKeyGuard],
    responses=_INFER_RESPONSES,
    response_model=None,
)
async def infer_version(
    model_name: ModelName,
    version: ModelVersion,
    dataplane: DataPlaneDep,
    request: Request,
    header_length: HeaderLength = None,
) -> Response:
    """Inference on a pinned version."""
    return await _infer(dataplane, dataplane.model(model_name, version), request, header_length)


async def unknown_path() -> None:
    """Any other path under /v2: a 404 in the protocol's envelope."""
    raise StarletteHTTPException(404, "Not Found")


router.add_api_route(
    paths.V2 + "/{path:path}",
    unknown_path,
    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
    include_in_schema=False,
    route_class_override=OipFallbackRoute,
)
_FALLBACK = router.routes[-1]
assert isinstance(_FALLBACK, OipFallbackRoute)
_FALLBACK.siblings = router.routes

"""The Open Inference Protocol (KServe V2, Triton, MLServer) over REST.

Every route has a `/versions/{version}` twin. Errors under /v2 are `{"error": "<message>"}`
(see app.error_handlers). Unpinned requests go to the model's default version: OIP clients
carry no session cookie, so the canary split does not apply here.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from app.batching import REPLY_BYTES_PER_ROW, offload
from app.dependencies import ApiKeyGuard, ModelName, ModelVersion, RegistryDep
from app.errors import ModelUnavailable
from app.inference import LoadedModel, Rows
from app.registry import ModelRegistry
from app.v2 import HEADER_LENGTH, model_metadata, parse_request, request_rows, response_body
from schemas.v2 import (
    InferenceRequest,
    InferenceResponse,
    LiveStatus,
    ModelMetadata,
    ModelReadyStatus,
    ReadyStatus,
    ServerMetadata,
    V2Error,
)

router = APIRouter(
    prefix="/v2",
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

SERVER_VERSION = "0.1.0"


@router.get("")
async def server_metadata() -> ServerMetadata:
    """Server name, version and the protocol extensions it supports."""
    return ServerMetadata(
        name="modelport", version=SERVER_VERSION, extensions=["binary_tensor_data"]
    )


@router.get("/health/live")
async def server_live() -> LiveStatus:
    """Liveness: `{"live": true}` (KServe's client reads the body; Triton's reads the status)."""
    return LiveStatus(live=True)


@router.get("/health/ready", responses={503: {"model": ReadyStatus}})
async def server_ready(registry: RegistryDep) -> Any:
    """Readiness: 200 `{"ready": true}` when every model loaded, else 503 `{"ready": false}`."""
    ready = registry.ready
    return JSONResponse(ReadyStatus(ready=ready).model_dump(), status_code=200 if ready else 503)


def _metadata(registry: ModelRegistry, name: str, version: int | None) -> ModelMetadata:
    model = registry.get(name, version)
    return model_metadata(model, sorted(registry.entry(name).versions))


@router.get("/models/{model_name}")
async def model_metadata_default(model_name: ModelName, registry: RegistryDep) -> ModelMetadata:
    """Model metadata: inputs and outputs with datatypes and shapes from the card."""
    return _metadata(registry, model_name, None)


@router.get("/models/{model_name}/versions/{version}")
async def model_metadata_version(
    model_name: ModelName, version: ModelVersion, registry: RegistryDep
) -> ModelMetadata:
    """Metadata of one version."""
    return _metadata(registry, model_name, version)


def _ready(registry: ModelRegistry, name: str, version: int | None) -> Any:
    try:
        model = registry.get(name, version)
    except ModelUnavailable:
        return JSONResponse(ModelReadyStatus(name=name, ready=False).model_dump(), status_code=503)
    return ModelReadyStatus(name=model.name, ready=True)


@router.get("/models/{model_name}/ready", responses={503: {"model": ModelReadyStatus}})
async def model_ready_default(model_name: ModelName, registry: RegistryDep) -> ModelReadyStatus:
    """Model readiness: 200 `{"name", "ready": true}`; 503 when it could not be loaded."""
    result: ModelReadyStatus = _ready(registry, model_name, None)
    return result


@router.get(
    "/models/{model_name}/versions/{version}/ready", responses={503: {"model": ModelReadyStatus}}
)
async def model_ready_version(
    model_name: ModelName, version: ModelVersion, registry: RegistryDep
) -> ModelReadyStatus:
    """Readiness of one version."""
    result: ModelReadyStatus = _ready(registry, model_name, version)
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


def _decode(
    model: LoadedModel, body: bytes, header_length: str | None
) -> tuple[InferenceRequest, Rows]:
    request, tail = parse_request(body, header_length)
    return request, request_rows(model, request, tail)


async def _infer_response(
    model: LoadedModel, request: Request, header_length: str | None
) -> Response:
    body = await request.body()
    # Decoding and encoding on the event loop for small requests, in a thread for large ones;
    # the estimator call is batched with concurrent requests from every surface.
    inference, rows = await offload(_decode, model, body, header_length, work=len(body))
    output = await model.batcher.predict(rows)
    content, headers = await offload(
        response_body, model, inference, output, work=len(output) * REPLY_BYTES_PER_ROW
    )
    return Response(content=content, headers={**headers, "X-Model-Version": str(model.version)})


@router.post(
    "/models/{model_name}/infer",
    openapi_extra=_INFER_BODY,
    dependencies=[ApiKeyGuard],
    responses=_INFER_RESPONSES,
    response_model=None,
)
async def infer_default(
    model_name: ModelName,
    registry: RegistryDep,
    request: Request,
    header_length: HeaderLength = None,
) -> Response:
    """Inference on the default version: JSON or binary tensors in, `predict`/`predict_proba` out."""
    return await _infer_response(registry.get(model_name, None), request, header_length)


@router.post(
    "/models/{model_name}/versions/{version}/infer",
    openapi_extra=_INFER_BODY,
    dependencies=[ApiKeyGuard],
    responses=_INFER_RESPONSES,
    response_model=None,
)
async def infer_version(
    model_name: ModelName,
    version: ModelVersion,
    registry: RegistryDep,
    request: Request,
    header_length: HeaderLength = None,
) -> Response:
    """Inference on a pinned version."""
    return await _infer_response(registry.get(model_name, version), request, header_length)

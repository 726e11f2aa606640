"""The Open Inference Protocol (KServe V2, Triton, MLServer) over REST, with its model
repository extension (index, load, unload; app.serving.repository).

Every model route has a `/versions/{version}` twin. Its routes carry the protocol's error envelope,
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
from app.http.deadlines import TIMEOUT_PARAMETER, disconnect_probe, request_deadline
from app.http.dependencies import (
    ApiKeyGuard,
    DataPlaneDep,
    ModelName,
    ModelVersion,
    RepositoryWriteGuard,
    settings_of,
)
from app.http.v2_errors import OipFallbackRoute, OipRoute
from app.serving.dataplane import DataPlane
from app.serving.model import LoadedModel
from schemas.errors import RETRY_AFTER
from schemas.v2 import (
    InferenceResponse,
    LiveStatus,
    ModelMetadata,
    ModelReadyStatus,
    ReadyStatus,
    RepositoryIndexEntry,
    RepositoryIndexRequest,
    RepositoryLoadRequest,
    RepositoryReply,
    RepositoryUnloadRequest,
    ServerMetadata,
    V2Error,
)

router = APIRouter(
    route_class=OipRoute,
    tags=["v2"],
    # tritonclient sends its JSON bodies (the repository's included) with no Content-Type.
    strict_content_type=False,
    responses={
        # "4XX" also stops FastAPI documenting its own 422 body, which /v2 never sends.
        "4XX": {"model": V2Error, "description": 'Client error: `{"error": "<message>"}`.'},
        400: {
            "model": V2Error,
            "description": "Malformed request or tensors, more rows than the limit, or a timeout (X-Request-Timeout, `parameters.timeout`) that is not a positive number.",
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
# The inference operations' overload answers (the metadata routes never give them).
_OVERLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "model": V2Error,
        "description": "Refused at once: the model's queue is full, or its predicted wait outlasts the request's deadline. Retry after Retry-After seconds.",
        "headers": RETRY_AFTER,
    },
    504: {
        "model": V2Error,
        "description": "The request's deadline passed before its reply was ready.",
    },
}


@router.get(paths.V2)
async def server_metadata() -> ServerMetadata:
    """Server name, version and the protocol extensions it supports."""
    return ServerMetadata(
        name=SERVER_NAME,
        version=SERVER_VERSION,
        extensions=["binary_tensor_data", "model_repository"],
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
    },
    "parameters": [TIMEOUT_PARAMETER],
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferenceResponse,
        "description": "Outputs `predict` and (classifiers) `predict_proba`; binary when the request asks.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **_OVERLOAD_RESPONSES,
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
    deadline = request_deadline(request.scope, settings_of(request))
    dataplane.admit(model, deadline)  # before the body is read
    body = await request.body()
    content, headers = await dataplane.infer(
        model,
        infer_request(body, header_length),
        infer_reply,
        work=len(body),
        deadline=deadline,
        gone=disconnect_probe(request.receive),
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


@router.post(paths.REPOSITORY_INDEX, response_model_exclude_none=True)
async def repository_index(
    dataplane: DataPlaneDep, body: RepositoryIndexRequest | None = None
) -> list[RepositoryIndexEntry]:
    """Every model and version in the store with its state — READY, UNAVAILABLE (refused by
    the store: `reason` says why) or UNLOADED (through this API) — sorted by name and version.
    `{"ready": true}` lists only the versions ready to serve. A row without `version` is about
    a model folder as a whole (e.g. one with no version folder)."""
    rows = dataplane.repository.index(ready_only=body is not None and body.ready)
    return [
        RepositoryIndexEntry.model_validate(
            {
                "name": row.name,
                "version": None if row.version is None else str(row.version),
                "state": row.state,
                "reason": row.reason,
            }
        )
        for row in rows
    ]


_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": V2Error,
        "description": "A malformed body, or (load) no version of the model loads: the reasons.",
    },
    401: {"model": V2Error, "description": "An API key is configured and the request lacks it."},
    403: {
        "model": V2Error,
        "description": "Repository writes are off (`MODELPORT_REPOSITORY_WRITES`; with no `MODELPORT_API_KEY` they are off unless it is true).",
    },
    404: {"model": V2Error, "description": "No such model in the store."},
    503: {
        "model": V2Error,
        "description": "Not applied now (this worker is being replaced, or the reload took longer than `MODELPORT_REPOSITORY_TIMEOUT`): retry after `Retry-After`.",
    },
}


@router.post(paths.REPOSITORY_LOAD, dependencies=[RepositoryWriteGuard], responses=_WRITE_RESPONSES)
async def repository_load(
    model_name: ModelName, dataplane: DataPlaneDep, body: RepositoryLoadRequest | None = None
) -> RepositoryReply:
    """Load the model's versions from the store, again if loaded: a model copied into the store
    starts serving, an unloaded one serves again. 200 once they serve in every worker."""
    await dataplane.repository.load(model_name)
    return RepositoryReply()


@router.post(
    paths.REPOSITORY_UNLOAD, dependencies=[RepositoryWriteGuard], responses=_WRITE_RESPONSES
)
async def repository_unload(
    model_name: ModelName, dataplane: DataPlaneDep, body: RepositoryUnloadRequest | None = None
) -> RepositoryReply:
    """Stop serving the model in every worker: its predictions answer 404 and the index lists
    it UNLOADED, through reloads (SIGHUP), until it is loaded again or the server restarts."""
    await dataplane.repository.unload(model_name)
    return RepositoryReply()


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

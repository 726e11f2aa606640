from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from app.codecs.streams import input_format, open_stream, reply_format
from app.config import Settings
from app.errors import PayloadTooLarge
from app.http import paths
from app.http.dependencies import (
    ApiKeyGuard,
    DataPlaneDep,
    ModelDep,
    ModelVersionDep,
    SettingsDep,
)
from app.http.streaming import DuplexStreamingResponse, RequestBody
from app.serving.dataplane import DataPlane
from app.serving.model import LoadedModel
from schemas.errors import error_responses
from schemas.stream import STREAM_REPLIES, STREAM_REQUEST_BODY

router = APIRouter(
    tags=["predict"],
    dependencies=[ApiKeyGuard],
    responses=error_responses(
        {
            401: "An API key is configured and the request lacks it.",
            400: "The CSV header cannot be read (not UTF-8, bad quoting, empty body).",
            404: "Unknown model or version.",
            413: "A declared body over MODELPORT_STREAM_MAX_BYTES, or a CSV header over the line limit.",
            415: "The body is neither text/csv nor application/x-ndjson, or the model takes images.",
            422: "The CSV header does not name each feature once, or `on_error` is not allowed.",
            503: "Model could not be loaded.",
        }
    ),
)

OnError = Annotated[
    Literal["continue", "abort"],
    Query(
        description="`continue`: answer each bad row with its error, in its place, and go on. "
        "`abort`: stop at the first bad row, answered with its error, then the summary."
    ),
]


async def _stream(
    model: LoadedModel,
    request: Request,
    settings: Settings,
    dataplane: DataPlane,
    routing: Response,
    on_error: str,
) -> Response:
    source = input_format(request.headers.get("content-type"))
    limit = settings.stream_max_bytes
    declared = request.headers.get("content-length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    body = RequestBody(request.receive, limit=limit)
    opened = await open_stream(
        model,
        body.chunks(),
        source=source,
        reply=reply_format(request.headers.get("accept"), source),
        max_line_bytes=settings.stream_max_line_bytes,
    )
    answers = dataplane.stream(model, opened.pieces, opened.codec, abort=on_error == "abort")
    reply = DuplexStreamingResponse(answers, body, media_type=opened.codec.media_type)
    # Routing headers (X-Model-Version, the canary cookie) live on the injected response.
    reply.headers.raw.extend(routing.headers.raw)
    return reply


@router.post(paths.PREDICT_STREAM, responses=STREAM_REPLIES, openapi_extra=STREAM_REQUEST_BODY)
async def predict_stream(
    model: ModelDep,
    request: Request,
    settings: SettingsDep,
    dataplane: DataPlaneDep,
    response: Response,
    on_error: OnError = "continue",
) -> Response:
    """Predict every row of a CSV or NDJSON body of any length, answered as it arrives."""
    return await _stream(model, request, settings, dataplane, response, on_error)


@router.post(
    paths.VERSION_PREDICT_STREAM, responses=STREAM_REPLIES, openapi_extra=STREAM_REQUEST_BODY
)
async def predict_stream_version(
    model: ModelVersionDep,
    request: Request,
    settings: SettingsDep,
    dataplane: DataPlaneDep,
    response: Response,
    on_error: OnError = "continue",
) -> Response:
    """Predict every row of a streamed body with a pinned version."""
    return await _stream(model, request, settings, dataplane, response, on_error)

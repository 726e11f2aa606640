from typing import Annotated

from fastapi import APIRouter, File, Header, Request, Response, UploadFile
from fastapi.responses import StreamingResponse

from app.codecs.uploads import upload_csv_reply, upload_json_reply, upload_request
from app.http import paths
from app.http.deadlines import TIMEOUT_PARAMETER, disconnect_probe, request_deadline
from app.http.dependencies import ApiKeyGuard, DataPlaneDep, ModelDep, SettingsDep
from app.serving.offload import BLOCKING
from schemas.errors import error_responses
from schemas.files import FilePredictionResponse

router = APIRouter(
    tags=["predict"],
    dependencies=[ApiKeyGuard],
    responses=error_responses(
        {
            401: "An API key is configured and the request lacks it.",
            400: "The file cannot be read (not UTF-8, bad quoting, broken image), or X-Request-Timeout is not a positive number.",
            404: "Unknown model.",
            413: "Upload over the byte limit, or image over the pixel limit.",
            415: "An image sent to a tabular model, or a CSV to an image model.",
            422: "Header or cells fail the model's schema (line and column named), or more rows than the limit.",
            429: "Refused: the model's queue is full, or its predicted wait outlasts the request's deadline. Retry after Retry-After seconds.",
            500: "The model failed on valid input.",
            503: "Model could not be loaded.",
            504: "The request's deadline passed before its reply was ready.",
        }
    ),
)

UploadedFile = Annotated[
    UploadFile,
    File(
        description="A CSV with a header row naming the features (tabular models), or a PNG/JPEG (image models)."
    ),
]


@router.post(
    paths.PREDICT_FILE,
    openapi_extra={"parameters": [TIMEOUT_PARAMETER]},
    response_model=FilePredictionResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "Predictions: JSON, or with `Accept: text/csv` the uploaded columns plus prediction columns.",
        }
    },
)
async def predict_file(
    model: ModelDep,
    file: UploadedFile,
    settings: SettingsDep,
    dataplane: DataPlaneDep,
    request: Request,
    response: Response,
    accept: Annotated[str, Header(include_in_schema=False)] = "application/json",
) -> Response:
    """Predict every row of an uploaded CSV, or the digit in an uploaded image."""
    # FastAPI has read the upload by now: admission comes after it here.
    deadline = request_deadline(request.scope, settings)
    dataplane.admit(model, deadline)
    gone = disconnect_probe(request.receive)
    csv_reply = "text/csv" in accept.lower()
    decode = upload_request(
        file.file, max_image_pixels=settings.max_image_pixels, csv_reply=csv_reply
    )
    reply: Response
    if csv_reply:
        lines = await dataplane.infer(
            model, decode, upload_csv_reply, work=BLOCKING, deadline=deadline, gone=gone
        )
        reply = StreamingResponse(lines, media_type="text/csv")
    else:
        content = await dataplane.infer(
            model,
            decode,
            upload_json_reply(file.filename),
            work=BLOCKING,
            deadline=deadline,
            gone=gone,
        )
        reply = Response(content, media_type="application/json")
    # Routing headers (X-Model-Version, the canary cookie) live on the injected response, which
    # FastAPI merges only into responses it builds itself.
    reply.headers.raw.extend(response.headers.raw)
    return reply

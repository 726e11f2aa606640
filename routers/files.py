from typing import Annotated

from fastapi import APIRouter, File, Header, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.batching import REPLY_BYTES_PER_ROW, offload
from app.dependencies import ApiKeyGuard, ModelDep, SettingsDep
from app.inference import LoadedModel, ModelOutput, prediction_response
from app.replies import prediction_json
from app.tabular import CsvTable, csv_reply_lines
from app.uploads import read_upload
from schemas.errors import error_responses
from schemas.files import FilePredictionResponse

router = APIRouter(
    prefix="/models",
    tags=["predict"],
    dependencies=[ApiKeyGuard],
    responses=error_responses(
        {
            401: "An API key is configured and the request lacks it.",
            400: "The file cannot be read (not UTF-8, bad quoting, broken image).",
            404: "Unknown model.",
            413: "Upload over the byte limit, or image over the pixel limit.",
            415: "An image sent to a tabular model, or a CSV to an image model.",
            422: "Header or cells fail the model's schema (line and column named), or more rows than the limit.",
            500: "The model failed on valid input.",
            503: "Model could not be loaded.",
        }
    ),
)

UploadedFile = Annotated[
    UploadFile,
    File(
        description="A CSV with a header row naming the features (tabular models), or a PNG/JPEG (image models)."
    ),
]


def _json_reply(
    model: LoadedModel, output: ModelOutput, filename: str | None, table: CsvTable
) -> bytes:
    return prediction_json(model, output, {"filename": filename, "rows": len(table.rows)})


@router.post(
    "/{model_name}/predict/file",
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
    response: Response,
    accept: Annotated[str, Header(include_in_schema=False)] = "application/json",
) -> Response:
    """Predict every row of an uploaded CSV, or the digit in an uploaded image."""
    csv_reply = "text/csv" in accept.lower()
    table = await run_in_threadpool(
        read_upload,
        model,
        file.file,
        max_image_pixels=settings.max_image_pixels,
        keep_cells=csv_reply,
    )
    output = await model.batcher.predict(table.rows)
    if csv_reply:
        prediction = prediction_response(model, output)
        classes = model.card.target.classes
        lines = csv_reply_lines(table, prediction, [str(c) for c in classes] if classes else None)
        reply: Response = StreamingResponse(lines, media_type="text/csv")
    else:
        content = await offload(
            _json_reply, model, output, file.filename, table, work=len(output) * REPLY_BYTES_PER_ROW
        )
        reply = Response(content, media_type="application/json")
    # Routing headers (X-Model-Version, the canary cookie) live on the injected response, which
    # FastAPI merges only into responses it builds itself.
    reply.headers.raw.extend(response.headers.raw)
    return reply

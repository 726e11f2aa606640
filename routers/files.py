from typing import Annotated

from fastapi import APIRouter, File, Header, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.dependencies import ApiKeyGuard, ModelDep, SettingsDep
from app.inference import LoadedModel, predict
from app.tabular import CsvTable, csv_reply_lines
from app.uploads import read_upload
from schemas.errors import error_responses
from schemas.files import FilePredictionResponse
from schemas.predict import PredictionResponse

router = APIRouter(
    prefix="/models",
    tags=["predict"],
    dependencies=[ApiKeyGuard],
    responses=error_responses(
        {
            401: "An API key is configured and the request lacks it.",
            400: "The file cannot be read (not UTF-8, bad quoting, broken image).",
            404: "Unknown model.",
            413: "Upload, rows or image pixels over the limit.",
            415: "An image sent to a tabular model, or a CSV to an image model.",
            422: "Header or cells fail the model's schema (line and column named).",
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


def _read_and_predict(
    model: LoadedModel, upload: UploadFile, max_image_pixels: int
) -> tuple[CsvTable, PredictionResponse]:
    table = read_upload(model, upload.file, max_image_pixels=max_image_pixels)
    return table, predict(model, table.rows)


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
) -> FilePredictionResponse | StreamingResponse:
    """Predict every row of an uploaded CSV, or the digit in an uploaded image."""
    table, prediction = await run_in_threadpool(
        _read_and_predict, model, file, settings.max_image_pixels
    )
    if "text/csv" in accept.lower():
        classes = model.card.target.classes
        lines = csv_reply_lines(table, prediction, [str(c) for c in classes] if classes else None)
        reply = StreamingResponse(lines, media_type="text/csv")
        # Routing headers (X-Model-Version, the canary cookie) live on the injected response,
        # which FastAPI merges only into responses it builds itself.
        reply.headers.raw.extend(response.headers.raw)
        return reply
    return FilePredictionResponse(filename=file.filename, rows=len(table.rows), **dict(prediction))

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.dependencies import ApiKeyGuard, JsonBody, ModelDep, ModelVersionDep
from app.inference import LoadedModel, predict
from schemas.errors import error_responses
from schemas.predict import PredictionRequest, PredictionResponse

router = APIRouter(
    prefix="/models",
    tags=["predict"],
    dependencies=[ApiKeyGuard],
    responses=error_responses(
        {
            401: "An API key is configured and the request lacks it.",
            400: "Body is not valid JSON (or not UTF-8).",
            404: "Unknown model or version.",
            413: "Body or row count over the limit.",
            415: "Body is not JSON.",
            422: "Rows fail the model's schema.",
            500: "The model failed on valid input.",
            503: "Model could not be loaded.",
        }
    ),
)

# The body is read raw and validated by the model's own schema (built from its card), so the
# generic shape is declared here for the docs only.
_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictionRequest.model_json_schema()}},
    }
}


def _validate_and_predict(model: LoadedModel, body: bytes) -> PredictionResponse:
    return predict(model, model.inputs.validate_json(body))


@router.post("/{model_name}/predict", openapi_extra=_REQUEST_BODY)
async def predict_default(model: ModelDep, body: JsonBody) -> PredictionResponse:
    """Predict with the model's default version."""
    # Parsing, validation and predict are CPU-bound: keep them off the event loop.
    return await run_in_threadpool(_validate_and_predict, model, body)


@router.post("/{model_name}/versions/{version}/predict", openapi_extra=_REQUEST_BODY)
async def predict_version(model: ModelVersionDep, body: JsonBody) -> PredictionResponse:
    """Predict with a pinned version."""
    return await run_in_threadpool(_validate_and_predict, model, body)

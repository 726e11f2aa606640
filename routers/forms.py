from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.codecs.forms import OPTION_FIELDS, form_reply, form_request
from app.errors import UnsupportedMediaType
from app.http import paths
from app.http.deadlines import TIMEOUT_PARAMETER, disconnect_probe, request_deadline
from app.http.dependencies import ApiKeyGuard, DataPlaneDep, ModelDep, settings_of
from app.http.form_page import render_form_page
from schemas.errors import error_responses
from schemas.forms import FormPredictionResponse

router = APIRouter(tags=["predict"])

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Each model's own form fields are generated from its card and shown under the model's tag;
# this generic operation accepts any fields, validated against the model's card.
_OPERATION_EXTRA = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}
            for media in _FORM_TYPES
        },
    },
    "parameters": [TIMEOUT_PARAMETER],
}


@router.post(
    paths.PREDICT_FORM,
    openapi_extra=_OPERATION_EXTRA,
    dependencies=[ApiKeyGuard],
    responses=error_responses(
        {
            401: "An API key is configured and the request lacks it.",
            400: "The form cannot be parsed (or it carries a file), or X-Request-Timeout is not a positive number.",
            404: "Unknown model.",
            413: "Form over the upload limit.",
            415: "Not a form (urlencoded or multipart).",
            422: "Fields fail the model's schema, or a feature is missing.",
            429: "Refused at once: the model's queue is full, or its predicted wait outlasts the request's deadline. Retry after Retry-After seconds.",
            500: "The model failed on valid input.",
            503: "Model could not be loaded.",
            504: "The request's deadline passed before its reply was ready.",
        }
    ),
)
async def predict_form(
    model: ModelDep, dataplane: DataPlaneDep, request: Request
) -> FormPredictionResponse:
    """Predict one row sent as form fields: one per feature, plus `top_k` and `threshold`."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _FORM_TYPES:
        raise UnsupportedMediaType(
            "Send a form (application/x-www-form-urlencoded or multipart/form-data)"
        )
    deadline = request_deadline(request.scope, settings_of(request))
    dataplane.admit(model, deadline)  # before the form is read
    limit = len(model.inputs.feature_names) + len(OPTION_FIELDS) + 1
    async with request.form(max_files=0, max_fields=limit, max_part_size=64 * 1024) as form:
        fields = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    # One row: decoded and encoded on the event loop, cheaper than a thread hop.
    return await dataplane.infer(
        model,
        form_request(fields),
        form_reply,
        work=0,
        deadline=deadline,
        gone=disconnect_probe(request.receive),
    )


@router.get(
    paths.FORM_PAGE,
    response_class=HTMLResponse,
    response_model=None,
    responses=error_responses(
        {404: "Unknown model.", 422: "Invalid model name.", 503: "Model could not be loaded."}
    ),
)
async def form_page(model: ModelDep) -> str:
    """A small HTML page with the model's form; it posts to the predict route and shows the result."""
    # Returned as text so FastAPI builds the response and keeps the routing headers (the canary
    # cookie): the page's fields and its submissions then come from the same version.
    return render_form_page(model)

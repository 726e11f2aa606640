"""Offline API docs and the per-model OpenAPI document.

Swagger UI and ReDoc load every asset from the app itself (the files ship inside the
fastapi-offline wheel), so `/docs` works with no internet. The OpenAPI document adds, for each
served model, an operation on its concrete path (`/models/iris/predict`) whose request schema is
generated from the model's card: its feature names, types, bounds and a valid example.
"""

import copy
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.inference import LoadedModel
from app.registry import ModelRegistry
from schemas.forms import FormOptions
from schemas.v2 import InferenceRequest

DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/static/docs"
GENERIC_PREDICT_PATH = "/models/{model_name}/predict"
GENERIC_FORM_PATH = "/models/{model_name}/predict/form"
FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

TAGS = [
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "models", "description": "The model catalogue: cards, versions, traffic splits."},
    {
        "name": "v2",
        "description": "The Open Inference Protocol (KServe V2 / Triton / MLServer): unmodified tritonclient and KServe clients work here.",
    },
    {
        "name": "predict",
        "description": "Predict with any model by name. Each model's own typed operation is listed under its tag below.",
    },
]


def install_docs(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    favicon = f"{DOCS_ASSETS_URL}/favicon.png"
    oauth2_redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=favicon,
            swagger_ui_parameters={"displayRequestDuration": True, "tryItOutEnabled": True},
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )


def install_openapi(app: FastAPI, registry: ModelRegistry) -> None:
    """Replace `app.openapi` with a builder that adds each served model's typed operation.

    The document is cached per registry generation, so a store reload refreshes the docs.
    """
    cache: dict[int, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        generation = registry.generation
        if generation not in cache:
            cache.clear()
            cache[generation] = build_openapi(app, registry)
        return cache[generation]

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(app: FastAPI, registry: ModelRegistry) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=TAGS,
    )
    if app.state.settings.api_key is None:
        _drop_api_key_scheme(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # Bodies read raw (so no parameter declares them) but documented by reference.
    for raw_body in (InferenceRequest,):
        body_schema = raw_body.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body_schema.pop("$defs", {}))
        schemas[raw_body.__name__] = body_schema
    generic = document["paths"].get(GENERIC_PREDICT_PATH, {}).get("post")
    if generic is None:
        return document
    for entry in sorted(registry.entries(), key=lambda e: e.name):
        if entry.default_version is None:
            continue
        model = entry.versions[entry.default_version]
        tag = f"model: {entry.name}"
        document["tags"].append({"name": tag, "description": model.card.description})
        path = GENERIC_PREDICT_PATH.replace("{model_name}", entry.name)
        document["paths"][path] = {"post": _model_operation(generic, model, tag, schemas)}
        generic_form = document["paths"].get(GENERIC_FORM_PATH, {}).get("post")
        if generic_form is not None and model.card.input_kind == "tabular":
            form_path = GENERIC_FORM_PATH.replace("{model_name}", entry.name)
            document["paths"][form_path] = {
                "post": _form_operation(generic_form, model, tag, schemas)
            }
    return document


def _drop_api_key_scheme(document: dict[str, Any]) -> None:
    """With no API key configured the prediction routes are open: say so, rather than document
    a header the server does not ask for."""
    document.get("components", {}).pop("securitySchemes", None)
    for item in document["paths"].values():
        for operation in item.values():
            operation.pop("security", None)


def _form_operation(
    generic: dict[str, Any], model: LoadedModel, tag: str, schemas: dict[str, Any]
) -> dict[str, Any]:
    """The model's form as an operation: one required field per feature, typed and bounded,
    pre-filled with the card's example so "Try it out" works as is."""
    record = schemas[f"{model.inputs.prefix}Record"]
    example = model.inputs.example["instances"][0]
    properties = {
        name: {**spec, "example": example[name]} for name, spec in record["properties"].items()
    }
    options = FormOptions.model_json_schema()["properties"]
    classes = model.card.target.classes or []
    if model.card.task == "classification":
        properties["top_k"] = {**options["top_k"], "maximum": len(classes)}
    if len(classes) == 2:
        # Optional, so not null: a form field is either sent or left out.
        properties["threshold"] = {
            key: value for key, value in options["threshold"].items() if key != "anyOf"
        }
        properties["threshold"].update({"type": "number", "minimum": 0, "maximum": 1})
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(record["required"]),
        "additionalProperties": False,
    }
    operation = copy.deepcopy(generic)
    operation["parameters"] = [
        p for p in operation.get("parameters", []) if p.get("name") != "model_name"
    ]
    operation["tags"] = [tag]
    operation["operationId"] = f"model-{model.name}-predict-form"
    operation["summary"] = f"Predict with {model.name} from form fields"
    operation["requestBody"] = {
        "required": True,
        "content": {media: {"schema": schema} for media in FORM_MEDIA_TYPES},
    }
    return operation


def _model_operation(
    generic: dict[str, Any], model: LoadedModel, tag: str, schemas: dict[str, Any]
) -> dict[str, Any]:
    request_schema = model.inputs.json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(request_schema.pop("$defs", {}))
    request_name = f"{model.inputs.prefix}PredictionRequest"
    schemas[request_name] = request_schema
    operation = copy.deepcopy(generic)
    operation["parameters"] = [
        p for p in operation.get("parameters", []) if p.get("name") != "model_name"
    ]
    if not operation["parameters"]:
        del operation["parameters"]
    operation["tags"] = [tag]
    operation["operationId"] = f"model-{model.name}-predict"
    operation["summary"] = f"Predict with {model.name}"
    operation["description"] = _describe(model)
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{request_name}"},
                "example": model.inputs.example,
            }
        },
    }
    if model.example_response is not None:
        success = operation["responses"]["200"]["content"]["application/json"]
        success["example"] = model.example_response
    return operation


def _describe(model: LoadedModel) -> str:
    card = model.card
    lines = [
        f"{card.description}",
        "",
        f"Default version: **{card.version}** ({card.task}). Send rows as objects keyed by feature"
        " name, or as arrays in this order:",
        "",
        "| feature | type | allowed | description |",
        "|---|---|---|---|",
    ]
    for feature in card.features:
        if feature.categories:
            allowed = ", ".join(feature.categories)
        else:
            low = "" if feature.minimum is None else f"≥ {feature.minimum:g}"
            high = "" if feature.maximum is None else f"≤ {feature.maximum:g}"
            allowed = " ".join(part for part in (low, high) if part) or "any finite number"
        lines.append(f"| `{feature.name}` | {feature.dtype} | {allowed} | {feature.description} |")
    if card.metrics:
        metrics = ", ".join(f"{key} {value:g}" for key, value in card.metrics.items())
        lines += ["", f"Held-out metrics: {metrics}."]
    return "\n".join(lines)

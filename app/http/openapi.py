"""The per-model OpenAPI document (the pages that show it: app.http.docs_pages).

The OpenAPI document adds, for each served model, an operation on its concrete path
(`/models/iris/predict`) whose request schema is generated from the model's card: its feature
names, types, bounds and a valid example.
"""

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.codecs.v2.metadata import v2_datatypes, v2_example, v2_layout, v2_outputs
from app.codecs.v2.protocol import HEADER_LENGTH, HEADER_LENGTH_DIGITS
from app.config import Settings
from app.http import paths
from app.http.openapi_describe import describe_model
from app.http.openapi_explain import explain_operation
from app.http.openapi_stream import fill_stream_operation
from app.serving.model import LoadedModel
from app.serving.registry import ModelRegistry
from schemas.forms import FormOptions
from schemas.v2 import InferenceRequest, RequestInput, RequestOutput

# The templated prediction routes: served, but documented per model instead (build_openapi).
TEMPLATED_PATHS = (
    paths.PREDICT,
    paths.VERSION_PREDICT,
    paths.PREDICT_FILE,
    paths.PREDICT_FORM,
    paths.PREDICT_STREAM,
    paths.VERSION_PREDICT_STREAM,
    paths.INFER,
    paths.VERSION_INFER,
    paths.EXPLAIN,
    paths.VERSION_EXPLAIN,
)
FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

TAGS = [
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "models", "description": "The model catalogue: cards, versions, traffic splits."},
    {
        "name": "v2",
        "description": "The Open Inference Protocol (KServe V2 / Triton / MLServer): unmodified tritonclient and KServe clients work here. Each model's typed `infer` operations are listed under its tag below.",
    },
    {
        "name": "predict",
        "description": "The HTML form page of any model. Prediction is typed per model: each model's operations (JSON rows, a pinned version, an uploaded file, form fields, the Open Inference Protocol, explanations) are listed under its own tag below.",
    },
]


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
    """The OpenAPI document: the fixed routes, and each served model's typed operations.

    The templated prediction routes (`/models/{model_name}/predict` and its file, form,
    pinned-version and v2 `infer` siblings) answer for any model, but no single schema is true
    of every model's rows; so they are replaced here by one operation per served model (and per
    version where the path pins one), each with that model's own request schema. The templated
    routes keep working; they are just not documented as such (docs/api.md).
    """
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
    documented = document["paths"]
    templates = {
        path: documented.pop(path)["post"]
        for path in TEMPLATED_PATHS
        if "post" in documented.get(path, {}) and len(documented[path]) == 1
    }
    for entry in sorted(registry.entries(), key=lambda e: e.name):
        if entry.default_version is None:
            continue
        default = entry.versions[entry.default_version]
        tag = f"model: {entry.name}"
        document["tags"].append({"name": tag, "description": default.card.description})
        typed = _TypedOperations(templates, tag, schemas, app.state.settings)
        concrete = {path: path.replace("{model_name}", entry.name) for path in templates}
        operations: dict[str, dict[str, Any]] = {
            paths.PREDICT: typed.predict(default, pinned=False),
            paths.PREDICT_FILE: typed.file(default),
            paths.INFER: typed.infer(default, pinned=False),
            paths.EXPLAIN: typed.explain(default, pinned=False),
        }
        if default.card.input_kind == "tabular":
            operations[paths.PREDICT_FORM] = typed.form(default)
            operations[paths.PREDICT_STREAM] = typed.stream(default, pinned=False)
        for template, operation in operations.items():
            if operation:
                documented[concrete[template]] = {"post": operation}
        for version, model in sorted(entry.versions.items()):
            pinned = {
                paths.VERSION_PREDICT: typed.predict(model, pinned=True),
                paths.VERSION_INFER: typed.infer(model, pinned=True),
                paths.VERSION_EXPLAIN: typed.explain(model, pinned=True),
            }
            if model.card.input_kind == "tabular":
                pinned[paths.VERSION_PREDICT_STREAM] = typed.stream(model, pinned=True)
            for template, operation in pinned.items():
                if operation:
                    path = concrete[template].replace("{version}", str(version))
                    documented[path] = {"post": operation}
    _drop_unused_body(templates.get(paths.PREDICT_FILE), schemas)
    return document


def _drop_api_key_scheme(document: dict[str, Any]) -> None:
    """With no API key configured the prediction routes are open: say so, rather than document
    a header the server does not ask for."""
    document.get("components", {}).pop("securitySchemes", None)
    for item in document["paths"].values():
        for operation in item.values():
            operation.pop("security", None)


def _drop_unused_body(template: dict[str, Any] | None, schemas: dict[str, Any]) -> None:
    """FastAPI's generated body component for the templated file route (each typed file
    operation has its own schema): with that route undocumented, nothing refers to it."""
    if template is None:
        return
    for content in template.get("requestBody", {}).get("content", {}).values():
        ref = content.get("schema", {}).get("$ref", "")
        schemas.pop(ref.removeprefix("#/components/schemas/"), None)


class _TypedOperations:
    """Builds a model's typed operations from the templated routes' operations."""

    def __init__(
        self,
        templates: dict[str, dict[str, Any]],
        tag: str,
        schemas: dict[str, Any],
        settings: Settings,
    ) -> None:
        self.templates = templates
        self.tag = tag
        self.schemas = schemas
        self.settings = settings

    def _from(self, template: str, operation_id: str, summary: str) -> dict[str, Any]:
        """A copy of the template's operation without its model-name and version parameters
        ({} when the route is not there to copy)."""
        if template not in self.templates:
            return {}
        operation = copy.deepcopy(self.templates[template])
        parameters = [
            p
            for p in operation.get("parameters", [])
            if not (p.get("in") == "path" and p.get("name") in {"model_name", "version"})
        ]
        if parameters:
            operation["parameters"] = parameters
        else:
            operation.pop("parameters", None)
        operation["tags"] = [self.tag]
        operation["operationId"] = operation_id
        operation["summary"] = summary
        return operation

    def _versioned(
        self, model: LoadedModel, *, pinned: bool, templates: tuple[str, str], verb: str
    ) -> dict[str, Any]:
        """The copy of the default route's operation (`templates[0]`) or the pinned-version
        route's (`templates[1]`), named and summarised for `model`."""
        default_path, pinned_path = templates
        if pinned:
            return self._from(
                pinned_path,
                f"model-{model.name}-v{model.version}-{verb}",
                f"{verb.capitalize()} with {model.name} version {model.version} (pinned)",
            )
        return self._from(
            default_path, f"model-{model.name}-{verb}", f"{verb.capitalize()} with {model.name}"
        )

    def predict(self, model: LoadedModel, *, pinned: bool) -> dict[str, Any]:
        """JSON rows: the default version's operation, or a pinned version's."""
        operation = self._versioned(
            model, pinned=pinned, templates=(paths.PREDICT, paths.VERSION_PREDICT), verb="predict"
        )
        if not operation:
            return operation
        operation["description"] = describe_model(model, pinned=pinned)
        request_schema = model.inputs.json_schema(ref_template="#/components/schemas/{model}")
        self.schemas.update(request_schema.pop("$defs", {}))
        request_name = f"{model.inputs.prefix}PredictionRequest"
        self.schemas[request_name] = request_schema
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

    def stream(self, model: LoadedModel, *, pinned: bool) -> dict[str, Any]:
        """A streamed CSV or NDJSON body, answered row by row as it arrives."""
        templates = (paths.PREDICT_STREAM, paths.VERSION_PREDICT_STREAM)
        operation = self._versioned(model, pinned=pinned, templates=templates, verb="stream")
        return fill_stream_operation(operation, model) if operation else operation

    def explain(self, model: LoadedModel, *, pinned: bool) -> dict[str, Any]:
        """Explanations: the same rows as predict, each feature's contribution back."""
        operation = self._versioned(
            model, pinned=pinned, templates=(paths.EXPLAIN, paths.VERSION_EXPLAIN), verb="explain"
        )
        if not operation:
            return operation
        limit = self.settings.explain_max_rows
        return explain_operation(operation, model, self.schemas, max_rows=limit)

    def file(self, model: LoadedModel) -> dict[str, Any]:
        """An uploaded CSV (tabular models) or PNG/JPEG (image models)."""
        operation = self._from(
            paths.PREDICT_FILE,
            f"model-{model.name}-predict-file",
            f"Predict with {model.name} from an uploaded file",
        )
        if not operation:
            return operation
        if model.card.input_kind == "image":
            media = "image/png, image/jpeg"
            what = "A PNG or JPEG image (any size; colour or greyscale)."
        else:
            media = "text/csv"
            names = ", ".join(model.inputs.feature_names)
            what = f"A UTF-8 CSV file whose header row names the features, in any order: {names}."
        operation["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary", "description": what}
                        },
                        "required": ["file"],
                    },
                    "encoding": {"file": {"contentType": media}},
                }
            },
        }
        return operation

    def form(self, model: LoadedModel) -> dict[str, Any]:
        """The model's form: one required field per feature, typed and bounded, pre-filled
        with the card's example so "Try it out" works as is. Needs `predict` to have added the
        model's schemas first."""
        operation = self._from(
            paths.PREDICT_FORM,
            f"model-{model.name}-predict-form",
            f"Predict with {model.name} from form fields",
        )
        record = self.schemas.get(f"{model.inputs.prefix}Record")
        if not operation or record is None:
            return {}
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
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": schema} for media in FORM_MEDIA_TYPES},
        }
        return operation

    def infer(self, model: LoadedModel, *, pinned: bool) -> dict[str, Any]:
        """Open Inference Protocol inference, with what this model takes: its datatypes, at
        most one input per feature, shapes of one or two dimensions, its outputs."""
        operation = self._versioned(
            model, pinned=pinned, templates=(paths.INFER, paths.VERSION_INFER), verb="infer"
        )
        if not operation:
            return operation
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "header" and parameter.get("name") == HEADER_LENGTH:
                # A byte count when sent (FastAPI's optional-header schema also allows null,
                # which no header can carry).
                parameter["schema"] = {
                    "type": "string",
                    "pattern": f"^{HEADER_LENGTH_DIGITS}$",
                    "description": parameter.get("description", ""),
                }
        prefix = model.inputs.prefix
        # The body is read raw (so no parameter declares it): the protocol's request shape,
        # narrowed to this model.
        request = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        protocol = request.pop("$defs")
        tensor = protocol[RequestInput.__name__]
        tensor["properties"]["datatype"]["enum"] = v2_datatypes(model.card)
        # Concrete dimensions, each at least 1: [N], [N, 1] or [N, n_features].
        tensor["properties"]["shape"].update(
            {"items": {"type": "integer", "minimum": 1}, "maxItems": 2}
        )
        outputs = v2_outputs(model)
        output = protocol[RequestOutput.__name__]
        output["properties"]["name"] = {"type": "string", "enum": outputs}
        properties = request["properties"]
        properties["inputs"].update(
            {
                "items": {"$ref": f"#/components/schemas/{prefix}InferenceInput"},
                "maxItems": len(model.card.features),
            }
        )
        for variant in properties["outputs"]["anyOf"]:
            if variant.get("type") == "array":
                variant["items"] = {"$ref": f"#/components/schemas/{prefix}InferenceOutput"}
                variant["maxItems"] = len(outputs)
        for kind, schema in (
            ("InferenceRequest", request),
            ("InferenceInput", tensor),
            ("InferenceOutput", output),
        ):
            schema["title"] = f"{prefix}{kind}"
            self.schemas[f"{prefix}{kind}"] = schema
        content = operation["requestBody"]["content"]
        content["application/json"] = {
            "schema": {"$ref": f"#/components/schemas/{prefix}InferenceRequest"},
            "example": v2_example(model),
        }
        layout = f"{v2_layout(model.card)} Each input's data fills its shape exactly, flat (row-major) or nested."
        operation["description"] = "\n\n".join(
            part for part in (model.card.description, layout) if part
        )
        return operation

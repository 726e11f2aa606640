"""Each model's typed explanation operations in the OpenAPI document (app.http.openapi): its
own request schema (its rows, its class labels) and a response whose contributions name its
features."""

import copy
from typing import Any

from app.serving.explainers import plan
from app.serving.explainers.request import explanation_schema
from app.serving.model import LoadedModel
from schemas.explain import Explanation, ExplanationResponse

_OUTPUTS = {
    "probability": "the probability of the class",
    "margin": "the margin of the class (its log-odds for two classes, its logit for more)",
    "value": "the predicted value",
}
_METHODS = {
    "tree-shap": "exact TreeSHAP (path-dependent, over the trees' training samples)",
    "linear": "exact, for a linear model: each feature's term against its training mean",
    "exact-shapley": "exact Shapley values, enumerating every subset of features",
}


def explain_operation(
    operation: dict[str, Any], model: LoadedModel, schemas: dict[str, Any], *, max_rows: int
) -> dict[str, Any]:
    """`operation` (a copy of the templated route's) typed for `model`, whose requests carry at
    most `max_rows` rows (the service's explanation limit)."""
    prefix = model.inputs.prefix
    request = explanation_schema(model, max_rows).json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas.update(request.pop("$defs", {}))
    schemas[f"{prefix}ExplanationRequest"] = request
    operation["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{prefix}ExplanationRequest"},
                "example": model.inputs.example,
            }
        },
    }
    _add_response_schemas(model, schemas)
    success = operation["responses"]["200"]["content"]["application/json"]
    success["schema"] = {"$ref": f"#/components/schemas/{prefix}ExplanationResponse"}
    planned = plan(model)
    if isinstance(planned, str):
        how = f"This version cannot be explained (501): {planned}."
    else:
        method, output = planned
        how = f"Contributions to {_OUTPUTS[output]}: {_METHODS[method]}."
    operation["description"] = "\n\n".join(
        part
        for part in (
            model.card.description,
            f"Version {model.version}. {how} The base value plus the contributions equals "
            "`output_value`. Rows as for predict: objects keyed by feature name, or arrays in "
            "feature order.",
        )
        if part
    )
    return operation


def _add_response_schemas(model: LoadedModel, schemas: dict[str, Any]) -> None:
    prefix = model.inputs.prefix
    generic = ExplanationResponse.model_json_schema(
        ref_template="#/components/schemas/{model}", by_alias=True
    )
    for name, definition in generic.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    item = copy.deepcopy(schemas[Explanation.__name__])
    names = model.inputs.feature_names
    item["title"] = f"{prefix}Explanation"
    item["properties"]["contributions"] = {
        "type": "object",
        "description": item["properties"]["contributions"].get("description", ""),
        "properties": {name: {"type": "number"} for name in names},
        "required": names,
        "additionalProperties": False,
    }
    classes = model.card.target.classes
    if model.card.task == "classification" and classes:
        item["properties"]["class"] = {
            "enum": list(classes),
            "description": "The class explained.",
        }
        item["required"] = [*item.get("required", []), "class"]
    else:
        item["properties"].pop("class", None)
    schemas[f"{prefix}Explanation"] = item
    generic["title"] = f"{prefix}ExplanationResponse"
    generic["properties"]["explanations"] = {
        "type": "array",
        "items": {"$ref": f"#/components/schemas/{prefix}Explanation"},
    }
    schemas[f"{prefix}ExplanationResponse"] = generic

"""A model's stream operation in the OpenAPI document (app.http.openapi builds the others):
the body's two media types with examples made of the model's own example row, and the reply's
records with the example's real answer."""

import copy
import csv
import io
import json
from typing import Any

from app.serving.model import LoadedModel


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    return repr(value) if isinstance(value, float) else json.dumps(value)


def _summary(model: LoadedModel) -> dict[str, Any]:
    return {
        "summary": {
            "model_name": model.name,
            "model_version": model.version,
            "rows": 1,
            "errors": 0,
            "complete": True,
        }
    }


def fill_stream_operation(operation: dict[str, Any], model: LoadedModel) -> dict[str, Any]:
    """The templated stream operation's copy, with this model's examples."""
    operation = copy.deepcopy(operation)
    names = model.inputs.feature_names
    record = model.inputs.example["instances"][0]
    values = [record[name] for name in names]
    body = operation["requestBody"]["content"]
    body["text/csv"]["example"] = _csv_text([names, values])
    body["application/x-ndjson"]["example"] = json.dumps(record) + "\n" + json.dumps(values) + "\n"
    listed = ", ".join(names)
    operation["description"] = (
        f"{model.card.description}\n\nFeatures (a CSV header names them in any order; an "
        f"NDJSON array lists them in this order): {listed}."
    )
    reply = operation["responses"]["200"]["content"]
    reply.pop("application/json", None)  # FastAPI's default for a 200; a stream never is JSON
    answer = model.example_response
    if answer is None:
        return operation
    item = answer["predictions"][0]
    reply["application/x-ndjson"]["example"] = (
        json.dumps(item) + "\n" + json.dumps(_summary(model)) + "\n"
    )
    labels = list(item.get("probabilities") or {})
    if model.card.target.classes and labels:
        labels = [str(c) for c in model.card.target.classes]
    header = [*names, "prediction", *(f"probability_{label}" for label in labels), "error"]
    predicted = [item.get("label", item.get("value"))]
    predicted += [item["probabilities"][label] for label in labels]
    blank = [""] * (len(header) - 1)
    reply["text/csv"]["example"] = _csv_text(
        [
            header,
            [*(_cell(v) for v in values), *(_cell(v) for v in predicted), ""],
            [*blank, json.dumps(_summary(model), separators=(",", ":"))],
        ]
    )
    return operation

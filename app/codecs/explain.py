"""The explanation surface's codec: `{"instances": [...], "class": ...}` in, one explanation per
row out (docs/api.md, "Explanations")."""

from collections.abc import Callable
from typing import Any

import orjson

from app.serving.dataplane import Decoded, Explained
from app.serving.explainers.request import explanation_schema
from app.serving.model import LoadedModel, ModelOutput, prediction_document


def explain_request(body: bytes, *, max_rows: int) -> Callable[[LoadedModel], Decoded[int | None]]:
    """The decoder of one JSON body: at most `max_rows` rows (fewer where the version's
    explainer caps them), validated against the version's input schema as a prediction's are,
    and the index of the class it names (None: each row's own)."""

    def decode(model: LoadedModel) -> Decoded[int | None]:
        rows, requested = explanation_schema(model, max_rows).validate_json(body)
        return Decoded(rows, requested)

    return decode


def explanation_document(
    model: LoadedModel, output: ModelOutput, explained: Explained
) -> dict[str, Any]:
    """The reply: per row, its prediction (as /predict gives it), the explained class, and
    base value + contributions, which add up to `output_value`."""
    attribution = explained.attribution
    names = model.inputs.feature_names
    predictions = prediction_document(model, output)["predictions"]
    labels: list[Any] | None = None
    if explained.classes is not None:
        labels = [model.card.target.classes[i] for i in explained.classes.tolist()]  # type: ignore[index]
    items = []
    for index, (prediction, base, total, contributions) in enumerate(
        zip(
            predictions,
            attribution.base.tolist(),
            attribution.output.tolist(),
            attribution.contributions.tolist(),
            strict=True,
        )
    ):
        item: dict[str, Any] = {"prediction": prediction}
        if labels is not None:
            item["class"] = labels[index]
        item["base_value"] = base
        item["output_value"] = total
        item["contributions"] = dict(zip(names, contributions, strict=True))
        items.append(item)
    return {
        "model_name": model.name,
        "model_version": model.version,
        "method": explained.explainer.method,
        "output": explained.explainer.output,
        "explanations": items,
    }


def explain_reply(model: LoadedModel, output: ModelOutput, explained: Explained) -> bytes:
    return orjson.dumps(explanation_document(model, output, explained))

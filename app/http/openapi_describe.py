"""The Markdown that describes a model's typed operations in the OpenAPI document (app.http.openapi)."""

from app.serving.model import LoadedModel


def describe_model(model: LoadedModel, *, pinned: bool) -> str:
    """The Markdown description of a model's prediction operation: its version, task, feature
    table (types, allowed values) and the card's metrics, with where they were measured."""
    card = model.card
    which = "Version" if pinned else "Default version"
    lines = [
        f"{card.description}",
        "",
        f"{which}: **{card.version}** ({card.task}). Send rows as objects keyed by feature"
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
        where = card.evaluation
        if where is None:
            lines += ["", f"Held-out metrics: {metrics}."]
        elif where.held_out:
            lines += ["", f"Metrics on {where.rows} held-out rows of {where.data}: {metrics}."]
        else:
            lines += [
                "",
                f"Metrics on all {where.rows} rows of {where.data} (not held out): {metrics}.",
            ]
    return "\n".join(lines)

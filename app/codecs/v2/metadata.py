"""Open Inference Protocol model metadata, and the per-model v2 documentation (datatypes, layout,
examples) that /docs shows.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from app.codecs.v2.protocol import (
    FEATURE_DATATYPE,
    NUMERIC_DTYPES,
    PREDICT,
    PREDICT_PROBA,
    available_outputs,
    has_proba,
    label_datatype,
)
from app.serving.model import LoadedModel
from schemas.cards import FeatureSpec, ModelCard
from schemas.v2 import Datatype, ModelMetadata, TensorMetadata


# -- metadata --------------------------------------------------------------------------------
def model_metadata(model: LoadedModel, versions: list[int]) -> ModelMetadata:
    """The model's V2 metadata: one [-1] input per feature, `predict` and `predict_proba`."""
    card = model.card
    features = card.features
    inputs = [
        TensorMetadata(name=feature.name, datatype=FEATURE_DATATYPE[feature.dtype], shape=[-1])
        for feature in features
    ]
    outputs = [TensorMetadata(name=PREDICT, datatype=label_datatype(card), shape=[-1])]
    if has_proba(model):
        classes = len(card.target.classes or [])
        outputs.append(TensorMetadata(name=PREDICT_PROBA, datatype="FP64", shape=[-1, classes]))
    return ModelMetadata(
        name=model.name,
        versions=[str(version) for version in versions],
        platform="scikit-learn",
        inputs=inputs,
        outputs=outputs,
        parameters={"content": _content_note(features)},
    )


def _content_note(features: list[FeatureSpec]) -> str:
    kinds: set[Literal["float", "int", "category"]] = {feature.dtype for feature in features}
    width = len(features)
    if "category" in kinds and len(kinds) > 1:
        return (
            "Send one [N] tensor per input, named as listed (BYTES for categories); a single "
            "2-D tensor cannot mix strings and numbers"
        )
    datatype = "BYTES" if "category" in kinds else "FP64"
    return (
        f"One [N] tensor per input, named as listed; or a single 2-D [N, {width}] {datatype} "
        "tensor (any name) with the inputs as columns in this order"
    )


# -- documentation ---------------------------------------------------------------------------
def v2_datatypes(card: ModelCard) -> list[Datatype]:
    """The input datatypes some feature of this model takes (BOOL never)."""
    kinds = {feature.dtype == "category" for feature in card.features}
    datatypes: list[Datatype] = []
    if False in kinds:
        datatypes += [datatype for datatype in get_args(Datatype) if datatype in NUMERIC_DTYPES]
    if True in kinds:
        datatypes.append("BYTES")
    return datatypes


def v2_outputs(model: LoadedModel) -> list[str]:
    """The output names a request may ask this model for."""
    return available_outputs(model.card, has_proba(model))


def v2_layout(card: ModelCard) -> str:
    """How a request lays out its inputs for this model, in a sentence (Markdown)."""
    features = card.features
    names = ", ".join(f"`{feature.name}`" for feature in features)
    categories = [feature.name for feature in features if feature.dtype == "category"]
    per_feature = f"one `[N]` tensor per feature, named as the feature: {names}"
    if categories:
        per_feature += " (BYTES for " + ", ".join(f"`{name}`" for name in categories) + ")"
    if len({feature.dtype == "category" for feature in features}) > 1 or len(features) == 1:
        return f"Inputs: {per_feature}."
    return (
        f"Inputs: one 2-D `[N, {len(features)}]` tensor (any name) with the features as columns "
        f"in this order: {names}; or {per_feature}."
    )


def v2_example(model: LoadedModel) -> dict[str, Any]:
    """A valid request for the card's example row: one [1, n] FP64 tensor for an all-numeric
    model, else one [1] tensor per feature (BYTES for categories)."""
    features = model.card.features
    row = model.inputs.example["instances"][0]
    if all(feature.dtype != "category" for feature in features):
        return {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, len(features)],
                    "datatype": "FP64",
                    "data": [row[feature.name] for feature in features],
                }
            ]
        }
    return {
        "inputs": [
            {
                "name": feature.name,
                "shape": [1],
                "datatype": FEATURE_DATATYPE[feature.dtype],
                "data": [row[feature.name]],
            }
            for feature in features
        ]
    }

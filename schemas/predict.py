"""Prediction request and response shapes.

`PredictionRequest` is the generic shape shown for the templated routes; each model's exact
request schema (its feature names, types and bounds) is built from its card at load time by
`app.serving.schema.InputSchema`, and shown in `/docs` under the model's own operation.
"""

from typing import Annotated

from pydantic import BaseModel, Field

from schemas.cards import ClassLabel, FeatureValue

Instance = dict[str, FeatureValue] | list[FeatureValue]


class PredictionRequest(BaseModel):
    instances: Annotated[
        list[Instance],
        Field(
            min_length=1,
            description="Rows to predict: objects keyed by feature name, or arrays in feature order.",
        ),
    ]


class ClassPrediction(BaseModel):
    label: ClassLabel
    probabilities: dict[str, float] | None = Field(
        default=None, description="Class label → probability, when the model has predict_proba."
    )


class ValuePrediction(BaseModel):
    value: float


class PredictionResponse(BaseModel):
    model_name: str
    model_version: int
    predictions: list[ClassPrediction] | list[ValuePrediction]

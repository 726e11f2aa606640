"""Explanation request and response shapes.

`ExplanationRequest` is the generic shape shown for the templated routes; each model's exact
request schema (its rows' features, its class labels) is generated from its card, like a
prediction request's, and shown in `/docs` under the model's own operation.
"""

from typing import Literal

from pydantic import BaseModel, Field

from schemas.cards import ClassLabel
from schemas.predict import ClassPrediction, Instance, ValuePrediction


class ExplanationRequest(BaseModel):
    instances: list[Instance] = Field(
        min_length=1,
        description="Rows to explain, as for /predict: objects keyed by feature name, or arrays in feature order.",
    )
    class_: ClassLabel | None = Field(
        default=None,
        alias="class",
        description="Classifiers: the class whose output is explained (default: each row's predicted class).",
    )


class Explanation(BaseModel):
    prediction: ClassPrediction | ValuePrediction = Field(
        description="The row's prediction, as /predict answers it."
    )
    class_: ClassLabel | None = Field(
        default=None, alias="class", description="Classifiers: the class explained."
    )
    base_value: float = Field(
        description="The output expected without knowing the row (the same for every row of a class)."
    )
    output_value: float = Field(
        description="The explained output for this row: base_value plus the contributions."
    )
    contributions: dict[str, float] = Field(
        description="Feature name → how much its value moves the output from the base value."
    )


class ExplanationResponse(BaseModel):
    model_name: str
    model_version: int
    method: Literal["tree-shap", "linear", "exact-shapley"] = Field(
        description="How the contributions were computed (all exact Shapley values)."
    )
    output: Literal["probability", "margin", "value"] = Field(
        description="What base_value and the contributions add up to: the class's probability, its margin (log-odds; linear models), or the regressor's value."
    )
    explanations: list[Explanation]

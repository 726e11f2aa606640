from pydantic import BaseModel, ConfigDict, Field

from schemas.cards import ClassLabel
from schemas.predict import ClassPrediction, ValuePrediction


class FormOptions(BaseModel):
    """Optional form fields, beside one required field per feature."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Classifiers: how many of the likeliest labels to return.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Binary classifiers: predict the positive class (the second label) when its probability is at least this.",
    )


class RankedLabel(BaseModel):
    label: ClassLabel
    probability: float


class FormClassPrediction(ClassPrediction):
    top: list[RankedLabel] | None = Field(
        default=None,
        description="The top_k likeliest labels, best first (when the model has predict_proba).",
    )
    threshold: float | None = Field(
        default=None,
        description="The threshold applied, if any: `label` is then the class it selects.",
    )


class FormPredictionResponse(BaseModel):
    """The prediction envelope of every surface, with the form's one row: classifiers' items
    carry the form's extras (`top`, `threshold`) beside `label` and `probabilities`."""

    model_name: str
    model_version: int
    predictions: list[FormClassPrediction] | list[ValuePrediction] = Field(
        min_length=1, max_length=1
    )

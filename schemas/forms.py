from pydantic import BaseModel, ConfigDict, Field

from schemas.cards import ClassLabel


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


class FormPredictionResponse(BaseModel):
    model_name: str
    model_version: int
    label: ClassLabel | None = Field(default=None, description="Classifiers: the predicted label.")
    value: float | None = Field(default=None, description="Regressors: the predicted value.")
    top: list[RankedLabel] | None = Field(
        default=None, description="Classifiers: the top_k likeliest labels, best first."
    )
    threshold: float | None = Field(default=None, description="The threshold applied, if any.")

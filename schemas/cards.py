"""The model card: what `models/<name>/<version>/card.json` holds, and the store's traffic file."""

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

FeatureValue = float | int | str
# Strict members so a label keeps its type: 1 stays 1, 1.0 stays 1.0, "1" stays "1".
ClassLabel = StrictBool | StrictInt | StrictFloat | StrictStr

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Column name, as clients send it.")
    dtype: Literal["float", "int", "category"]
    description: str = ""
    categories: list[str] | None = Field(
        default=None, description="Allowed values of a category feature."
    )
    minimum: float | None = Field(
        default=None, allow_inf_nan=False, description="Hard lower bound, enforced."
    )
    maximum: float | None = Field(
        default=None, allow_inf_nan=False, description="Hard upper bound, enforced."
    )
    observed_min: float | None = Field(
        default=None, allow_inf_nan=False, description="Smallest value seen in training."
    )
    observed_max: float | None = Field(
        default=None, allow_inf_nan=False, description="Largest value seen in training."
    )
    observed_mean: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Mean in training: the baseline explanations measure contributions from.",
    )
    observed_frequencies: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = (
        Field(
            default=None,
            description="Share of training rows per category (category features): the baseline of explanations.",
        )
    )

    @model_validator(mode="after")
    def _categories_match_dtype(self) -> Self:
        if self.dtype == "category" and not self.categories:
            raise ValueError(f"feature {self.name!r}: a category feature needs its categories")
        if self.dtype != "category" and self.categories is not None:
            raise ValueError(f"feature {self.name!r}: only category features have categories")
        if self.observed_frequencies is not None and (
            self.categories is None or not set(self.observed_frequencies) <= set(self.categories)
        ):
            raise ValueError(f"feature {self.name!r}: observed_frequencies of unknown categories")
        if self.dtype == "category" and self.observed_mean is not None:
            raise ValueError(f"feature {self.name!r}: a category feature has no mean")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum is above maximum")
        return self


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "target"
    description: str = ""
    classes: list[ClassLabel] | None = Field(
        default=None, description="Class labels in the model's `classes_` order (classifiers)."
    )
    class_names: list[str] | None = Field(
        default=None, description="Human names of the classes, same order, when labels are codes."
    )


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: int = Field(ge=1)
    task: Literal["classification", "regression"]
    description: str = ""
    input_kind: Literal["tabular", "image"] = "tabular"
    image_shape: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None, description="Height and width of image models' input, in pixels."
    )
    features: list[FeatureSpec] = Field(min_length=1)
    target: TargetSpec = Field(default_factory=TargetSpec)
    metrics: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, description="Held-out metrics."
    )
    example: list[FeatureValue] | None = Field(
        default=None, description="One valid row in feature order, shown in the docs."
    )
    sklearn_version: str
    created_at: datetime
    artifact: Literal["model.joblib", "model.skops"] = "model.joblib"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if self.task == "classification" and not self.target.classes:
            raise ValueError("a classification card needs target.classes")
        if self.input_kind == "image":
            if self.image_shape is None:
                raise ValueError("an image model needs image_shape")
            if self.image_shape[0] * self.image_shape[1] != len(self.features):
                raise ValueError("image_shape does not match the number of features")
        if self.example is not None and len(self.example) != len(self.features):
            raise ValueError("example must have one value per feature")
        return self


class TrafficSplit(BaseModel):
    """`models/<name>/traffic.json`: share of unpinned traffic per version, e.g. {"1": 90, "2": 10}."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[PositiveInt, Annotated[float, Field(allow_inf_nan=False)]] = Field(min_length=1)

    @model_validator(mode="after")
    def _positive(self) -> Self:
        if any(weight < 0 for weight in self.weights.values()):
            raise ValueError("traffic weights must not be negative")
        if sum(self.weights.values()) <= 0:
            raise ValueError("traffic weights must add up to more than zero")
        return self

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


class FeatureReference(BaseModel):
    """One feature's distribution in the reference rows (docs/operations.md, "Reference
    statistics", defines the bins exactly, so drift can be measured against them).

    numeric: `edges` are the deduplicated 0, 10, ..., 100th percentiles (at most 11, so at
    most 10 bins); bin i holds edges[i] <= x < edges[i+1], the first bin extends down to
    -inf and the last up to +inf (it also holds x == edges[-1]). A constant feature has one
    edge and one bin. categorical: `categories` in card order, then one share for any other
    value. `fractions` are the shares of the reference rows (missing values left out) in each
    bin, adding up to 1.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["numeric", "categorical"]
    edges: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="Numeric: the bin edges, ascending, no repeats."
    )
    categories: list[str] | None = Field(
        default=None, description="Categorical: the categories the shares follow."
    )
    fractions: list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] = Field(
        min_length=1,
        description="Share of the reference rows in each bin (or category, then other).",
    )

    @model_validator(mode="after")
    def _bins_match(self) -> Self:
        if self.kind == "numeric":
            if not self.edges or self.categories is not None:
                raise ValueError("a numeric reference has edges and no categories")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError("edges must be strictly ascending")
            bins = max(len(self.edges) - 1, 1)
        else:
            if self.categories is None or self.edges is not None:
                raise ValueError("a categorical reference has categories and no edges")
            bins = len(self.categories) + 1
        if len(self.fractions) != bins:
            raise ValueError(f"{bins} bins need {bins} fractions, not {len(self.fractions)}")
        return self


class ReferenceStats(BaseModel):
    """Per-feature distributions of the rows a model was trained (or imported) with: the
    baseline a drift monitor compares live requests against."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=1, description="Reference rows the statistics were computed from.")
    features: dict[str, FeatureReference]


class Evaluation(BaseModel):
    """Which rows the card's metrics were computed on."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="The table (or bundled dataset) the rows came from.")
    rows: int = Field(ge=1, description="Rows scored.")
    held_out: bool = Field(description="Whether the rows were held out by a split.")
    split: str = Field(description="How the rows were chosen, e.g. the split's parameters.")


class ModelSource(BaseModel):
    """Where a version came from."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["bundled", "file", "mlflow"]
    location: str = Field(description="The file, MLflow model directory or bundled dataset.")
    uri: str | None = Field(default=None, description="The MLflow URI given (models:/, runs:/).")
    run_id: str | None = Field(default=None, description="The MLflow run that logged it.")
    registered_model: str | None = Field(default=None, description="MLflow registered model.")
    registered_version: int | None = Field(default=None, description="Its version there.")
    serialization: str | None = Field(
        default=None,
        description="How the source was serialised (joblib, pickle, cloudpickle, skops).",
    )
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the source file."
    )
    note: str | None = Field(
        default=None, description="Why the artifact kept its format, when it was not converted."
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
        default_factory=dict, description="Metrics, on the rows `evaluation` names."
    )
    evaluation: Evaluation | None = None
    example: list[FeatureValue] | None = Field(
        default=None, description="One valid row in feature order, shown in the docs."
    )
    sklearn_version: str = Field(description="scikit-learn version the artifact was made with.")
    python_version: str | None = Field(
        default=None, description="Python it was made with, if known."
    )
    numpy_version: str | None = Field(default=None, description="numpy it was made with, if known.")
    scipy_version: str | None = Field(default=None, description="scipy it was made with, if known.")
    source: ModelSource | None = None
    reference: ReferenceStats | None = Field(
        default=None, description="The training rows' per-feature distributions (drift baseline)."
    )
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
        if self.reference is not None:
            unknown = sorted(set(self.reference.features) - set(names))
            if unknown:
                raise ValueError(f"reference names features not in the card: {unknown}")
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

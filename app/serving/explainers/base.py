"""What every explainer answers, and the baseline it measures contributions from.

An explanation splits one explained output of a row (a regressor's value; a classifier's
probability or margin for one class) into a base value, the same for every row, and one
contribution per feature of the card, such that base + sum(contributions) == output (Shapley
values: the only split that is additive, symmetric and gives a feature the model ignores
nothing).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from app.serving.schema import InputSchema, Rows
from schemas.cards import FeatureSpec, ModelCard

# What the contributions add up to: a classifier's probability of the class (trees, and the
# model-agnostic method), its margin (linear models: the decision function, whose split is
# exact, where a probability's is not), or a regressor's value.
Output = Literal["probability", "margin", "value"]
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Attribution:
    """Rows' explanations: `base[i] + contributions[i].sum() == output[i]`, contributions in
    the card's feature order."""

    base: Array  # (n,)
    contributions: Array  # (n, n_features)

    @property
    def output(self) -> Array:
        total: Array = self.base + self.contributions.sum(axis=1)
        return total


class Explainer(ABC):
    """One model version's explainer: exact Shapley values of its output for validated rows."""

    method: str  # "tree-shap", "linear" or "exact-shapley"
    output: Output
    # Most rows one request may have explained (None: the service's explain limit only).
    max_rows: int | None = None

    @abstractmethod
    def explain(self, rows: Rows, classes: Array | None) -> Attribution:
        """Each row's split of its output for its class (`classes`: one index into the
        estimator's `classes_` per row; None for regressors). CPU-bound: call it off the
        event loop."""


@dataclass(frozen=True)
class Baseline:
    """The reference the model-specific explainers (linear, exact enumeration) measure
    contributions from: each feature's distribution in training, taken as independent. A
    number feature is its training mean (`observed_mean` on the card; 0 where the card has
    none), a category feature its training frequencies (`observed_frequencies`; each category
    alike where the card has none)."""

    values: list[list[Any]]  # per feature, in card order: the values it takes
    weights: list[Array]  # per feature: each value's probability (summing to 1)

    @classmethod
    def of(cls, card: ModelCard) -> Baseline:
        values, weights = [], []
        for feature in card.features:
            feature_values, feature_weights = _distribution(feature)
            values.append(feature_values)
            weights.append(np.asarray(feature_weights, dtype=np.float64))
        return cls(values, weights)

    @property
    def anchor(self) -> tuple[Any, ...]:
        """One row of the baseline: each feature's first value."""
        return tuple(values[0] for values in self.values)

    @property
    def combinations(self) -> int:
        """How many rows the baseline's product distribution has."""
        return int(np.prod([len(values) for values in self.values]))


def _distribution(feature: FeatureSpec) -> tuple[list[Any], list[float]]:
    if feature.dtype != "category":
        mean = 0.0 if feature.observed_mean is None else feature.observed_mean
        return [mean], [1.0]
    assert feature.categories is not None
    frequencies = feature.observed_frequencies or {}
    shares = [frequencies.get(category, 0.0) for category in feature.categories]
    if sum(shares) <= 0:
        shares = [1.0] * len(feature.categories)
    total = sum(shares)
    kept = [(c, s / total) for c, s in zip(feature.categories, shares, strict=True) if s > 0]
    return [c for c, _ in kept], [s for _, s in kept]


def model_input(inputs: InputSchema, table: Array) -> Any:
    """The estimator's input for rows that mix a request's values with baseline ones (`table`:
    an object array, card feature order). Numbers go in as float64 even for int features (a
    baseline mean is no integer), which every numeric scikit-learn step takes."""
    if inputs.frame_columns is None:
        return table.astype(np.float64) if inputs.numeric else table
    columns = {
        feature.name: table[:, index].astype(object if feature.dtype == "category" else np.float64)
        for index, feature in enumerate(inputs.card.features)
    }
    return pd.DataFrame({name: columns[name] for name in inputs.frame_columns})


def row_table(rows: Rows) -> Array:
    """Validated rows as an object array (n, n_features)."""
    if isinstance(rows, np.ndarray):
        return rows.astype(object)
    table = np.empty((len(rows), len(rows[0])), dtype=object)
    table[:] = rows
    return table

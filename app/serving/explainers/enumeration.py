"""Exact Shapley values for any model with few features, by enumerating feature subsets.

The value of a subset S of features is the model's expected output when the features in S
take the row's values and the others are drawn from the baseline (app.serving.explainers.base:
training means and category frequencies, independent): `v(S) = E_b[f(x_S, b_-S)]`. Every
subset's value is computed, 2^n of them, each over the baseline's combinations, in one model
call; Shapley's formula then weighs the differences. Exact, and for every estimator, but the
cost doubles with each feature: models with more than MAX_FEATURES features get a 501, and a
request's rows are capped so it calls the model on at most MAX_EVALUATIONS rows.
"""

from __future__ import annotations

from math import factorial
from typing import Any

import numpy as np

from app.serving.explainers.base import (
    Array,
    Attribution,
    Baseline,
    Explainer,
    Output,
    model_input,
    row_table,
)
from app.serving.schema import InputSchema, Rows

MAX_FEATURES = 10
MAX_EVALUATIONS = 1 << 16  # model rows per request


def enumeration_reason(inputs: InputSchema) -> str | None:
    """Why subsets cannot be enumerated for this model, or None when they can."""
    n = len(inputs.feature_names)
    if n > MAX_FEATURES:
        return f"{n} features (exact enumeration of feature subsets stops at {MAX_FEATURES})"
    combinations = Baseline.of(inputs.card).combinations
    if (1 << n) * combinations > MAX_EVALUATIONS:
        return f"{2**n} feature subsets × {combinations} baseline rows to enumerate, over {MAX_EVALUATIONS}"
    return None


class EnumerationExplainer(Explainer):
    method = "exact-shapley"

    def __init__(self, estimator: Any, inputs: InputSchema, *, classifier: bool) -> None:
        self.estimator = estimator
        self.inputs = inputs
        self.classifier = classifier
        self.has_probabilities = classifier and hasattr(estimator, "predict_proba")
        self.output: Output = (
            "probability" if self.has_probabilities else "margin" if classifier else "value"
        )
        baseline = Baseline.of(inputs.card)
        n = len(inputs.feature_names)
        self.n = n
        # The baseline's product distribution: every combination of values, with its weight.
        grids = np.meshgrid(*[np.arange(len(values)) for values in baseline.values], indexing="ij")
        picks = np.stack([grid.ravel() for grid in grids], axis=1)  # (combinations, n)
        self.background = np.empty(picks.shape, dtype=object)
        self.background_weight = np.ones(len(picks))
        for index in range(n):
            values = np.empty(len(baseline.values[index]), dtype=object)
            values[:] = baseline.values[index]
            self.background[:, index] = values[picks[:, index]]
            self.background_weight *= baseline.weights[index][picks[:, index]]
        masks = np.arange(1 << n)
        self.known = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)  # (2^n, n)
        sizes = self.known.sum(axis=1)
        # Shapley's weight of a subset of size s not holding the feature: s! (n - s - 1)! / n!
        self.weight = np.array(
            [factorial(s) * factorial(n - s - 1) / factorial(n) if s < n else 0.0 for s in sizes]
        )
        self.max_rows = max(1, MAX_EVALUATIONS // (len(masks) * len(picks)))  # as row_limit

    def _outputs(self, table: Array) -> Array:
        """(rows, outputs): probabilities, margins (two classes: class 1's log-odds and its
        negative) or values."""
        x = model_input(self.inputs, table)
        with np.errstate(all="ignore"):
            if self.has_probabilities:
                return np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
            if not self.classifier:
                return np.asarray(self.estimator.predict(x), dtype=np.float64).reshape(-1, 1)
            scores = np.asarray(self.estimator.decision_function(x), dtype=np.float64)
        return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores

    def explain(self, rows: Rows, classes: Array | None) -> Attribution:
        table = row_table(rows)
        count = len(table)
        subsets, combinations = len(self.known), len(self.background)
        # For each row, subset and baseline combination: the row's values where known.
        hybrid = np.broadcast_to(
            self.background[None, None], (count, subsets, combinations, self.n)
        ).copy()
        chosen = np.broadcast_to(table[:, None, None, :], hybrid.shape)
        known = np.broadcast_to(self.known[None, :, None, :], hybrid.shape)
        hybrid[known] = chosen[known]
        outputs = self._outputs(hybrid.reshape(-1, self.n))
        outputs = outputs.reshape(count, subsets, combinations, -1)
        column = np.zeros(count, dtype=np.intp) if classes is None else np.asarray(classes)
        picked = outputs[np.arange(count), :, :, column]  # (count, subsets, combinations)
        value = picked @ self.background_weight  # (count, subsets): v(S)
        contributions = np.empty((count, self.n))
        masks = np.arange(subsets)
        for index in range(self.n):
            without = masks[~self.known[:, index]]
            gain = value[:, without | (1 << index)] - value[:, without]
            contributions[:, index] = gain @ self.weight[without]
        return Attribution(value[:, 0], contributions)

"""Exact explanations of linear models, alone or after per-feature preprocessing.

A linear model behind steps that each transform a feature on its own (scalers, one-hot
encoding, a ColumnTransformer of those) is a sum of one term per original feature:
`f(x) = b + g_1(x_1) + ... + g_n(x_n)`. With features independent and distributed as the
baseline, feature i's Shapley value is its own term against the term's expectation,
`g_i(x_i) - E[g_i]`, and the base value is `E[f]`: one-hot columns and scaled columns come
back summed onto the feature they were made from. The terms are read from the model itself:
`g_i(x_i) - g_i(a_i) = f(x_i, a_-i) - f(a)` for any fixed row `a`, so one call on n rows per
explained row gives every contribution, whatever the steps' arithmetic.

The explained output is the model's margin (its decision function: the log-odds of the class
for two classes, the class's softmax logit for more), where the split is exact; a probability
passes the margin through a sigmoid or softmax, which no per-feature sum reproduces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    RobustScaler,
    StandardScaler,
)
from sklearn.svm import LinearSVC, LinearSVR

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

LINEAR = (
    LinearRegression,
    Ridge,
    Lasso,
    ElasticNet,
    SGDRegressor,
    LinearSVR,
    LogisticRegression,
    RidgeClassifier,
    SGDClassifier,
    LinearSVC,
)
# Steps that transform each feature on its own, so the sum over features survives them.
_PER_FEATURE = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, OneHotEncoder)


def is_additive(estimator: Any) -> bool:
    """Whether the estimator is a linear model behind per-feature steps only (exact types: a
    subclass may change the arithmetic)."""
    if type(estimator) is Pipeline:
        *head, (_, last) = estimator.steps
        return type(last) in LINEAR and all(_per_feature(step) for _, step in head)
    return type(estimator) in LINEAR


def _per_feature(step: Any) -> bool:
    if step is None or isinstance(step, str) and step == "passthrough":
        return True
    if type(step) is ColumnTransformer:
        # Each output column of a ColumnTransformer comes from its own input columns; weights
        # scale whole blocks and so keep the sum.
        return all(
            isinstance(trans, str) and trans == "drop" or _per_feature(trans) or _identity(trans)
            for _, trans, _ in step.transformers_
        )
    return type(step) in _PER_FEATURE


def _identity(step: Any) -> bool:
    # ColumnTransformer keeps "passthrough" columns as this identity FunctionTransformer.
    return type(step) is FunctionTransformer and step.func is None


class LinearExplainer(Explainer):
    method = "linear"

    def __init__(self, estimator: Any, inputs: InputSchema, *, classifier: bool) -> None:
        self.estimator = estimator
        self.inputs = inputs
        self.output: Output = "margin" if classifier else "value"
        self.classifier = classifier
        self.baseline = baseline = Baseline.of(inputs.card)
        n = len(inputs.feature_names)
        anchor = np.array([baseline.anchor], dtype=object)
        # Each feature's expected term relative to the anchor row: E[f(X_i, a_-i)] - f(a).
        probes = [anchor]
        for index in range(n):
            varied = np.repeat(anchor, len(baseline.values[index]), axis=0)
            varied[:, index] = baseline.values[index]
            probes.append(varied)
        scores = self._scores(np.concatenate(probes))
        self.anchor_score = scores[0]
        offsets = np.cumsum([1] + [len(v) for v in baseline.values])
        self.expected = np.stack(
            [
                weights @ scores[start:stop] - scores[0]
                for weights, start, stop in zip(
                    baseline.weights, offsets[:-1], offsets[1:], strict=True
                )
            ]
        )  # (n, outputs): E[g_i] - g_i(a_i)
        self.anchor = anchor

    def _scores(self, table: Array) -> Array:
        """The margin of every class (two classes: the log-odds of `classes_[1]` and its
        negative), or the value, for each row: (n, outputs)."""
        x = model_input(self.inputs, table)
        with np.errstate(all="ignore"):
            if not self.classifier:
                return np.asarray(self.estimator.predict(x), dtype=np.float64).reshape(-1, 1)
            scores = np.asarray(self.estimator.decision_function(x), dtype=np.float64)
        if scores.ndim == 1:
            return np.stack([-scores, scores], axis=1)
        return scores

    def explain(self, rows: Rows, classes: Array | None) -> Attribution:
        table = row_table(rows)
        count, n = table.shape
        # Row r's block of n rows: the anchor with feature i set to row r's value, for each i.
        hybrid = np.repeat(np.tile(self.anchor, (n, 1))[None], count, axis=0)
        features = np.arange(n)
        hybrid[:, features, features] = table
        scores = self._scores(hybrid.reshape(count * n, n)).reshape(count, n, -1)
        column = np.zeros(count, dtype=np.intp) if classes is None else classes
        picked = scores[np.arange(count), :, column]  # (count, n)
        expected = self.expected[:, column].T  # (count, n)
        contributions = picked - self.anchor_score[column][:, None] - expected
        base = self.anchor_score[column] + expected.sum(axis=1)
        return Attribution(base, contributions)

"""Exact TreeSHAP for decision trees, random forests, extra trees and gradient boosting.

Path-dependent TreeSHAP (Lundberg et al., 2020): the expected output when only the features in
S are known follows each tree down the known features' branches and averages over the unknown
ones' by the training samples each branch saw (`weighted_n_node_samples`). A leaf then weighs
in with `prod_j (o_j if j in S else z_j)` over the distinct features on its path, where `z_j`
is the share of samples that took the path's branches on feature j and `o_j` is 1 when the row
takes them too. Feature i's Shapley value from that leaf is

    v * (o_i - z_i) * sum_S |S|! (m - 1 - |S|)! / m! * prod_{j in S} o_j prod_{j not in S, j != i} z_j

and since `k! (m - 1 - k)! / m!` is the integral of `t^k (1 - t)^(m - 1 - k)` over [0, 1], the
sum over S is the integral of `prod_{j != i} (z_j (1 - t) + o_j t)`: a polynomial of degree
m - 1, which Gauss-Legendre quadrature with ceil(m / 2) nodes integrates exactly. So every
leaf of every tree is evaluated at once with a few numpy operations on (path, node, leaf)
arrays, and the result equals the classic recursive algorithm (and the `shap` package's) to
rounding (docs/explanations.md has the comparison).

The explained output is what the ensemble averages or sums: class probabilities for trees and
forests (leaf values are class fractions), values for regressors, and for gradient boosting
the raw margin (log-odds, or per-class logits) its loss turns into probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from app.serving.explainers.base import Array, Attribution, Explainer, Output
from app.serving.schema import InputSchema, Rows

FORESTS = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
SINGLE = (DecisionTreeClassifier, DecisionTreeRegressor)
BOOSTED = (GradientBoostingClassifier, GradientBoostingRegressor)
TREE_TYPES = FORESTS + SINGLE + BOOSTED
# Rows explained in one pass: the arrays are (rows, path, node, leaf); this bounds their size.
_CHUNK_CELLS = 4_000_000


def tree_reason(estimator: Any) -> str | None:
    """Why TreeSHAP cannot explain this tree model, or None when it can."""
    label = type(estimator).__name__
    if getattr(estimator, "n_outputs_", 1) != 1:
        return f"{label} with several outputs"
    if type(estimator) in BOOSTED:
        init = estimator.init_
        if not (init == "zero" or type(init) in (DummyClassifier, DummyRegressor)):
            return f"{label} with init={type(init).__name__}"
    return None


class TreeExplainer(Explainer):
    method = "tree-shap"

    def __init__(self, estimator: Any, inputs: InputSchema) -> None:
        kind = type(estimator)
        self.inputs = inputs
        classifier = hasattr(estimator, "classes_")
        if kind in BOOSTED:
            self.output: Output = "margin" if classifier else "value"
            stages = estimator.estimators_  # (stages, K): one regression tree per class
            rate = float(estimator.learning_rate)
            trees: list[tuple[Any, float, int | None]] = [
                (tree.tree_, rate, k) for row in stages for k, tree in enumerate(row)
            ]
            start = np.asarray(
                estimator._raw_predict_init(np.zeros((1, estimator.n_features_in_), np.float32)),
                dtype=np.float64,
            )[0]
            outputs = stages.shape[1]
        else:
            self.output = "probability" if classifier else "value"
            members = estimator.estimators_ if kind in FORESTS else [estimator]
            trees = [(tree.tree_, 1 / len(members), None) for tree in members]
            outputs = members[0].tree_.value.shape[2]
            start = np.zeros(outputs)
        # Two classes boosted into one margin (the log-odds of classes_[1]): class 0's is its
        # negative.
        self.negated_binary = kind is GradientBoostingClassifier and outputs == 1
        self.n_features = estimator.n_features_in_
        self._compile(trees, outputs, start)
        # The card's features in the estimator's column order (fitted on a DataFrame: by name).
        names = inputs.feature_names
        columns = inputs.frame_columns or names
        self.card_order = np.array([columns.index(name) for name in names], dtype=np.intp)

    def _compile(
        self, trees: list[tuple[Any, float, int | None]], outputs: int, start: Array
    ) -> None:
        paths = [
            (conditions, weight * _leaf_values(tree, leaf, column, outputs))
            for tree, weight, column in trees
            for leaf, conditions in _leaf_paths(tree)
        ]
        depth = max((len(conditions) for conditions, _ in paths), default=0) or 1
        leaves = len(paths)
        # Padding is the factor 1: z = 1 and the row always "takes" it (o = 1, lo < x <= hi).
        feature = np.zeros((depth, leaves), np.intp)
        low = np.full((depth, leaves), -np.inf)
        high = np.full((depth, leaves), np.inf)
        zero = np.ones((depth, leaves))
        value = np.zeros((outputs, leaves))
        for index, (conditions, leaf_value) in enumerate(paths):
            for position, (f, (lo, hi, z)) in enumerate(conditions.items()):
                feature[position, index], low[position, index] = f, lo
                high[position, index], zero[position, index] = hi, z
            value[:, index] = leaf_value
        nodes, weights = np.polynomial.legendre.leggauss((depth + 1) // 2)
        t = ((nodes + 1) / 2)[:, None]  # (q, 1): [-1, 1] mapped onto [0, 1]
        self.t, self.quadrature = t, (weights / 2)[:, None]
        self.feature, self.low, self.high, self.zero, self.value = feature, low, high, zero, value
        self.zero_part = zero[:, None, :] * (1 - t)  # (depth, q, leaves)
        self.base = start + value @ np.prod(zero, axis=0)  # (outputs,)

    def explain(self, rows: Rows, classes: Array | None) -> Attribution:
        x = np.asarray(self.inputs.to_model_input(rows), dtype=np.float64)
        # Trees compare float32 values (promoted back to float64) with their thresholds.
        x = x.astype(np.float32).astype(np.float64)
        count = len(x)
        column = np.zeros(count, dtype=np.intp) if classes is None else np.asarray(classes)
        sign = np.ones(count)
        if self.negated_binary:
            sign = np.where(column == 0, -1.0, 1.0)
            column = np.zeros(count, dtype=np.intp)
        contributions = np.empty((count, self.n_features))
        depth, leaves = self.feature.shape
        chunk = max(1, _CHUNK_CELLS // (depth * len(self.t) * leaves))
        for start in range(0, count, chunk):
            stop = min(count, start + chunk)
            contributions[start:stop] = self._shap(x[start:stop], column[start:stop])
        base = self.base[column] * sign
        return Attribution(base, contributions[:, self.card_order] * sign[:, None])

    def _shap(self, x: Array, column: Array) -> Array:
        count = len(x)
        cells = x[:, self.feature]  # (rows, depth, leaves)
        takes = (self.low < cells) & (cells <= self.high)
        factors = self.zero_part + takes[:, :, None, :] * self.t  # (rows, depth, q, leaves)
        product = np.prod(factors, axis=1) * self.quadrature  # (rows, q, leaves)
        integral = (product[:, None] / factors).sum(axis=2)  # (rows, depth, leaves)
        share = (takes - self.zero) * integral * self.value[column][:, None, :]
        flat = (self.feature[None] + self.n_features * np.arange(count)[:, None, None]).ravel()
        summed = np.bincount(flat, share.ravel(), minlength=count * self.n_features)
        return summed.reshape(count, self.n_features)


def _leaf_values(tree: Any, leaf: int, column: int | None, outputs: int) -> Array:
    value = np.asarray(tree.value[leaf, 0, :], dtype=np.float64)
    if column is None:
        return value
    spread = np.zeros(outputs)  # gradient boosting: this tree adds to one class's margin
    spread[column] = value[0]
    return spread


def _leaf_paths(tree: Any) -> list[tuple[int, dict[int, tuple[float, float, float]]]]:
    """Each leaf, with the conditions on its path merged per feature: the interval (lo, hi]
    a row's value must fall in to follow the path, and the share of training samples that
    did (the product of the path's branch shares on that feature)."""
    left, right = tree.children_left, tree.children_right
    feature, threshold = tree.feature, tree.threshold
    samples = tree.weighted_n_node_samples
    found = []
    stack: list[tuple[int, dict[int, tuple[float, float, float]]]] = [(0, {})]
    while stack:
        node, conditions = stack.pop()
        if left[node] == -1:
            found.append((node, conditions))
            continue
        f, split = int(feature[node]), float(threshold[node])
        for child, goes_left in ((left[node], True), (right[node], False)):
            lo, hi, z = conditions.get(f, (-np.inf, np.inf, 1.0))
            if goes_left:
                hi = min(hi, split)
            else:
                lo = max(lo, split)
            share = samples[child] / samples[node]
            stack.append((child, {**conditions, f: (lo, hi, z * share)}))
    return found

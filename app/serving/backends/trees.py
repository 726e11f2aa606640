"""Decision trees, random forests, extra trees and gradient boosting, in sklearn's order.

What sklearn 1.9.1 does (tree/_tree.pyx, ensemble/_forest.py, ensemble/_gb.py and
_gradient_boosting.pyx), and what is repeated here:
  * X is converted to float32 first; a node sends a row left when the float32 value,
    promoted to double, is <= the float64 threshold. Promoting the float32 values to
    float64 once and comparing in float64 is the same comparison.
  * A tree's value rows are already class fractions (no normalisation at predict time).
  * Forests: zeros, then `+=` each tree's value row in tree order, then `/= n_trees`;
    classifiers predict classes_.take(argmax(proba)). With n_jobs other than 1, trees
    are added in thread-completion order, so sklearn itself is not reproducible: refused.
  * Gradient boosting: the init estimator's raw prediction, then for each stage and
    class `raw[:, k] += learning_rate * value` (a double product, then the add), then
    the loss: classifiers `raw >= 0` or argmax, `_loss.predict_proba(raw)`.
Sums are taken with np.add.accumulate along the tree axis, which adds strictly left to
right, as the sequential `+=` does (np.sum would add pairwise and round differently).

Two strategies, same arithmetic, chosen by the cost model below: few rows walk every
tree at once (flat.py); many rows use sklearn's compiled walks (each tree's
`tree_.apply`, or for gradient boosting sklearn's own `predict_stages`) without
joblib and validation, so no batch size is slower than sklearn: Evaluator.max_rows is
None.
"""

from collections.abc import Callable
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
from sklearn.ensemble._gradient_boosting import predict_stages
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from app.serving.backends.evaluator import Array, Evaluator, all_finite, plain_float64
from app.serving.backends.flat import FlatTrees, flatten

NAME = "numpy-trees"
FORESTS = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor)
SINGLE = (DecisionTreeClassifier, DecisionTreeRegressor)
BOOSTED = (GradientBoostingClassifier, GradientBoostingRegressor)
CLASSIFIERS = (
    DecisionTreeClassifier,
    RandomForestClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
)

# Cost model in microseconds, measured on the 2-core box with timeit (100-tree forest of
# depth 11 on load_breast_cancer, 100-stage gradient boosting of depth 3): a numpy walk
# level costs ~12 plus ~0.006 per (row, tree) pair; a compiled per-tree call costs ~3
# (~0.6 inside `predict_stages`) plus ~0.0015 per (row, level). Whichever is cheaper runs.
FLAT_LEVEL_US, FLAT_PAIR_US = 12.0, 0.006
TREE_CALL_US, STAGE_CALL_US, TREE_STEP_US = 3.0, 0.6, 0.0015


def flat_walk_is_cheaper(rows: int, trees: int, depth: int, call_us: float) -> bool:
    flat = depth * (FLAT_LEVEL_US + FLAT_PAIR_US * rows * trees)
    per_tree = trees * (call_us + TREE_STEP_US * rows * depth)
    return flat < per_tree


def compile_trees(estimator: Any) -> Evaluator | str:
    kind = type(estimator)
    label = kind.__name__
    if hasattr(estimator, "feature_names_in_"):
        return f"{label} fitted on a DataFrame: no fast evaluator"
    if getattr(estimator, "n_outputs_", 1) != 1:
        return f"{label} with several outputs: no fast evaluator"
    if kind in FORESTS and estimator.n_jobs not in (None, 1):
        return f"{label} with n_jobs={estimator.n_jobs}: sklearn adds trees in thread order"
    if kind in BOOSTED:
        trees = [t.tree_ for t in estimator.estimators_.ravel()]
    elif kind in FORESTS:
        trees = [t.tree_ for t in estimator.estimators_]
    else:
        trees = [estimator.tree_]
    flat = flatten(
        [t.feature for t in trees],
        [t.threshold for t in trees],
        [t.children_left for t in trees],
        [t.children_right for t in trees],
        [t.children_left == -1 for t in trees],
        depth=max(t.max_depth for t in trees),
    )
    values = [np.ascontiguousarray(t.value[:, 0, :]) for t in trees]  # (nodes, k)
    node_value = np.concatenate(values)
    n_features = estimator.n_features_in_
    if kind in BOOSTED:
        raw = _boosted_raw(estimator, flat, node_value[:, 0])
        if isinstance(raw, str):
            return raw
        return _boosted(estimator, raw, n_features)

    def output(x32: Array) -> Array:
        """Per-class (or single regression) output before argmax: (n, k)."""
        n = x32.shape[0]
        if flat_walk_is_cheaper(n, len(trees), flat.depth, TREE_CALL_US):
            found = node_value.take(flat.leaves(x32.astype(np.float64)), axis=0)
            return found[:, 0] if kind in SINGLE else _forest_mean(found)
        if kind in SINGLE:
            return np.asarray(values[0].take(trees[0].apply(x32), axis=0))
        total = np.zeros((n, node_value.shape[1]))
        for tree, value in zip(trees, values, strict=True):
            total += value.take(tree.apply(x32), axis=0)
        total /= len(trees)
        return total

    return _tree_evaluator(estimator, output, n_features)


def _forest_mean(v: Array) -> Array:
    # v: (n, trees, k). sklearn: out = zeros; out += tree_i for i in order; out /= trees.
    n, trees, k = v.shape
    staged = np.concatenate([np.zeros((n, 1, k)), v], axis=1)
    total = np.add.accumulate(staged, axis=1)[:, -1]
    total /= trees
    return total


def _gate32(x: Any, n_features: int) -> Array | None:
    """float32 C-ordered input as sklearn's validation makes it, or None: let sklearn answer."""
    if not plain_float64(x, n_features):
        return None
    # Quietly: on overflow sklearn repeats this cast and gives its own warning and error.
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    # Values too large for float32 become inf and sklearn refuses them; NaN is sklearn's
    # business too (accepted or refused depending on how the tree was fitted).
    return x32 if all_finite(x32) else None


def _tree_evaluator(estimator: Any, output: Callable[[Array], Array], n_features: int) -> Evaluator:
    classifier = type(estimator) in CLASSIFIERS
    classes = estimator.classes_ if classifier else None

    def predict(x: Any) -> Array:
        x32 = _gate32(x, n_features)
        if x32 is None:
            return np.asarray(estimator.predict(x))
        out = output(x32)
        if classes is None:
            return out[:, 0]
        return np.asarray(classes.take(np.argmax(out, axis=1), axis=0))

    def predict_proba(x: Any) -> Array:
        x32 = _gate32(x, n_features)
        if x32 is None:
            return np.asarray(estimator.predict_proba(x))
        return output(x32)

    return Evaluator(NAME, predict, predict_proba if classifier else None)


def _boosted_raw(
    estimator: Any, flat: FlatTrees, leaf_value: Array
) -> Callable[[Array], Array] | str:
    """The C-ordered (n, K) raw prediction, as `_raw_predict` computes it."""
    init = estimator.init_
    stages = estimator.estimators_
    n_stages, k = stages.shape
    if isinstance(init, str) and init == "zero":
        start = np.zeros((1, k))
    elif type(init) in (DummyClassifier, DummyRegressor):
        # A dummy init ignores X's values, so one row's start is every row's start.
        start = np.asarray(
            estimator._raw_predict_init(np.zeros((1, n_features(estimator)), np.float32))
        )
    else:
        return f"{type(estimator).__name__} with init={type(init).__name__}: no fast evaluator"
    rate = float(estimator.learning_rate)

    def raw(x32: Array) -> Array:
        n = x32.shape[0]
        if not flat_walk_is_cheaper(n, n_stages * k, flat.depth, STAGE_CALL_US):
            # sklearn's own compiled stage loop, on sklearn's own starting point.
            out = np.repeat(start, n, axis=0)
            predict_stages(stages, x32, rate, out)
            return out
        scaled = rate * leaf_value.take(flat.leaves(x32.astype(np.float64)))
        staged = np.empty((n, n_stages + 1, k))
        staged[:, 0, :] = start
        staged[:, 1:, :] = scaled.reshape(n, n_stages, k)
        return np.ascontiguousarray(np.add.accumulate(staged, axis=1)[:, -1])

    return raw


def n_features(estimator: Any) -> int:
    return int(estimator.n_features_in_)


def _boosted(estimator: Any, raw: Callable[[Array], Array], n_features: int) -> Evaluator:
    if type(estimator) is GradientBoostingRegressor:

        def predict_regression(x: Any) -> Array:
            x32 = _gate32(x, n_features)
            if x32 is None:
                return np.asarray(estimator.predict(x))
            return raw(x32).ravel()

        return Evaluator(NAME, predict_regression, None)

    classes = estimator.classes_
    loss = estimator._loss

    def decision(x32: Array) -> Array:
        r = raw(x32)
        return r.ravel() if r.shape[1] == 1 else r

    def predict(x: Any) -> Array:
        x32 = _gate32(x, n_features)
        if x32 is None:
            return np.asarray(estimator.predict(x))
        r = decision(x32)
        encoded = (r >= 0).astype(int) if r.ndim == 1 else np.argmax(r, axis=1)
        return np.asarray(classes[encoded])

    def predict_proba(x: Any) -> Array:
        x32 = _gate32(x, n_features)
        if x32 is None:
            return np.asarray(estimator.predict_proba(x))
        return np.asarray(loss.predict_proba(decision(x32)))

    return Evaluator(NAME, predict, predict_proba)

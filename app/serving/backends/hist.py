"""HistGradientBoosting, from its predictor arrays, in sklearn 1.9.1's order.

From ensemble/_hist_gradient_boosting (gradient_boosting.py, _predictor.pyx): prediction
on raw (unbinned) float64 X, no float32 conversion and no finiteness check; a node sends
a row left when X <= num_threshold, and a NaN goes where missing_go_to_left says. The
raw prediction starts as zeros (F-ordered, n x K) plus `_baseline_prediction`, then for
each iteration and class `raw[:, k] += leaf value`; then `_loss.link.inverse(raw.ravel())`
(regression), `raw > 0` or argmax (classes), `_loss.predict_proba(raw)` (probabilities).
Categorical splits (bitsets) are not reproduced: such models get a reason.

Large batches go to the estimator itself: its OpenMP walk is faster than numpy past the
cost-model crossover in trees.py, and then only validation separates the two.
"""

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from app.serving.backends.evaluator import Array, Evaluator, plain_float64
from app.serving.backends.flat import flatten
from app.serving.backends.trees import NAME, flat_walk_is_cheaper

HIST = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)

# sklearn's cost per predictor per call, measured with timeit on the 2-core box (100
# iterations of depth 17 on load_breast_cancer: ~33 us a predictor for one row, mostly
# OpenMP start-up and the per-call bitset set-up), in the cost model of trees.py.
HIST_CALL_US = 30.0


def compile_hist(estimator: Any) -> Evaluator | str:
    label = type(estimator).__name__
    if hasattr(estimator, "feature_names_in_"):
        return f"{label} fitted on a DataFrame: no fast evaluator"
    if estimator._preprocessor is not None or estimator.is_categorical_ is not None:
        return f"{label} with categorical features: no fast evaluator"
    nodes = [p.nodes for iteration in estimator._predictors for p in iteration]
    if any(n["is_categorical"].any() for n in nodes):
        return f"{label} with categorical splits: no fast evaluator"
    n_iter = len(estimator._predictors)
    k = estimator.n_trees_per_iteration_
    flat = flatten(
        [n["feature_idx"] for n in nodes],
        [n["num_threshold"] for n in nodes],
        [n["left"] for n in nodes],
        [n["right"] for n in nodes],
        [n["is_leaf"] for n in nodes],
        depth=max(int(n["depth"].max()) for n in nodes),
        nan_right=[n["missing_go_to_left"] == 0 for n in nodes],
    )
    leaf_value = np.concatenate([n["value"] for n in nodes]).astype(np.float64)
    baseline = np.asarray(estimator._baseline_prediction)
    start = np.zeros((1, k), dtype=baseline.dtype)
    start += baseline
    n_features = estimator.n_features_in_
    loss = estimator._loss

    def fast(x: Any) -> bool:
        return plain_float64(x, n_features) and flat_walk_is_cheaper(
            x.shape[0], len(nodes), flat.depth, HIST_CALL_US
        )

    def raw(x: Array) -> Array:
        n = x.shape[0]
        x = np.ascontiguousarray(x)
        staged = np.empty((n, n_iter + 1, k))
        staged[:, 0, :] = start
        staged[:, 1:, :] = leaf_value.take(flat.leaves(x)).reshape(n, n_iter, k)
        return np.asfortranarray(np.add.accumulate(staged, axis=1)[:, -1])

    if type(estimator) is HistGradientBoostingRegressor:

        def predict_regression(x: Any) -> Array:
            if not fast(x):
                return np.asarray(estimator.predict(x))
            return np.asarray(loss.link.inverse(raw(x).ravel()))

        return Evaluator(NAME, predict_regression, None)

    classes = estimator.classes_

    def predict(x: Any) -> Array:
        if not fast(x):
            return np.asarray(estimator.predict(x))
        r = raw(x)
        encoded = (r.ravel() > 0).astype(int) if r.shape[1] == 1 else np.argmax(r, axis=1)
        return np.asarray(classes[encoded])

    def proba(x: Any) -> Array:
        if not fast(x):
            return np.asarray(estimator.predict_proba(x))
        return np.asarray(loss.predict_proba(raw(x)))

    return Evaluator(NAME, predict, proba)

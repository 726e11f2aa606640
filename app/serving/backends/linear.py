"""Linear models (and pipelines ending in one) evaluated with sklearn 1.9.1's operations.

sklearn's own order, from linear_model/_base.py and _logistic.py:
  regression      X @ coef_ + intercept_ (1-D coef_) or X @ coef_.T + intercept_
  classification  scores = X @ coef_.T + intercept_, a single column flattened;
                  predict: classes_.take(scores > 0) or classes_.take(argmax(scores));
                  binary proba: p = expit(scores) in place, stack([1 - p, p], axis=1);
                  multinomial proba: utils.extmath.softmax in place (subtract the row max,
                  exp, divide by the row sum).
The product is computed on an array of the same shape, dtype and layout as sklearn's, so
BLAS takes the same kernel (a dot product's rounding depends on which one).
"""

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit  # type: ignore[import-untyped]
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline

from app.serving.backends.evaluator import Array, Evaluator, all_finite, plain_float64
from app.serving.backends.transforms import Fallback, compile_step, is_frame

NAME = "numpy-linear"
LINEAR_TYPES = (LinearRegression, Ridge, LogisticRegression)


def compile_linear(estimator: Any) -> Evaluator | str:
    if type(estimator) is Pipeline:
        return _compile_pipeline(estimator)
    model = _compile_model(estimator)
    if isinstance(model, str):
        return model
    decide, proba = model
    n_features = estimator.n_features_in_
    if hasattr(estimator, "feature_names_in_"):
        # sklearn warns when names and arrays are mixed; keep that behaviour by passing
        # everything through.
        return f"{type(estimator).__name__} fitted on a DataFrame: no fast evaluator"

    def gate(x: Any) -> Array:
        if not plain_float64(x, n_features) or not all_finite(x):
            raise Fallback
        checked: Array = x
        return checked

    return _evaluator(estimator, gate, decide, proba)


def _compile_pipeline(pipeline: Pipeline) -> Evaluator | str:
    *head, (_, last) = pipeline.steps
    if type(last) not in LINEAR_TYPES:
        return f"Pipeline ending in {type(last).__name__}: no fast evaluator"
    if getattr(pipeline, "_sklearn_output_config", {}).get("transform", "default") != "default":
        return "Pipeline with set_output: no fast evaluator"
    steps = []
    for _, step in head:
        compiled = compile_step(step)
        if isinstance(compiled, str):
            return compiled
        steps.append(compiled)
    model = _compile_model(last)
    if isinstance(model, str):
        return model
    decide, proba = model
    names = getattr(pipeline, "feature_names_in_", None)
    n_features = pipeline.n_features_in_
    n_model_features = last.n_features_in_

    def gate(x: Any) -> Array:
        if names is None:
            if not plain_float64(x, n_features):
                raise Fallback
        elif not is_frame(x) or list(x.columns) != list(names) or len(x) == 0:
            raise Fallback
        for step in steps:
            x = step(x)
        # The model rejects non-finite values; leave sklearn to say so.
        if not plain_float64(x, n_model_features) or not all_finite(x):
            raise Fallback
        checked: Array = x
        return checked

    return _evaluator(pipeline, gate, decide, proba)


Decide = Callable[[Array], Array]


def _compile_model(model: Any) -> tuple[Decide, Decide | None] | str:
    kind = type(model)
    if kind not in LINEAR_TYPES:
        return f"{kind.__name__}: no fast evaluator"
    coef = model.coef_
    intercept = model.intercept_
    if coef.dtype != np.float64:
        return f"{kind.__name__} with {coef.dtype} coefficients: no fast evaluator"
    if kind is not LogisticRegression:
        if coef.ndim == 1:
            return (lambda x: x @ coef + intercept), None
        coef_t = coef.T
        return (lambda x: x @ coef_t + intercept), None

    classes = model.classes_
    coef_t = coef.T

    def scores(x: Array) -> Array:
        out: Array = x @ coef_t + intercept
        if out.ndim > 1 and out.shape[1] == 1:
            return out.reshape((-1,))
        return out

    def predict(x: Array) -> Array:
        s = scores(x)
        indices = (s > 0).astype(np.intp) if s.ndim == 1 else np.argmax(s, axis=1)
        return np.asarray(classes.take(indices, axis=0))

    def predict_proba(x: Array) -> Array:
        s = scores(x)
        if len(classes) <= 2:
            p = expit(s, out=s)
            return np.stack([1 - p, p], axis=1)
        top = np.max(s, axis=1).reshape((-1, 1))
        s -= top
        np.exp(s, out=s)
        total = np.sum(s, axis=1).reshape((-1, 1))
        s /= total
        return s

    return predict, predict_proba


def _evaluator(
    estimator: Any, gate: Callable[[Any], Array], predict: Decide, proba: Decide | None
) -> Evaluator:
    def fast_predict(x: Any) -> Array:
        try:
            ready = gate(x)
        except Fallback:
            return np.asarray(estimator.predict(x))
        return predict(ready)

    fast_proba = None
    if proba is not None:
        proba_fn = proba

        def fast_proba(x: Any) -> Array:
            try:
                ready = gate(x)
            except Fallback:
                return np.asarray(estimator.predict_proba(x))
            return proba_fn(ready)

    return Evaluator(name=NAME, predict=fast_predict, predict_proba=fast_proba)

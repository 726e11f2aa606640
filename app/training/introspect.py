"""What a fitted estimator says about itself: task, input names, category columns (from its
encoders) and classes, as card fields. Used by `modelport import`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.multioutput import (
    ClassifierChain,
    MultiOutputClassifier,
    MultiOutputRegressor,
    RegressorChain,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder
from sklearn.utils.validation import check_is_fitted

from app.store.writer import Task
from schemas.cards import ClassLabel, FeatureSpec, TargetSpec


def describe_estimator(estimator: Any) -> dict[str, Any]:
    """The card fields that follow from the fitted estimator itself."""
    if not callable(getattr(estimator, "predict", None)):
        raise ValueError(f"{type(estimator).__name__} has no predict method")
    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise ValueError(f"the estimator is not fitted: {exc}") from None
    except TypeError as exc:
        raise ValueError(f"not a scikit-learn estimator: {exc}") from None
    task = _task_of(estimator)
    if _is_multi_output(estimator):
        raise ValueError("multi-output models are not supported: predict must return one value")
    names = _input_names(estimator)
    categories = _category_columns(estimator, names)
    features = [
        FeatureSpec(name=n, dtype="category", categories=categories[n])
        if n in categories
        else FeatureSpec(name=n, dtype="float")
        for n in names
    ]
    target = TargetSpec(classes=_classes(estimator)) if task == "classification" else TargetSpec()
    return {
        "task": task,
        "features": features,
        "target": target,
        "example": [f.categories[0] if f.categories else 0.0 for f in features],
    }


def _task_of(estimator: Any) -> Task:
    try:
        if is_classifier(estimator):
            return "classification"
        if is_regressor(estimator):
            return "regression"
    except AttributeError as exc:  # no scikit-learn tags: not built on BaseEstimator
        raise ValueError(f"not a scikit-learn estimator: {exc}") from None
    raise ValueError(
        f"{type(estimator).__name__} is neither a classifier nor a regressor; only those are served"
    )


def _final_step(estimator: Any) -> Any:
    while isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    return estimator


def _is_multi_output(estimator: Any) -> bool:
    final = _final_step(estimator)
    wrappers = (MultiOutputClassifier, MultiOutputRegressor, ClassifierChain, RegressorChain)
    if isinstance(final, wrappers) or getattr(final, "n_outputs_", 1) > 1:
        return True
    if isinstance(getattr(final, "classes_", None), list):  # one classes_ array per output
        return True
    coef: Any = getattr(final, "coef_", None)
    if coef is None or not is_regressor(final):  # classifiers' coef_ has a row per class
        return False
    return bool(np.ndim(coef) == 2 and np.shape(coef)[0] > 1)


def _input_names(estimator: Any) -> list[str]:
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        return [str(name) for name in names]
    count = getattr(estimator, "n_features_in_", None)
    if count is None:
        raise ValueError(
            "cannot tell the model's inputs: it has neither feature_names_in_ nor n_features_in_"
        )
    return [f"x{i}" for i in range(int(count))]


def _classes(estimator: Any) -> list[ClassLabel]:
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise ValueError("a classifier without classes_")
    # Ints and strings are kept; other labels (floats, bools) become the strings the registry
    # compares against, since a card only holds int or str labels.
    return [
        label if isinstance(label, str) or type(label) is int else str(label)
        for label in np.asarray(classes).tolist()
    ]


# Which inputs are categories: the model's input step is a ColumnTransformer (or a bare encoder)
# whose fitted OneHotEncoder/OrdinalEncoder knows each column's categories. Only the first step
# sees the raw columns, so later steps are not looked at.


def _category_columns(estimator: Any, names: list[str]) -> dict[str, list[str]]:
    first = estimator
    while isinstance(first, Pipeline):
        first = first.steps[0][1]
    found: dict[str, Any] = {}
    if isinstance(first, ColumnTransformer):
        for _, transformer, columns in first.transformers_:
            encoder = _encoder_in(transformer)
            selected = _selected_names(columns, names) if encoder is not None else None
            if encoder is not None and selected and len(selected) == len(encoder.categories_):
                found.update(zip(selected, encoder.categories_, strict=True))
    elif _is_encoder(first) and len(first.categories_) == len(names):
        found.update(zip(names, first.categories_, strict=True))
    labels = {column: _string_categories(values) for column, values in found.items()}
    return {column: values for column, values in labels.items() if values is not None}


def _is_encoder(step: Any) -> bool:
    return isinstance(step, OneHotEncoder | OrdinalEncoder) and hasattr(step, "categories_")


def _encoder_in(transformer: Any) -> Any:
    if isinstance(transformer, Pipeline):
        return next((s for _, s in transformer.steps if _is_encoder(s)), None)
    return transformer if _is_encoder(transformer) else None


def _selected_names(columns: Any, names: list[str]) -> list[str] | None:
    """A ColumnTransformer column selection as input feature names (None if not understood)."""
    if isinstance(columns, slice):
        bounds = (columns.start, columns.stop, columns.step)
        return names[columns] if all(b is None or isinstance(b, int) for b in bounds) else None
    selector = np.atleast_1d(np.asarray(columns))
    values = selector.tolist()
    if selector.dtype.kind == "b":
        return (
            [n for n, keep in zip(names, values, strict=True) if keep]
            if len(values) == len(names)
            else None
        )
    if selector.dtype.kind in "iu":
        in_range = all(-len(names) <= i < len(names) for i in values)
        return [names[i] for i in values] if in_range else None
    if all(isinstance(v, str) for v in values):
        return [str(v) for v in values]
    return None


def _string_categories(values: Any) -> list[str] | None:
    """The categories as strings, if they are strings; a missing-value category is left out
    (requests cannot send a missing value anyway)."""
    present = [
        v
        for v in np.asarray(values).tolist()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    if present and all(isinstance(v, str) for v in present):
        return [str(v) for v in present]
    return None

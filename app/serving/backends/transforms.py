"""Pipeline preprocessing steps, re-done with sklearn 1.9.1's own arithmetic.

Every step here is elementwise (or a lookup), so its result does not depend on memory
layout; the one layout-sensitive operation, the final model's matrix product, sees an
array laid out as sklearn's would be (a copy with order "K" keeps the caller's layout,
as `check_array(copy=True)` does; `np.hstack` is C-ordered, as ColumnTransformer's is).
"""

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

from app.serving.backends.evaluator import Array

Step = Callable[[Any], Array]


class Fallback(Exception):  # noqa: N818 - a signal, not an error
    """This input is outside the fast path: let the estimator itself answer."""


def is_frame(x: Any) -> bool:
    # Duck-typed so this package need not import pandas.
    return type(x).__name__ == "DataFrame" and type(x).__module__.startswith("pandas")


def as_float_array(x: Any) -> Array:
    """What `check_array(x, dtype=float64)` reads from an ndarray or a numeric frame."""
    if type(x) is np.ndarray:
        if x.dtype != np.float64:
            raise Fallback
        return x
    if is_frame(x):
        if not all(getattr(dtype, "kind", "O") in "fi" for dtype in x.dtypes):
            raise Fallback
        return np.asarray(x, dtype=np.float64)
    raise Fallback


def compile_step(step: Any) -> Step | str:
    if step is None or step == "passthrough":
        return lambda x: x
    kind = type(step)
    if kind is StandardScaler:
        return _standard_scaler(step)
    if kind is MinMaxScaler:
        return _min_max_scaler(step)
    if kind is ColumnTransformer:
        return _column_transformer(step)
    return f"{kind.__name__}: no fast evaluator for this pipeline step"


def _standard_scaler(scaler: StandardScaler) -> Step:
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None

    def transform(x: Any) -> Array:
        out = np.array(as_float_array(x), dtype=np.float64, order="K", copy=True)
        if mean is not None:
            out -= mean
        if scale is not None:
            out /= scale
        return out

    return transform


def _min_max_scaler(scaler: MinMaxScaler) -> Step:
    scale, offset, clip = scaler.scale_, scaler.min_, scaler.clip
    low = np.asarray(scaler.feature_range[0], dtype=np.float64)
    high = np.asarray(scaler.feature_range[1], dtype=np.float64)

    def transform(x: Any) -> Array:
        out = np.array(as_float_array(x), dtype=np.float64, order="K", copy=True)
        out *= scale
        out += offset
        if clip:
            np.clip(out, low, high, out=out)
        return out

    return transform


def _identity_function(step: Any) -> bool:
    # ColumnTransformer stores "passthrough" (and the remainder) as this identity.
    return type(step) is FunctionTransformer and step.func is None and not step.validate


def _column_transformer(ct: ColumnTransformer) -> Step | str:
    if ct.sparse_output_:
        return "ColumnTransformer with sparse output: no fast evaluator"
    if ct.transformer_weights:
        return "ColumnTransformer with transformer_weights: no fast evaluator"
    if getattr(ct, "_sklearn_output_config", {}).get("transform", "default") != "default":
        return "ColumnTransformer with set_output: no fast evaluator"
    n_features = ct.n_features_in_
    names = getattr(ct, "feature_names_in_", None)
    blocks: list[tuple[list[int], Callable[[Any], Array]]] = []
    for name, trans, _columns in ct.transformers_:
        indices = list(ct._transformer_to_input_indices[name])
        if trans == "drop" or not indices:
            continue
        if _identity_function(trans) or trans == "passthrough":
            blocks.append((indices, as_float_array))
            continue
        if type(trans) is OneHotEncoder:
            encode = _one_hot(trans, from_frame=names is not None)
            if isinstance(encode, str):
                return encode
            blocks.append((indices, encode))
            continue
        compiled = compile_step(trans)
        if isinstance(compiled, str) or type(trans) is ColumnTransformer:
            return f"ColumnTransformer step {type(trans).__name__}: no fast evaluator"
        blocks.append((indices, compiled))

    def transform(x: Any) -> Array:
        if names is not None:
            # Fitted on a frame: sklearn selects by name; require the same columns in the
            # same order so that the positions below are the names.
            if not is_frame(x) or list(x.columns) != list(names):
                raise Fallback
            parts = [run(x.iloc[:, indices]) for indices, run in blocks]
        else:
            if type(x) is not np.ndarray or x.ndim != 2 or x.shape[1] != n_features:
                raise Fallback
            parts = [run(x[:, indices]) for indices, run in blocks]
        return np.hstack(parts)

    return transform


def _one_hot(encoder: OneHotEncoder, *, from_frame: bool) -> Callable[[Any], Array] | str:
    if encoder.drop is not None or encoder._infrequent_enabled:
        return "OneHotEncoder with drop or infrequent categories: no fast evaluator"
    # Only called for an encoder inside a ColumnTransformer whose output is dense: there sklearn
    # stacks a sparse block as `.toarray()`, the same 0.0/1.0 values as a dense encoding.
    if encoder.dtype not in (np.float64, float):
        return "OneHotEncoder without dtype float64: no fast evaluator"
    categories: list[Array] = list(encoder.categories_)
    tables: list[dict[Any, int]] = []
    for cats in categories:
        if cats.dtype == np.float64 and not from_frame:
            if np.isnan(cats).any():
                return "OneHotEncoder with a NaN category: no fast evaluator"
        elif cats.dtype == object and from_frame:
            if not all(type(c) is str for c in cats):
                return "OneHotEncoder with non-string object categories: no fast evaluator"
        else:
            return f"OneHotEncoder with {cats.dtype} categories: no fast evaluator"
        tables.append({c: i for i, c in enumerate(cats.tolist())})
    ignore = encoder.handle_unknown == "ignore"
    offsets = np.cumsum([0] + [len(c) for c in categories])

    def encode(x: Any) -> Array:
        n = x.shape[0]
        out = np.zeros((n, int(offsets[-1])), dtype=np.float64)
        rows = np.arange(n)
        for j, (cats, table) in enumerate(zip(categories, tables, strict=True)):
            if from_frame:
                column = x.iloc[:, j].to_numpy(dtype=object)
                codes = np.fromiter((table.get(v, -1) for v in column), np.intp, n)
                known = codes >= 0
            else:
                column = x[:, j]
                if np.isnan(column).any():
                    raise Fallback
                # sklearn encodes numbers by binary search in the sorted categories.
                codes = np.searchsorted(cats, column)
                np.minimum(codes, len(cats) - 1, out=codes)
                known = cats[codes] == column
            if not known.all():
                # "error" raises and "warn" warns: both are sklearn's to do.
                if not ignore:
                    raise Fallback
                codes, hit = codes[known], rows[known]
            else:
                hit = rows
            out[hit, offsets[j] + codes] = 1.0
        return out

    return encode

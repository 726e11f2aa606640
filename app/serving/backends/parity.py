"""Load-time proof that an evaluator matches its estimator bit for bit on chosen rows."""

from typing import Any

import numpy as np

from app.serving.backends.evaluator import Array, Evaluator

UNIFORM_ROWS = 256
# Six rows a threshold; a cap keeps a 100-tree forest's check to a few thousand rows.
MAX_THRESHOLDS = 500
# Batch sizes checked besides the whole set: the evaluators pick their strategy (and
# BLAS its kernel) by batch size, so each size class is exercised.
BATCH_SIZES = (1, 2, 3, 5, 8, 17, 64, 257)
SINGLE_ROWS = 16


def split_thresholds(estimator: Any) -> Array:
    """(feature, threshold) of every split of a tree model, deduplicated; empty otherwise."""
    nodes: list[tuple[Array, Array]] = []
    trees: list[Any] = []
    if hasattr(estimator, "tree_"):
        trees = [estimator.tree_]
    elif hasattr(estimator, "estimators_") and hasattr(estimator, "n_features_in_"):
        trees = [t.tree_ for t in np.ravel(estimator.estimators_) if hasattr(t, "tree_")]
    for tree in trees:
        split = tree.children_left != -1
        nodes.append((tree.feature[split], tree.threshold[split]))
    for iteration in getattr(estimator, "_predictors", []):
        for predictor in iteration:
            split = predictor.nodes["is_leaf"] == 0
            nodes.append(
                (predictor.nodes["feature_idx"][split], predictor.nodes["num_threshold"][split])
            )
    if not nodes:
        return np.empty((0, 2))
    pairs = np.column_stack(
        [np.concatenate([f for f, _ in nodes]), np.concatenate([t for _, t in nodes])]
    )
    return np.unique(pairs, axis=0)


def parity_rows(
    estimator: Any,
    rows: Array | None,
    low: Array | None,
    high: Array | None,
    rng: np.random.Generator,
) -> Array:
    """Rows to check at load: `rows`, rows uniform over [low, high] per column, and for
    tree models rows on every split threshold (as float64, as the nearest float32, and
    one ulp either side of each), the other columns taken from the rows above."""
    width = int(estimator.n_features_in_)
    parts = [np.asarray(rows, dtype=np.float64).reshape(-1, width)] if rows is not None else []
    if low is not None and high is not None:
        parts.append(rng.uniform(low, high, size=(UNIFORM_ROWS, width)))
    base = np.concatenate(parts) if parts else np.zeros((1, width))
    if len(base) == 0:
        base = np.zeros((1, width))
    pairs = split_thresholds(estimator)
    if len(pairs) > MAX_THRESHOLDS:
        pairs = pairs[rng.choice(len(pairs), MAX_THRESHOLDS, replace=False)]
    if len(pairs):
        feature = pairs[:, 0].astype(np.intp)
        at64 = pairs[:, 1]
        at32 = at64.astype(np.float32)
        values = np.concatenate(
            [
                at64,
                np.nextafter(at64, -np.inf),
                np.nextafter(at64, np.inf),
                at32.astype(np.float64),
                np.nextafter(at32, np.float32(-np.inf)).astype(np.float64),
                np.nextafter(at32, np.float32(np.inf)).astype(np.float64),
            ]
        )
        columns = np.tile(feature, 6)
        placed = base[np.arange(len(values)) % len(base)].copy()
        placed[np.arange(len(values)), columns] = values
        parts.append(placed)
    return np.concatenate(parts) if parts else base


def _first_difference(fast: Any, slow: Any) -> str | None:
    fast, slow = np.asarray(fast), np.asarray(slow)
    if fast.dtype != slow.dtype or fast.shape != slow.shape:
        return f"{fast.dtype}{fast.shape} (fast) vs {slow.dtype}{slow.shape} (sklearn)"
    if slow.dtype.kind in "fc":
        # Bits, not values: -0.0 and 0.0 differ, and NaN equals an identical NaN.
        fast_bits = np.ascontiguousarray(fast).view(np.uint8).reshape(len(fast), -1)
        slow_bits = np.ascontiguousarray(slow).view(np.uint8).reshape(len(slow), -1)
        unequal = fast_bits != slow_bits
        rows = np.flatnonzero(unequal.any(axis=1))
    else:
        rows = np.flatnonzero((fast != slow).reshape(fast.shape[0], -1).any(axis=1))
    if not len(rows):
        return None
    i = int(rows[0])
    return f"row {i}: {fast[i]!r} (fast) vs {slow[i]!r} (sklearn)"


def check_parity(estimator: Any, evaluator: Evaluator, rows: Any) -> str | None:
    """None when `evaluator` reproduces `estimator` bit for bit on `rows` (whole, in the
    batch sizes above, and row by row for the first few); else the first mismatch."""
    n = len(rows)
    batches = [(0, n)] + [(0, size) for size in BATCH_SIZES if size < n]
    batches += [(i, i + 1) for i in range(1, min(n, SINGLE_ROWS))]
    methods = [("predict", evaluator.predict, estimator.predict)]
    if evaluator.predict_proba is not None:
        methods.append(("predict_proba", evaluator.predict_proba, estimator.predict_proba))
    for start, stop in batches:
        batch = rows.iloc[start:stop] if hasattr(rows, "iloc") else rows[start:stop]
        for method, fast, slow in methods:
            try:
                difference = _first_difference(fast(batch), slow(batch))
            except Exception as error:  # the evaluator must not fail where sklearn does not
                difference = f"{type(error).__name__}: {error}"
            if difference is not None:
                return (
                    f"{evaluator.name} {method} differs from sklearn on rows "
                    f"{start}..{stop - 1} of {n}: {difference}"
                )
    return None

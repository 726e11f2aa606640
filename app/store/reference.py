"""Reference statistics: each feature's distribution in the rows a model was trained with,
written into its card (`schemas.cards.ReferenceStats`) by `modelport train` and
`modelport import --data`, and read back by whatever compares live requests with them.

`bin_counts` is the one definition of the bins, for both sides: docs/operations.md,
"Reference statistics", states it in words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from schemas.cards import FeatureReference, FeatureSpec, ReferenceStats

# Deciles: 11 edges, so at most 10 bins once repeated edges are merged.
QUANTILES = np.linspace(0.0, 1.0, 11)


def reference_stats(
    columns: Mapping[str, Sequence[Any] | np.ndarray[Any, Any]], features: list[FeatureSpec]
) -> ReferenceStats | None:
    """Statistics of `columns` (one sequence of values per feature name, all the same length)
    for the card's `features`; a feature whose column is missing or holds no value is left out.
    None when there are no rows."""
    rows = max((len(values) for values in columns.values()), default=0)
    if rows == 0:
        return None
    described: dict[str, FeatureReference] = {}
    for feature in features:
        if feature.name not in columns:
            continue
        values = columns[feature.name]
        reference = (
            _categorical(values, feature.categories or [])
            if feature.dtype == "category"
            else _numeric(values)
        )
        if reference is not None:
            described[feature.name] = reference
    return ReferenceStats(rows=rows, features=described)


def bin_counts(reference: FeatureReference, values: Sequence[Any] | np.ndarray[Any, Any]) -> Any:
    """How many of `values` fall in each of the reference's bins (an int array, one entry per
    fraction). Missing values (None, NaN) are not counted."""
    if reference.kind == "numeric":
        assert reference.edges is not None
        numbers = np.asarray(values, dtype=np.float64).ravel()
        numbers = numbers[~np.isnan(numbers)]
        # edges[i] <= x < edges[i+1] is bin i; the outer bins are open-ended.
        interior = np.asarray(reference.edges[1:-1], dtype=np.float64)
        index = np.searchsorted(interior, numbers, side="right")
        return np.bincount(index, minlength=len(reference.fractions))
    assert reference.categories is not None
    position = {category: i for i, category in enumerate(reference.categories)}
    other = len(reference.categories)
    found = [position.get(str(value), other) for value in values if not _missing(value)]
    return np.bincount(np.asarray(found, dtype=np.int64), minlength=other + 1)


def _numeric(values: Sequence[Any] | np.ndarray[Any, Any]) -> FeatureReference | None:
    numbers = np.asarray(values, dtype=np.float64).ravel()
    numbers = numbers[np.isfinite(numbers)]
    if numbers.size == 0:
        return None
    # 12 significant digits: interpolation noise (30.000000000000004 for the 30th percentile
    # of 0..100) would put tied values on the wrong side of an edge.
    quantiles = [float(f"{q:.12g}") for q in np.quantile(numbers, QUANTILES).tolist()]
    edges = sorted(set(quantiles))
    draft = FeatureReference(kind="numeric", edges=edges, fractions=[1.0] * max(len(edges) - 1, 1))
    return draft.model_copy(update={"fractions": _shares(bin_counts(draft, numbers))})


def _categorical(
    values: Sequence[Any] | np.ndarray[Any, Any], categories: list[str]
) -> FeatureReference | None:
    draft = FeatureReference(
        kind="categorical", categories=categories, fractions=[0.0] * (len(categories) + 1)
    )
    counts = bin_counts(draft, list(values))
    if counts.sum() == 0:
        return None
    return draft.model_copy(update={"fractions": _shares(counts)})


def _shares(counts: Any) -> list[float]:
    total = int(counts.sum())
    return [int(count) / total for count in counts]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))

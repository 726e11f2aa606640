"""Reference statistics (app.store.reference): the bins as docs/operations.md defines them."""

import numpy as np
import pytest
from pydantic import ValidationError

from app.store.reference import bin_counts, reference_stats
from schemas.cards import FeatureReference, FeatureSpec

NUMBER = FeatureSpec(name="n", dtype="int")
COLOUR = FeatureSpec(name="colour", dtype="category", categories=["red", "blue"])


def test_numeric_bins_are_deciles_with_open_ends() -> None:
    values = np.arange(101, dtype=np.float64)  # 0..100: deciles fall on 0, 10, ..., 100
    stats = reference_stats({"n": values}, [NUMBER])
    assert stats is not None and stats.rows == 101
    reference = stats.features["n"]
    assert reference.edges == [float(e) for e in range(0, 101, 10)]
    # [0, 10) holds 0..9, ..., and the last bin [90, +inf) holds 90..100.
    assert reference.fractions == pytest.approx([10 / 101] * 9 + [11 / 101])
    live = [-5.0, 0.0, 9.99, 10.0, 100.0, 1e9, float("nan")]
    assert bin_counts(reference, live).tolist() == [3, 1, 0, 0, 0, 0, 0, 0, 0, 2]


def test_repeated_edges_are_merged_and_a_constant_feature_has_one_bin() -> None:
    skewed = np.array([0.0] * 80 + [1.0] * 10 + [5.0] * 10)
    reference = reference_stats({"n": skewed}, [NUMBER])
    assert reference is not None
    edges = reference.features["n"].edges
    assert edges == sorted(set(edges or [])) and edges is not None and edges[0] == 0.0
    assert sum(reference.features["n"].fractions) == pytest.approx(1.0)
    constant = reference_stats({"n": np.full(7, 3.0)}, [NUMBER])
    assert constant is not None
    assert constant.features["n"].edges == [3.0] and constant.features["n"].fractions == [1.0]
    assert bin_counts(constant.features["n"], [-1.0, 3.0, 9.0]).tolist() == [3]


def test_categories_follow_the_card_then_other_and_missing_values_are_left_out() -> None:
    stats = reference_stats({"colour": ["red", "red", "blue", "green", None]}, [COLOUR])
    assert stats is not None
    reference = stats.features["colour"]
    assert reference.categories == ["red", "blue"]
    assert reference.fractions == [0.5, 0.25, 0.25]  # four present values; green is "other"
    assert bin_counts(reference, ["blue", "pink", float("nan")]).tolist() == [0, 1, 1]


def test_a_feature_without_values_is_left_out() -> None:
    stats = reference_stats({"n": [np.nan, np.nan], "colour": ["red", "blue"]}, [NUMBER, COLOUR])
    assert stats is not None and list(stats.features) == ["colour"]
    assert reference_stats({}, [NUMBER]) is None


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "numeric", "edges": [0.0, 1.0], "fractions": [0.5, 0.5]},
        {"kind": "numeric", "edges": [1.0, 0.0], "fractions": [1.0]},
        {"kind": "numeric", "fractions": [1.0]},
        {"kind": "categorical", "categories": ["a"], "fractions": [1.0]},
        {"kind": "categorical", "categories": ["a"], "edges": [0.0], "fractions": [1.0, 0.0]},
    ],
    ids=["too-many-fractions", "descending", "no-edges", "no-other-share", "edges-on-categories"],
)
def test_inconsistent_references_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FeatureReference.model_validate(data)

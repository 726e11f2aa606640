"""Model card, feature spec and traffic split validation (schemas.cards)."""

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.cards import FeatureSpec, ModelCard, TrafficSplit

SHA = "ab" * 32


def card_data(**overrides: Any) -> dict[str, Any]:
    """A valid card as plain JSON-like data; `overrides` replace top-level keys."""
    data: dict[str, Any] = {
        "name": "iris",
        "version": 1,
        "task": "classification",
        "description": "three flowers",
        "features": [
            {"name": "petal length", "dtype": "float", "minimum": 0.0, "maximum": 10.0},
            {"name": "count", "dtype": "int", "minimum": 0},
            {"name": "colour", "dtype": "category", "categories": ["red", "blue"]},
        ],
        "target": {"name": "species", "classes": ["setosa", "versicolor"]},
        "metrics": {"accuracy": 0.9},
        "example": [1.5, 3, "red"],
        "sklearn_version": "1.9.1",
        "created_at": "2024-05-01T12:00:00Z",
        "sha256": SHA,
    }
    data.update(overrides)
    return data


def float_features(count: int) -> list[dict[str, Any]]:
    return [{"name": f"px{i}", "dtype": "float"} for i in range(count)]


# -- FeatureSpec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "a", "dtype": "float"},
        {"name": "a", "dtype": "int", "minimum": 0, "maximum": 0},
        {"name": "a", "dtype": "float", "minimum": -1.5, "maximum": 2.5},
        {"name": "a", "dtype": "category", "categories": ["x"]},
        {"name": "mean radius (mm)", "dtype": "float", "observed_min": 1.0, "observed_max": 9.0},
    ],
    ids=["float", "int-min-equals-max", "float-bounds", "category", "name-with-spaces"],
)
def test_feature_spec_accepts_valid_specs(spec: dict[str, Any]) -> None:
    feature = FeatureSpec.model_validate(spec)

    assert feature.name == spec["name"]
    assert feature.dtype == spec["dtype"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"name": "c", "dtype": "category"},
            "needs its categories",
            id="category-without-categories",
        ),
        pytest.param(
            {"name": "c", "dtype": "category", "categories": []},
            "needs its categories",
            id="category-with-empty-categories",
        ),
        pytest.param(
            {"name": "f", "dtype": "float", "categories": ["a", "b"]},
            "only category features have categories",
            id="categories-on-float",
        ),
        pytest.param(
            {"name": "i", "dtype": "int", "categories": ["a"]},
            "only category features have categories",
            id="categories-on-int",
        ),
        pytest.param(
            {"name": "f", "dtype": "float", "minimum": 2.0, "maximum": 1.0},
            "minimum is above maximum",
            id="min-above-max",
        ),
        pytest.param({"name": "f", "dtype": "string"}, "dtype", id="unknown-dtype"),
        pytest.param({"name": "", "dtype": "float"}, "name", id="empty-name"),
        pytest.param({"name": "f", "dtype": "float", "unit": "cm"}, "unit", id="extra-key"),
        pytest.param(
            {"name": "f", "dtype": "float", "minimum": math.nan},
            "minimum",
            id="nan-minimum",
        ),
    ],
)
def test_feature_spec_refuses_inconsistent_specs(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureSpec.model_validate(spec)


# -- ModelCard --------------------------------------------------------------------------------


def test_valid_card_is_accepted() -> None:
    card = ModelCard.model_validate(card_data())

    assert card.name == "iris"
    assert [feature.name for feature in card.features] == ["petal length", "count", "colour"]
    assert card.target.classes == ["setosa", "versicolor"]
    assert card.artifact == "model.joblib"
    assert card.input_kind == "tabular"
    assert card.created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_valid_card_round_trips_through_json() -> None:
    card = ModelCard.model_validate(card_data())

    again = ModelCard.model_validate_json(card.model_dump_json())

    assert again == card
    assert again.model_dump() == card.model_dump()


@pytest.mark.parametrize(
    "classes",
    [[0, 1, 2], ["0", "1", "2"], [0.5, 1.5], [True, False], ["cat", 1]],
    ids=["ints", "digit-strings", "floats", "bools", "mixed"],
)
def test_class_labels_keep_their_json_type(classes: list[Any]) -> None:
    card = ModelCard.model_validate(card_data(target={"classes": classes}))

    again = ModelCard.model_validate_json(card.model_dump_json())

    assert again.target.classes == classes
    assert again.target.classes is not None
    assert [type(label) for label in again.target.classes] == [type(c) for c in classes]


def test_regression_card_needs_no_classes() -> None:
    card = ModelCard.model_validate(card_data(task="regression", target={"name": "y"}))

    assert card.target.classes is None


def test_image_card_whose_shape_matches_its_features_is_accepted() -> None:
    card = ModelCard.model_validate(
        card_data(input_kind="image", image_shape=[2, 3], features=float_features(6), example=None)
    )

    assert card.image_shape == (2, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {
                "features": [
                    {"name": "a", "dtype": "float"},
                    {"name": "a", "dtype": "int"},
                ],
                "example": None,
            },
            "feature names must be unique",
            id="duplicate-feature-names",
        ),
        pytest.param(
            {"target": {"name": "species"}},
            "needs target.classes",
            id="classification-without-classes",
        ),
        pytest.param(
            {"target": {"name": "species", "classes": []}},
            "needs target.classes",
            id="classification-with-empty-classes",
        ),
        pytest.param(
            {"input_kind": "image", "image_shape": [2, 2], "features": float_features(5)},
            "image_shape does not match",
            id="image-shape-not-feature-count",
        ),
        pytest.param(
            {"input_kind": "image", "features": float_features(4), "example": None},
            "needs image_shape",
            id="image-without-shape",
        ),
        pytest.param(
            {
                "input_kind": "image",
                "image_shape": [-2, -2],
                "features": float_features(4),
                "example": None,
            },
            "image_shape",
            id="image-shape-negative",
        ),
        pytest.param({"example": [1.5, 3]}, "one value per feature", id="example-too-short"),
        pytest.param(
            {"example": [1.5, 3, "red", 4.0]}, "one value per feature", id="example-too-long"
        ),
        pytest.param({"name": "../etc"}, "name", id="name-path-traversal"),
        pytest.param({"name": "Iris Upper"}, "name", id="name-upper-and-space"),
        pytest.param({"name": "Iris"}, "name", id="name-uppercase"),
        pytest.param({"name": ""}, "name", id="name-empty"),
        pytest.param({"name": "-iris"}, "name", id="name-leading-dash"),
        pytest.param({"name": "iris/1"}, "name", id="name-with-slash"),
        pytest.param({"name": "iris\n"}, "name", id="name-trailing-newline"),
        pytest.param({"name": "a" * 65}, "name", id="name-too-long"),
        pytest.param({"version": 0}, "version", id="version-zero"),
        pytest.param({"version": -1}, "version", id="version-negative"),
        pytest.param({"features": []}, "features", id="no-features"),
        pytest.param({"sha256": "AB" * 32}, "sha256", id="sha-uppercase"),
        pytest.param({"sha256": "ab" * 31}, "sha256", id="sha-too-short"),
        pytest.param({"artifact": "model.pkl"}, "artifact", id="unknown-artifact-kind"),
        pytest.param({"task": "clustering"}, "task", id="unknown-task"),
        pytest.param({"owner": "me"}, "owner", id="extra-key"),
    ],
)
def test_card_refuses_inconsistent_cards(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(card_data(**overrides))


def test_name_at_the_length_limit_is_accepted() -> None:
    assert ModelCard.model_validate(card_data(name="a" * 64)).name == "a" * 64


# -- TrafficSplit -----------------------------------------------------------------------------


def test_traffic_split_round_trips_with_integer_versions() -> None:
    split = TrafficSplit(weights={1: 90, 2: 10})

    again = TrafficSplit.model_validate_json(split.model_dump_json())

    assert again == split
    assert again.weights == {1: 90.0, 2: 10.0}


def test_traffic_split_allows_a_zero_weight_beside_a_positive_one() -> None:
    assert TrafficSplit.model_validate_json(b'{"weights": {"1": 0, "2": 1}}').weights == {
        1: 0.0,
        2: 1.0,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"weights": {"1": -10, "2": 110}}', "must not be negative", id="negative"),
        pytest.param(b'{"weights": {"1": 0, "2": 0}}', "more than zero", id="all-zero"),
        pytest.param(b'{"weights": {"1": -0.0}}', "more than zero", id="negative-zero"),
        pytest.param(b'{"weights": {}}', "weights", id="empty"),
        pytest.param(b'{"weights": {"v1": 100}}', "weights", id="non-integer-version"),
        pytest.param(b"{}", "weights", id="missing"),
        pytest.param(b'{"weights": {"1": 1}, "sticky": true}', "sticky", id="extra-key"),
        pytest.param(b'{"weights": {"1": NaN, "2": 10}}', "weights", id="nan-weight"),
    ],
)
def test_traffic_split_refuses_bad_weights(body: bytes, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrafficSplit.model_validate_json(body)

"""The inference core (app.serving.schema and app.serving.model) on models loaded from a real store: validation, model
input, predictions compared with the fitted estimator's own answers, and the JSON schema."""

import json
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

from app.errors import InvalidInput, MalformedBody
from app.serving.model import LoadedModel, predict
from app.serving.registry import load_version
from app.serving.schema import InputSchema
from schemas.predict import ClassPrediction, ValuePrediction
from tests.conftest import FLOWER_FEATURES, flower_rows, pet_rows

PETS_FEATURES = ["colour", "weight", "age"]


def load(store: Path, name: str, version: int = 1) -> LoadedModel:
    return load_version(
        store / name / str(version), name=name, version=version, max_rows=50, trusted_types=[]
    )


def oracle(store: Path, name: str, version: int = 1) -> Any:
    """The same fitted estimator, loaded independently from the store."""
    return joblib.load(store / name / str(version) / "model.joblib")


def body(instances: list[Any]) -> bytes:
    return json.dumps({"instances": instances}).encode()


def as_records(names: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in rows]


def walk(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    """Resolve a local `#/...` JSON pointer."""
    assert ref.startswith("#/")
    node: Any = schema
    for part in ref[2:].split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


# -- validation -------------------------------------------------------------------------------


def test_records_and_arrays_give_the_same_rows_in_feature_order(store: Path) -> None:
    inputs = load(store, "flowers").inputs
    rows = flower_rows()

    from_arrays = inputs.validate_json(body(rows))
    from_records = inputs.validate_json(body(as_records(FLOWER_FEATURES, rows)))

    assert isinstance(from_arrays, np.ndarray)  # the vectorised path for all-numeric arrays
    assert from_arrays.tolist() == [list(row) for row in from_records]
    assert [list(row) for row in from_arrays] == rows


def test_record_keys_may_come_in_any_order(store: Path) -> None:
    inputs = load(store, "pets").inputs
    shuffled = [
        {"age": 3, "colour": "white", "weight": 2.5},
        {"weight": 4.25, "age": 0, "colour": "black"},
        {"colour": "ginger", "age": 40, "weight": 0.0},
    ]

    rows = inputs.validate_json(body(shuffled))

    assert rows == [("white", 2.5, 3), ("black", 4.25, 0), ("ginger", 0.0, 40)]


def test_records_and_arrays_may_be_mixed(store: Path) -> None:
    inputs = load(store, "flowers").inputs
    rows = flower_rows(3)
    mixed: list[Any] = [rows[0], as_records(FLOWER_FEATURES, [rows[1]])[0], rows[2]]

    assert [list(row) for row in inputs.validate_json(body(mixed))] == rows


def test_malformed_json_is_malformed_body(store: Path) -> None:
    inputs = load(store, "flowers").inputs

    with pytest.raises(MalformedBody):
        inputs.validate_json(b'{"instances": [[1, 2,')


def test_validate_json_points_at_the_offending_cell(store: Path) -> None:
    inputs = load(store, "pets").inputs

    with pytest.raises(InvalidInput) as raised:
        inputs.validate_json(body([["black", 2.0, 3], ["purple", 2.0, 3]]))

    assert isinstance(raised.value.detail, list)
    assert [issue["loc"] for issue in raised.value.detail] == [["instances", 1, "row", 0]]


@pytest.mark.parametrize(
    ("rows", "loc"),
    [
        pytest.param([[1.0, None, 1.0, 1.0]], [0, "row", 1], id="none"),
        pytest.param([[1.0, [1.0], 1.0, 1.0]], [0, "row", 1], id="nested-list"),
        pytest.param(
            [{**dict.fromkeys(FLOWER_FEATURES, 1.0), "petal_width": True}],
            [0, "record", "petal_width"],
            id="record-bool",
        ),
        pytest.param([[1.0, 1.0, 1.0, 1.0], [1.0, -0.5, 1.0, 1.0]], [1, "row", 1], id="negative"),
        pytest.param([[1.0, 1.0, 1.0]], [0, "row", 3], id="too-short"),
        pytest.param([[1.0, 1.0, 1.0, 1.0, 1.0]], [0, "row"], id="too-long"),
        pytest.param(
            [{"sepal_length": 1.0, "sepal_width": 1.0, "petal_length": 1.0}],
            [0, "record", "petal_width"],
            id="record-missing-feature",
        ),
        pytest.param(
            [dict.fromkeys([*FLOWER_FEATURES, "stem"], 1.0)],
            [0, "record", "stem"],
            id="record-extra-feature",
        ),
        pytest.param([7.0], [0], id="instance-is-a-number"),
        pytest.param([], [], id="no-rows"),
    ],
)
def test_validate_rows_applies_the_same_rules_and_prefixes_loc(
    store: Path, rows: list[Any], loc: list[Any]
) -> None:
    inputs = load(store, "flowers").inputs

    with pytest.raises(InvalidInput) as from_python:
        inputs.validate_rows(rows, loc=("tensor", "data"))
    with pytest.raises(InvalidInput) as from_json:
        inputs.validate_json(body(rows))

    python_detail = from_python.value.detail
    assert isinstance(python_detail, list)
    assert [issue["loc"] for issue in python_detail] == [["tensor", "data", *loc]]
    assert all(set(issue) == {"loc", "msg", "type"} for issue in python_detail)
    json_detail = from_json.value.detail
    assert isinstance(json_detail, list)
    assert [issue["loc"] for issue in json_detail] == [["instances", *loc]]
    assert [issue["type"] for issue in json_detail] == [issue["type"] for issue in python_detail]


def test_validate_rows_defaults_to_the_instances_loc(store: Path) -> None:
    inputs = load(store, "pets").inputs

    with pytest.raises(InvalidInput) as raised:
        inputs.validate_rows([["black", 2.0, 3.5]])

    assert isinstance(raised.value.detail, list)
    assert [issue["loc"] for issue in raised.value.detail] == [["instances", 0, "row", 2]]


def test_validate_rows_accepts_what_validate_json_accepts(store: Path) -> None:
    inputs = load(store, "pets").inputs
    rows = pet_rows()

    assert inputs.validate_rows(rows) == inputs.validate_json(body(rows))
    assert inputs.validate_rows(as_records(PETS_FEATURES, rows)) == inputs.validate_json(body(rows))


def test_validate_rows_refuses_too_many_rows(store: Path) -> None:
    inputs = load(store, "line").inputs

    # The documented maxItems: a 422 like any schema violation (413 is for bytes).
    too_many = [
        {"loc": ["instances"], "msg": "Too many rows: at most 50 per request", "type": "too_long"}
    ]
    assert len(inputs.validate_rows([[1.0, 2.0]] * 50)) == 50
    with pytest.raises(InvalidInput) as from_rows:
        inputs.validate_rows([[1.0, 2.0]] * 51)
    assert from_rows.value.detail == too_many
    with pytest.raises(InvalidInput) as from_json:
        inputs.validate_json(body([[1.0, 2.0]] * 51))
    assert from_json.value.detail == too_many


@pytest.mark.parametrize("name", ["flowers", "pets", "line"])
def test_the_example_built_from_the_card_passes_validation(store: Path, name: str) -> None:
    model = load(store, name)
    example = model.inputs.example

    rows = model.inputs.validate_json(json.dumps(example).encode())

    assert list(example) == ["instances"]
    assert list(example["instances"][0]) == model.inputs.feature_names
    assert len(rows) == 1
    if model.card.example is not None:
        assert list(rows[0]) == model.card.example
    assert len(predict(model, rows).predictions) == 1


# -- model input ------------------------------------------------------------------------------


def test_frame_trained_model_gets_a_dataframe_with_its_fitted_columns(store: Path) -> None:
    model = load(store, "pets")
    rows = model.inputs.validate_json(body(pet_rows()))

    features = model.inputs.to_model_input(rows)

    assert isinstance(features, pd.DataFrame)
    assert list(features.columns) == [str(c) for c in model.estimator.feature_names_in_]
    assert features["weight"].dtype == np.float64
    assert features["age"].dtype == np.int64
    assert features.to_numpy().tolist() == [list(row) for row in pet_rows()]


def test_array_trained_model_gets_a_float64_array(store: Path) -> None:
    model = load(store, "flowers")
    assert getattr(model.estimator, "feature_names_in_", None) is None
    rows = model.inputs.validate_json(body(as_records(FLOWER_FEATURES, flower_rows())))

    features = model.inputs.to_model_input(rows)

    assert isinstance(features, np.ndarray)
    assert features.dtype == np.float64
    assert features.shape == (len(flower_rows()), 4)
    np.testing.assert_array_equal(features, np.array(flower_rows()))


def test_int_values_for_float_features_become_floats(store: Path) -> None:
    model = load(store, "line")
    rows = model.inputs.validate_json(b'{"instances": [[1, 2], {"a": 3, "b": 4}]}')

    features = model.inputs.to_model_input(rows)

    assert isinstance(features, np.ndarray)
    assert features.dtype == np.float64
    assert features.tolist() == [[1.0, 2.0], [3.0, 4.0]]


# -- predictions ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_flowers_predictions_equal_the_estimators(store: Path, version: int) -> None:
    model = load(store, "flowers", version)
    rows = flower_rows()
    estimator = oracle(store, "flowers", version)
    x = np.array(rows, dtype=np.float64)

    response = predict(model, model.inputs.validate_json(body(rows)))

    assert (response.model_name, response.model_version) == ("flowers", version)
    labels = estimator.predict(x).tolist()
    proba = estimator.predict_proba(x)
    classes = [str(c) for c in estimator.classes_]
    assert classes == ["setosa", "versicolor", "virginica"]
    assert len(response.predictions) == len(rows)
    for item, label, row in zip(response.predictions, labels, proba, strict=True):
        assert isinstance(item, ClassPrediction)
        assert item.label == label
        assert item.probabilities == dict(zip(classes, row.tolist(), strict=True))
        assert math.fsum(item.probabilities.values()) == pytest.approx(1.0, abs=1e-12)


def test_pets_predictions_equal_the_pipelines(store: Path) -> None:
    model = load(store, "pets")
    rows = pet_rows()
    estimator = oracle(store, "pets")
    frame = pd.DataFrame(rows, columns=PETS_FEATURES)

    response = predict(model, model.inputs.validate_json(body(as_records(PETS_FEATURES, rows))))

    labels = estimator.predict(frame).tolist()
    proba = estimator.predict_proba(frame)
    assert set(labels) == {"cat", "dog"}
    for item, label, row in zip(response.predictions, labels, proba, strict=True):
        assert isinstance(item, ClassPrediction)
        assert item.label == label
        assert item.probabilities == dict(zip(["cat", "dog"], row.tolist(), strict=True))


def test_line_values_equal_the_estimators(store: Path) -> None:
    model = load(store, "line")
    rows = [[0.0, 0.0], [1.5, -2.0], [-3.0, 4.0], [1000.0, 7.25]]

    response = predict(model, model.inputs.validate_json(body(rows)))

    expected = oracle(store, "line").predict(np.array(rows)).tolist()
    values = [item.value for item in response.predictions if isinstance(item, ValuePrediction)]
    assert values == expected


def test_line_values_follow_y_equals_2a_minus_b_plus_3(store: Path) -> None:
    # conftest trains `line` on a = 0, 2, 4, ... and b = a + 1 only, so y = 2a - b + 3 is
    # identified on that line alone (off it the least-squares fit is 0.5a + 0.5b + 1.5).
    model = load(store, "line")
    rows = [[a, a + 1.0] for a in (0.0, 2.5, -3.0, 17.25, 1000.0)]

    response = predict(model, model.inputs.validate_json(body(rows)))

    assert len(response.predictions) == len(rows)
    for item, (a, b) in zip(response.predictions, rows, strict=True):
        assert isinstance(item, ValuePrediction)
        assert item.value == pytest.approx(2 * a - b + 3, abs=1e-9)


@pytest.mark.parametrize(
    ("row", "cell"),
    [
        pytest.param([math.nan, 1.0], 0, id="nan"),
        pytest.param([1.0, math.inf], 1, id="inf"),
        pytest.param([-math.inf, 1.0], 0, id="minus-inf"),
        pytest.param([True, 1.0], 0, id="bool"),
        pytest.param([1.0, "1.5"], 1, id="string-number"),
        pytest.param([1.0, b"2"], 1, id="bytes"),
    ],
)
def test_validate_rows_refuses_unbounded_features_the_json_path_refuses(
    store: Path, row: list[Any], cell: int
) -> None:
    """`line` has no bounds, so nothing but the strict type rules can refuse these rows."""
    inputs = load(store, "line").inputs

    with pytest.raises(InvalidInput) as raised:
        inputs.validate_rows([row])

    assert isinstance(raised.value.detail, list)
    assert [issue["loc"] for issue in raised.value.detail] == [["instances", 0, "row", cell]]


# -- JSON schema ------------------------------------------------------------------------------


def record_schema(inputs: InputSchema) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = inputs.json_schema(ref_template="#/$defs/{model}")
    items = schema["properties"]["instances"]["items"]
    record_ref = next(variant["$ref"] for variant in items["oneOf"] if "$ref" in variant)
    return schema, walk(schema, record_ref)


def test_json_schema_describes_the_pets_features(store: Path) -> None:
    inputs = load(store, "pets").inputs

    schema, record = record_schema(inputs)

    assert schema["additionalProperties"] is False
    assert schema["required"] == ["instances"]
    assert schema["properties"]["instances"]["minItems"] == 1
    assert schema["properties"]["instances"]["maxItems"] == 50
    assert list(record["properties"]) == PETS_FEATURES
    assert record["additionalProperties"] is False
    assert sorted(record["required"]) == sorted(PETS_FEATURES)
    assert record["properties"]["colour"]["enum"] == ["black", "ginger", "white"]
    assert record["properties"]["weight"]["type"] == "number"
    assert record["properties"]["weight"]["minimum"] == 0
    assert record["properties"]["age"]["type"] == "integer"
    assert (record["properties"]["age"]["minimum"], record["properties"]["age"]["maximum"]) == (
        0,
        40,
    )


def test_json_schema_row_variant_lists_features_in_order(store: Path) -> None:
    inputs = load(store, "flowers").inputs

    schema, record = record_schema(inputs)

    assert list(record["properties"]) == FLOWER_FEATURES
    assert all(record["properties"][name]["minimum"] == 0 for name in FLOWER_FEATURES)
    row = next(
        variant
        for variant in schema["properties"]["instances"]["items"]["oneOf"]
        if variant.get("type") == "array"
    )
    assert row["minItems"] == row["maxItems"] == 4
    assert [item["minimum"] for item in row["prefixItems"]] == [0, 0, 0, 0]

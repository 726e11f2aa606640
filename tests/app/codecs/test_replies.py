"""The JSON reply writer (app.codecs.replies), dicts for small outputs and column by column for large
ones, gives byte for byte what serialising the reply document with orjson gives, for every
kind of label and value."""

from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import orjson
import pytest
import sklearn
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import RandomForestClassifier

from app import native
from app.codecs.replies import COLUMNWISE_ROWS, columnwise_json, prediction_json
from app.serving.model import LoadedModel, ModelOutput, call_estimator, prediction_document
from app.serving.schema import InputSchema
from schemas.cards import FeatureSpec, ModelCard, TargetSpec
from tests.conftest import require_hot_path

FEATURES = [FeatureSpec(name="x", dtype="float")]


@pytest.fixture(autouse=True, params=["compiled gather", "numpy gather"])
def gather(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every reply is written twice: with the compiled gather (app/native) and with numpy's,
    as where no C compiler built it."""
    if request.param == "numpy gather":
        monkeypatch.setattr(native, "HOT_PATH", None)
    else:
        require_hot_path()
    return str(request.param)


def fitted_model(
    task: Literal["classification", "regression"], classes: list[Any] | None = None
) -> LoadedModel:
    """A real fitted estimator (only its classes matter to the reply) and its card."""
    x = np.zeros((len(classes or [0, 1]), 1))
    if task == "classification":
        assert classes is not None
        estimator: Any = DummyClassifier(strategy="prior").fit(x, np.array(classes))
    else:
        estimator = DummyRegressor().fit(x, np.arange(len(x), dtype=float))
    card = ModelCard(
        name="reply-check",
        version=3,
        task=task,
        features=FEATURES,
        target=TargetSpec(name="y", classes=classes),
        sklearn_version=sklearn.__version__,
        created_at=datetime.now(UTC),
        sha256="0" * 64,
    )
    return LoadedModel(card=card, estimator=estimator, inputs=InputSchema(card, max_rows=10))


def probabilities(rows: int, classes: int, generator: np.random.Generator) -> np.ndarray[Any, Any]:
    values = generator.random((rows, classes))
    values /= values.sum(axis=1, keepdims=True)
    # Values whose text differs in shape: whole, tiny, exponent forms, repeating decimals.
    special = [0.0, 1.0, 1e-300, 5e-324, 0.1 + 0.2, 1 / 3, 2.5e-7, 123456789.0]
    for index, value in enumerate(special[:rows]):
        values[index, index % classes] = value
    return values


LABEL_SETS: dict[str, list[Any]] = {
    "ints": [0, 1, 2],
    "negative ints": [-7, 3],
    "strings with commas and quotes": ["a,b", 'say "hi"', "back\\slash", "ünï ✓", "x"],
    "booleans": [False, True],
    "floats": [0.5, 1.0, 2.25],
}


@pytest.mark.parametrize("kind", LABEL_SETS)
@pytest.mark.parametrize("rows", [1, 2, 37, COLUMNWISE_ROWS, 1000])
def test_classification_replies_match_the_document(kind: str, rows: int) -> None:
    classes = LABEL_SETS[kind]
    model = fitted_model("classification", classes)
    generator = np.random.default_rng(rows)
    known = np.asarray(model.estimator.classes_)
    indices = generator.integers(0, len(known), size=rows)
    predictions = known[indices]
    proba = probabilities(rows, len(known), generator)

    for output in (
        ModelOutput(predictions, proba),
        ModelOutput(predictions, None),
        ModelOutput(predictions, proba, known, indices),  # labels taken by class index
    ):
        expected = orjson.dumps(prediction_document(model, output))
        assert prediction_json(model, output) == expected
        assert columnwise_json(model, output) == expected
        extra = {"filename": "rows ü,.csv", "rows": rows}
        expected = orjson.dumps({**prediction_document(model, output), **extra})
        assert prediction_json(model, output, extra) == expected
        assert columnwise_json(model, output, extra) == expected


@pytest.mark.parametrize("rows", [1, 5, 100, 3000])
def test_regression_replies_match_the_document(rows: int) -> None:
    model = fitted_model("regression")
    values = np.random.default_rng(rows).normal(scale=1e6, size=rows)
    values[:3] = [-0.0, 1e-310, 1.7976931348623157e308][: min(rows, 3)]
    output = ModelOutput(values, None)
    extra = {"filename": None, "rows": rows}

    for write in (prediction_json, columnwise_json):
        assert write(model, output) == orjson.dumps(prediction_document(model, output))
        assert write(model, output, extra) == orjson.dumps(
            {**prediction_document(model, output), **extra}
        )


@pytest.mark.parametrize("dtype", [">f8", "<f4", ">i8", "u8", "i2", "?"])
def test_columns_of_other_number_types_match_the_document(dtype: str) -> None:
    """orjson writes float64, integers and booleans from the array as from Python numbers; a
    float32 is written shorter, and a foreign byte order is refused: those take the list."""
    model = fitted_model("regression")
    values = np.array([0, 1, 3.25, 1 / 3, 200, -7, 1e-3], dtype=np.float64)
    if np.dtype(dtype).kind in "ui?":
        values = np.abs(np.round(values)) if dtype[0] in "u?" else np.round(values)
    output = ModelOutput(np.resize(values, COLUMNWISE_ROWS).astype(dtype), None)

    assert columnwise_json(model, output) == orjson.dumps(prediction_document(model, output))


def test_labels_outside_the_models_classes_are_written_too() -> None:
    model = fitted_model("classification", ["b", "a"])
    for labels in (
        np.array(["a", "zz,z", "a", "b"]),
        np.array(["a", "zz,z", "a"], dtype=object),
        np.array([1, "a,", None], dtype=object),
        np.array([1, 1.0, True, "a"], dtype=object),  # equal as dict keys, not as JSON
    ):
        output = ModelOutput(labels, None)

        assert columnwise_json(model, output) == orjson.dumps(prediction_document(model, output))


def test_an_empty_output_gives_an_empty_list() -> None:
    model = fitted_model("regression")
    output = ModelOutput(np.array([], dtype=np.float64), None)

    assert orjson.loads(columnwise_json(model, output))["predictions"] == []


def test_a_forests_reply_is_written_from_its_class_indices() -> None:
    """Through the real estimator call: a forest's labels come from its probabilities, and the
    reply writes them from the class indices it kept."""
    generator = np.random.default_rng(5)
    x = generator.normal(size=(600, 1))
    labels = np.array(["low, or none", 'high "and" rising'])[(x[:, 0] > 0).astype(int)]
    model = fitted_model("classification", ['high "and" rising', "low, or none"])
    model = LoadedModel(
        card=model.card,
        estimator=RandomForestClassifier(n_estimators=5, random_state=0).fit(x, labels),
        inputs=model.inputs,
    )
    output = call_estimator(model, generator.normal(size=(COLUMNWISE_ROWS * 2, 1)))

    assert model.labels_from_probabilities and output.class_indices is not None
    assert set(output.predictions.tolist()) == set(labels.tolist())
    assert columnwise_json(model, output) == orjson.dumps(prediction_document(model, output))

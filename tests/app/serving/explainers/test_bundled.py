"""Every bundled model (`modelport train`) explained on 1,000 rows: base value plus
contributions equals the explained output, within 1e-6, for the predicted class and another."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.serving.explainers import explainer_of
from app.serving.model import LoadedModel
from app.serving.registry import load_version
from app.training.examples import train_examples

ROWS = 1000
BUNDLED = [("iris", 1), ("iris", 2), ("breast-cancer", 1), ("diabetes", 1), ("digits", 1)]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("bundled") / "models"
    train_examples(store)
    return store


def spread_rows(model: LoadedModel, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """ROWS rows drawn over each feature's observed range (integers for int features)."""
    features = model.card.features
    low = np.array([f.observed_min for f in features], dtype=np.float64)
    high = np.array([f.observed_max for f in features], dtype=np.float64)
    rows = rng.uniform(low, high, size=(ROWS, len(features)))
    integral = np.array([f.dtype == "int" for f in features])
    rows[:, integral] = np.round(rows[:, integral])
    return rows


def explained_output(model: LoadedModel, output: str, rows: Any, classes: Any) -> Any:
    """The model's own output that the explanation must add up to, per row."""
    x = model.inputs.to_model_input(rows)
    estimator = model.estimator
    if output == "value":
        return estimator.predict(x)
    if output == "probability":
        return estimator.predict_proba(x)[np.arange(len(rows)), classes]
    margin = estimator.decision_function(x)
    if margin.ndim == 1:  # two classes: class 1's log-odds, class 0's is its negative
        return np.where(classes == 1, margin, -margin)
    return margin[np.arange(len(rows)), classes]


@pytest.mark.parametrize(("name", "version"), BUNDLED, ids=[f"{n}-v{v}" for n, v in BUNDLED])
def test_contributions_add_up_on_1000_rows(bundled: Path, name: str, version: int) -> None:
    model = load_version(
        bundled / name / str(version), name=name, version=version, max_rows=ROWS, trusted_types=[]
    )
    rows = spread_rows(model, np.random.default_rng(version))
    explainer = explainer_of(model)
    if model.card.task == "regression":
        choices = [None]
    else:
        predicted = np.searchsorted(model.estimator.classes_, model.estimator.predict(rows))
        choices = [predicted, (predicted + 1) % len(model.card.target.classes or [])]
    for classes in choices:
        found = explainer.explain(rows, classes)
        assert found.contributions.shape == (ROWS, len(model.card.features))
        expected = explained_output(model, explainer.output, rows, classes)
        np.testing.assert_allclose(found.output, expected, rtol=0, atol=1e-6)
        # One base value per class: what the model gives without knowing the row.
        for column in np.unique(classes) if classes is not None else [None]:
            bases = found.base if column is None else found.base[classes == column]
            assert np.ptp(bases) < 1e-9

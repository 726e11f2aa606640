"""The parity gate (app.serving.backend_gate) on real stores: a fast evaluator serves a version
only when it equals scikit-learn bit for bit at load; otherwise scikit-learn does, and the log
and the version's record say why."""

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import app.serving.backend_gate as backend_gate
from app.serving.backend_gate import backend_hook
from app.serving.backends import Evaluator, compile_evaluator
from app.serving.model import LoadedModel, call_estimator
from app.serving.registry import ModelRegistry
from tests.conftest import flower_data, flower_features, pets_frame, write_model


def loaded(store: Path, mode: Any = "auto") -> ModelRegistry:
    registry = ModelRegistry(store, max_rows=100, on_load=[backend_hook(mode)])
    registry.load()
    return registry


def test_the_store_gets_fast_backends_where_they_are_exact(store: Path) -> None:
    registry = loaded(store)
    backends = {(m.name, m.version): m.backend for m in registry.loaded_models()}
    # flowers v1/v2: arrays; pets: a DataFrame pipeline with one-hot categories; line: OLS.
    assert {key: backend.name for key, backend in backends.items()} == {
        ("flowers", 1): "numpy-linear",
        ("flowers", 2): "numpy-linear",
        ("pets", 1): "numpy-linear",
        ("line", 1): "numpy-linear",
    }
    assert all(backend.reason is None and backend.evaluator for backend in backends.values())


def test_backend_sklearn_keeps_scikit_learn_everywhere(store: Path) -> None:
    registry = loaded(store, "sklearn")
    for model in registry.loaded_models():
        assert (model.backend.name, model.backend.reason) == (
            "sklearn",
            "MODELPORT_BACKEND=sklearn",
        )
        assert model.backend.evaluator is None


def test_an_evaluator_one_ulp_off_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = flower_data()
    write_model(
        tmp_path,
        LogisticRegression(max_iter=1000).fit(x, y),
        name="flowers",
        task="classification",
        features=flower_features(),
        classes=["setosa", "versicolor", "virginica"],
    )
    real_compile = compile_evaluator

    def one_ulp_off(estimator: Any) -> Evaluator | str:
        evaluator = real_compile(estimator)
        assert isinstance(evaluator, Evaluator) and evaluator.predict_proba is not None
        exact = evaluator.predict_proba

        def nudged(features: Any) -> Any:
            proba = exact(features).copy()
            proba[-1, -1] = np.nextafter(proba[-1, -1], np.inf)
            return proba

        return replace(evaluator, predict_proba=nudged)

    monkeypatch.setattr(backend_gate, "compile_evaluator", one_ulp_off)
    with caplog.at_level(logging.INFO, logger="modelport.registry"):
        model = loaded(tmp_path).get("flowers")

    assert model.backend.name == "sklearn" and model.backend.evaluator is None
    assert model.backend.reason is not None
    assert model.backend.reason.startswith("numpy-linear differs from scikit-learn: ")
    assert "predict_proba" in model.backend.reason
    assert f"model flowers v1 served by sklearn: {model.backend.reason}" in caplog.text
    # And scikit-learn answers: the nudged value never reaches a client.
    rows = x[:5]
    output = call_estimator(model, rows, observe=False)
    assert output.probabilities is not None
    assert np.array_equal(output.probabilities, model.estimator.predict_proba(rows))


def test_the_start_up_log_names_each_backend(store: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="modelport.registry"):
        loaded(store)
    assert "model line v1 served by numpy-linear (parity checked in" in caplog.text


def test_the_evaluator_serves_and_scikit_learn_takes_nothing_else(store: Path) -> None:
    registry = loaded(store)
    model: LoadedModel = registry.get("flowers", 1)
    rows, _ = flower_data()
    output = call_estimator(model, rows, observe=False)
    assert output.probabilities is not None
    assert np.array_equal(output.probabilities, model.estimator.predict_proba(rows))
    assert output.predictions.tolist() == model.estimator.predict(rows).tolist()


def test_a_frame_pipeline_with_a_default_one_hot_encoder_is_exact(store: Path) -> None:
    # OneHotEncoder's default sparse output, stacked dense by its ColumnTransformer.
    model = loaded(store).get("pets")
    frame, _ = pets_frame()
    rows = [tuple(row) for row in frame.itertuples(index=False)] + [("purple", 3.0, 2)]
    features = model.inputs.to_model_input(rows)
    output = call_estimator(model, rows, observe=False)
    assert model.backend.name == "numpy-linear"
    assert output.probabilities is not None
    assert np.array_equal(output.probabilities, model.estimator.predict_proba(features))
    assert output.predictions.tolist() == model.estimator.predict(features).tolist()

"""CPU-bound predict must never block the event loop: other requests keep being answered."""

import threading
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sklearn.linear_model import LinearRegression

from app.config import Settings
from app.main import create_app
from schemas.cards import FeatureSpec
from tests.conftest import write_model

GATE_ARMED = threading.Event()
PREDICT_ENTERED = threading.Event()
RELEASE_PREDICT = threading.Event()


class GatedRegressor(LinearRegression):  # type: ignore[misc]  # sklearn is untyped
    """A real fitted regressor whose predict holds its thread until the test releases it,
    standing in for a slow model without making the test depend on timing."""

    def predict(self, X: object) -> np.ndarray:
        if GATE_ARMED.is_set():  # not while the registry predicts the card's example at load
            PREDICT_ENTERED.set()
            RELEASE_PREDICT.wait(timeout=30)
        result: np.ndarray = super().predict(X)
        return result


def test_liveness_answers_while_a_prediction_is_running(tmp_path: Path) -> None:
    xs = np.arange(10, dtype=float).reshape(5, 2)
    write_model(
        tmp_path,
        GatedRegressor().fit(xs, xs.sum(axis=1)),
        name="slow",
        task="regression",
        features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
    )
    for event in (GATE_ARMED, PREDICT_ENTERED, RELEASE_PREDICT):
        event.clear()
    outcome: dict[str, Any] = {}  # name -> the TestClient's response
    with TestClient(create_app(Settings(model_dir=tmp_path))) as client:
        GATE_ARMED.set()

        def call(key: str, method: str, path: str, **kwargs: object) -> None:
            outcome[key] = client.request(method, path, **kwargs)  # type: ignore[arg-type]

        slow = threading.Thread(
            target=call,
            args=("predict", "POST", "/models/slow/predict"),
            kwargs={"json": {"instances": [[1.0, 2.0]]}},
        )
        slow.start()
        try:
            assert PREDICT_ENTERED.wait(timeout=10), "predict never started"
            probe = threading.Thread(target=call, args=("health", "GET", "/healthz"))
            probe.start()
            probe.join(timeout=10)
            # Had predict run on the event loop, /healthz could not be answered before release.
            assert not probe.is_alive(), "/healthz blocked behind a running prediction"
            assert outcome["health"].status_code == 200
            assert "predict" not in outcome
        finally:
            RELEASE_PREDICT.set()
            slow.join(timeout=30)
            GATE_ARMED.clear()
    assert outcome["predict"].status_code == 200
    assert outcome["predict"].json()["predictions"] == [{"value": 3.0}]

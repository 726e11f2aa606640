"""A real fitted regressor whose predict raises on one magic input, so an end-to-end test can
make a model fail on valid input. The server unpickles it from the store (its cwd is the repo
root, so `tests` is importable there); any other row, the card's example included, answers
normally, so the version loads and serves."""

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression

MAGIC = 666.0
MESSAGE = "faulty model: the magic row breaks predict"
FEATURES = ("a", "b")


def target(rows: Any) -> np.ndarray[Any, Any]:
    """What the fitted model predicts exactly: 2a - b + 3."""
    x = np.asarray(rows, dtype=float)
    result: np.ndarray[Any, Any] = 2.0 * x[:, 0] - x[:, 1] + 3.0
    return result


class FaultyRegressor(LinearRegression):  # type: ignore[misc]  # sklearn is untyped
    """LinearRegression whose predict raises RuntimeError when a row's first feature is MAGIC."""

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        if (np.asarray(X, dtype=float)[:, 0] == MAGIC).any():
            raise RuntimeError(MESSAGE)
        result: np.ndarray[Any, Any] = super().predict(X)
        return result


def write_faulty_model(store: Path) -> Path:
    """Fit FaultyRegressor and write it into `store` as "faulty" v1 (regression, two floats)."""
    # Imported here, not at the top: the server imports this module to unpickle the model and
    # needs none of the test machinery that tests.conftest brings with it.
    from schemas.cards import FeatureSpec
    from tests.conftest import write_model

    xs = np.random.default_rng(4).uniform(-5, 5, size=(12, 2))  # not collinear: a unique fit
    return write_model(
        store,
        FaultyRegressor().fit(xs, target(xs)),
        name="faulty",
        task="regression",
        features=[FeatureSpec(name=name, dtype="float") for name in FEATURES],
        example=[1.0, 2.0],
    )

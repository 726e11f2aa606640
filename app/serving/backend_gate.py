"""The parity gate: which backend serves a version, decided once at load.

A fast evaluator (app.serving.backends) serves a version only when it equals scikit-learn bit
for bit, labels and every probability or value, on the card's example, on rows spread over each
feature's observed range, and (tree models) on rows placed exactly on each split threshold and
one ulp to either side. Anything else, or `MODELPORT_BACKEND=sklearn`, leaves scikit-learn in
charge; the start-up log, the card endpoint and the `modelport_model_backend` metric say which
backend serves each version and why.
"""

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from app.metrics import MODEL_BACKEND
from app.serving.backends import Evaluator, check_parity, compile_evaluator, parity_rows
from app.serving.model import Backend, LoadedModel
from schemas.cards import FeatureSpec

logger = logging.getLogger("modelport.registry")

BackendMode = Literal["auto", "sklearn"]
BACKEND_NAMES = ("numpy-linear", "numpy-trees", "sklearn")
# Rows spread over the observed ranges of a model fitted on a DataFrame (array models get the
# evaluator package's own spread, plus the threshold rows).
_FRAME_ROWS = 256


def backend_hook(mode: BackendMode) -> Callable[[LoadedModel], None]:
    """A registry load hook that chooses each loaded version's backend."""

    def choose(model: LoadedModel) -> None:
        started = time.perf_counter()
        model.backend = choose_backend(model, mode)
        backend = model.backend
        for name in BACKEND_NAMES:  # a reload may change the backend: one label is 1
            MODEL_BACKEND.labels(model.name, str(model.version), name).set(
                1 if name == backend.name else 0
            )
        if backend.evaluator is not None:
            logger.info(
                "model %s v%d served by %s (parity checked in %.0f ms)",
                model.name,
                model.version,
                backend.name,
                1000 * (time.perf_counter() - started),
            )
        else:
            logger.info(
                "model %s v%d served by sklearn: %s", model.name, model.version, backend.reason
            )

    return choose


def choose_backend(model: LoadedModel, mode: BackendMode) -> Backend:
    if mode == "sklearn":
        return Backend("sklearn", reason="MODELPORT_BACKEND=sklearn")
    compiled = compile_evaluator(model.estimator)
    if isinstance(compiled, str):
        return Backend("sklearn", reason=compiled)
    try:
        mismatch = check_parity(model.estimator, compiled, _parity_input(model, compiled))
    except Exception as exc:  # a check that cannot run proves nothing: scikit-learn serves
        mismatch = f"parity check failed to run: {type(exc).__name__}: {exc}"
    if mismatch is not None:
        return Backend("sklearn", reason=f"{compiled.name} differs from scikit-learn: {mismatch}")
    return Backend(compiled.name, evaluator=compiled)


def _parity_input(model: LoadedModel, evaluator: Evaluator) -> Any:
    """The rows the gate compares on, in the form the estimator receives them."""
    inputs = model.inputs
    features = model.card.features
    example = tuple(inputs.example["instances"][0][name] for name in inputs.feature_names)
    rng = np.random.default_rng(0)
    if inputs.frame_columns is None and inputs.numeric:
        low, high = _ranges(features)
        return parity_rows(model.estimator, np.array([example], dtype=np.float64), low, high, rng)
    rows = [example, *_spread_rows(features, rng)]
    return inputs.to_model_input(rows)


def _ranges(features: list[FeatureSpec]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Each feature's observed range (its bounds, else a unit range around zero)."""
    low = [_first(f.observed_min, f.minimum, -1.0) for f in features]
    high = [_first(f.observed_max, f.maximum, 1.0) for f in features]
    return np.array(low, dtype=np.float64), np.array(high, dtype=np.float64)


def _first(*values: float | None) -> float:
    return float(next(value for value in values if value is not None))


def _spread_rows(features: list[FeatureSpec], rng: np.random.Generator) -> list[tuple[Any, ...]]:
    """Rows over the observed ranges with every category in turn (models fitted on frames)."""
    low, high = _ranges(features)
    numbers = rng.uniform(low, high, size=(_FRAME_ROWS, len(features)))
    rows = []
    for index, drawn in enumerate(numbers):
        row: list[Any] = []
        for feature, value in zip(features, drawn.tolist(), strict=True):
            if feature.dtype == "category":
                assert feature.categories is not None
                row.append(feature.categories[index % len(feature.categories)])
            elif feature.dtype == "int":
                row.append(int(round(value)))
            else:
                row.append(value)
        rows.append(tuple(row))
    return rows

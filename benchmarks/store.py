"""The benchmark's model store, and which backend modelport chose for each model in it.

iris and breast-cancer are the bundled examples, trained by `modelport train`; hist-cancer is
fitted here and added with `modelport import`, the way a user adds their own estimator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier

from benchmarks.servers import RunningServer, ServerError, run_modelport

logger = logging.getLogger("benchmarks")

EXAMPLES = ("iris", "breast-cancer")
HIST_MODEL = "hist-cancer"
MODELS = (*EXAMPLES, HIST_MODEL)


def build_store(work_dir: Path) -> Path:
    store = work_dir / "models"
    logger.info("training %s into %s", " and ".join(EXAMPLES), store)
    run_modelport("train", "--model-dir", str(store), "--only", *EXAMPLES, timeout=600)
    add_hist_model(store, work_dir)
    return store


def add_hist_model(store: Path, work_dir: Path) -> None:
    """Fit a HistGradientBoostingClassifier on breast-cancer and import it as hist-cancer v1."""
    logger.info("fitting %s and importing it into %s", HIST_MODEL, store)
    data = load_breast_cancer()
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    model.fit(data.data, data.target)
    # A .joblib source is copied byte for byte to `model.joblib`, the file the Flask prototype
    # and the naive port load (a .skops import would leave them nothing to load).
    artifact = work_dir / f"{HIST_MODEL}.joblib"
    joblib.dump(model, artifact)
    run_modelport(
        "import", str(artifact), "--name", HIST_MODEL, "--model-dir", str(store),
        "--description", "Benchmark: hist gradient boosting (100 iterations) on breast-cancer.",
        timeout=300,
    )  # fmt: skip
    if not (store / HIST_MODEL / "1" / "model.joblib").is_file():
        raise ServerError(f"modelport import wrote no {HIST_MODEL}/1/model.joblib in {store}")


@dataclass(frozen=True)
class ModelBackend:
    """What serves a model's default version in modelport: `numpy-linear`, `numpy-trees` (equal
    to scikit-learn bit for bit at load) or `sklearn`, with the reason for the latter."""

    model: str
    version: int
    name: str
    reason: str | None

    def render(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.model} v{self.version} {self.name}{reason}"


def read_backends(server: RunningServer, models: Sequence[str]) -> list[ModelBackend]:
    """`GET /models/{name}` for each model: the backend of its default version."""
    backends = []
    for model in models:
        response = httpx.get(f"{server.url}/models/{model}", timeout=30)
        if response.status_code != 200:
            raise ServerError(
                f"GET /models/{model} answered {response.status_code}: {response.text[:300]}"
            )
        info = response.json()
        version = int(info["default_version"])
        backend = info.get("backends", {}).get(str(version))
        if backend is None:
            raise ServerError(f"GET /models/{model} names no backend for v{version}: {info}")
        backends.append(ModelBackend(model, version, backend["name"], backend.get("reason")))
    return backends

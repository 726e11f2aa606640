"""Shared fixtures: tiny real models fitted in-process and written into a temporary store."""

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from app import native
from app.config import Settings
from app.main import create_app
from app.store.artifacts import sha256_of
from schemas.cards import FeatureSpec, ModelCard, TargetSpec, TrafficSplit

# Apps made in-process (TestClient runs their lifespan) start no gRPC server, and the servers the
# e2e tests start inherit this: a test that wants gRPC gives it a free port of its own, so runs
# side by side never share the default port (SO_REUSEPORT would let them, silently).
os.environ["MODELPORT_GRPC_PORT"] = "0"

FLOWER_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def require_hot_path() -> native.HotPath:
    """The compiled hot path (app/native). Where `make` found no C compiler it was not built:
    the test skips, except under CI=true, where it fails (.ci/run installs gcc)."""
    if native.HOT_PATH is None:
        reason = f"{native.LIBRARY} is not built (no C compiler when `make` ran)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: .ci/run installs gcc")
        pytest.skip(reason)
    return native.HOT_PATH


def write_model(
    store: Path,
    estimator: Any,
    *,
    name: str,
    version: int = 1,
    task: Literal["classification", "regression"],
    features: list[FeatureSpec],
    classes: list[Any] | None = None,
    example: list[Any] | None = None,
) -> Path:
    """Dump `estimator` and its card into `store/name/version/`, as the store expects."""
    version_dir = store / name / str(version)
    version_dir.mkdir(parents=True)
    artifact = version_dir / "model.joblib"
    joblib.dump(estimator, artifact)
    card = ModelCard(
        name=name,
        version=version,
        task=task,
        description=f"test model {name}",
        features=features,
        target=TargetSpec(name="target", classes=classes),
        metrics={},
        example=example,
        sklearn_version=sklearn.__version__,
        created_at=datetime.now(UTC),
        sha256=sha256_of(artifact),
    )
    (version_dir / "card.json").write_text(card.model_dump_json(indent=2))
    return version_dir


def flower_data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0]])
    x = np.vstack([centre + rng.normal(0, 0.2, size=(30, 4)) for centre in centres])
    y = np.repeat(np.array(["setosa", "versicolor", "virginica"]), 30)
    return x, y


def flower_rows(count: int = 6) -> list[list[float]]:
    """Training rows spread over the three classes; a few training rows have a negative
    width (noise around 0.2) that the card's minimum of 0 refuses, so they are skipped."""
    x, _ = flower_data()
    valid = x[(x >= 0).all(axis=1)]
    picked = valid[:: len(valid) // count][:count]
    return [[round(float(v), 3) for v in row] for row in picked]


def pet_rows() -> list[list[Any]]:
    frame, _ = pets_frame()
    return [
        [str(colour), float(weight), int(age)]
        for colour, weight, age in frame.head(8).itertuples(index=False)
    ]


def flower_features() -> list[FeatureSpec]:
    return [FeatureSpec(name=n, dtype="float", minimum=0.0, description=n) for n in FLOWER_FEATURES]


def pets_frame() -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(1)
    colour = rng.choice(["black", "ginger", "white"], size=120)
    weight = rng.normal(4.0, 1.0, size=120)
    age = rng.integers(1, 15, size=120)
    y = np.where((colour == "ginger") | (weight > 4.5), "cat", "dog")
    return pd.DataFrame({"colour": colour, "weight": weight, "age": age}), y


def fit_pets_pipeline() -> Pipeline:
    frame, y = pets_frame()
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])],
                    remainder="passthrough",
                ),
            ),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    return pipeline.fit(frame, y)


def churn_frame(rows: int = 400) -> pd.DataFrame:
    """The issue's churn table: integer tenure, float charges, two categories, a yes/no target."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "tenure_months": rng.integers(0, 73, size=rows),
            "monthly_charges": rng.uniform(18.0, 120.0, size=rows).round(2),
            "contract": rng.choice(["month-to-month", "one-year", "two-year"], size=rows),
            "payment_method": rng.choice(["card", "bank", "check"], size=rows),
        }
    )
    short = (frame["tenure_months"] < 12) & (frame["contract"] == "month-to-month")
    frame["churned"] = np.where(short | (frame["monthly_charges"] > 110), "yes", "no")
    return frame


def fit_churn_pipeline(frame: pd.DataFrame) -> Pipeline:
    """A HistGradientBoostingClassifier behind a ColumnTransformer, fitted on `frame`."""
    encode = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("categories", encode, ["contract", "payment_method"])],
                    remainder="passthrough",
                ),
            ),
            ("clf", HistGradientBoostingClassifier(max_iter=20, random_state=0)),
        ]
    )
    return pipeline.fit(frame.drop(columns="churned"), frame["churned"])


def pets_features() -> list[FeatureSpec]:
    return [
        FeatureSpec(name="colour", dtype="category", categories=["black", "ginger", "white"]),
        FeatureSpec(name="weight", dtype="float", minimum=0.0),
        FeatureSpec(name="age", dtype="int", minimum=0, maximum=40),
    ]


def build_store(store: Path) -> Path:
    """flowers v1+v2 (array-trained classifiers, 90/10 split), pets (DataFrame pipeline with a
    categorical column), line (regressor)."""
    x, y = flower_data()
    write_model(
        store,
        LogisticRegression(max_iter=1000).fit(x, y),
        name="flowers",
        version=1,
        task="classification",
        features=flower_features(),
        classes=["setosa", "versicolor", "virginica"],
        example=[5.1, 3.5, 1.4, 0.2],
    )
    write_model(
        store,
        LogisticRegression(C=0.1, max_iter=1000).fit(x, y),
        name="flowers",
        version=2,
        task="classification",
        features=flower_features(),
        classes=["setosa", "versicolor", "virginica"],
    )
    (store / "flowers" / "traffic.json").write_text(
        TrafficSplit(weights={1: 90, 2: 10}).model_dump_json()
    )
    write_model(
        store,
        fit_pets_pipeline(),
        name="pets",
        task="classification",
        features=pets_features(),
        classes=["cat", "dog"],
        example=["ginger", 3.5, 4],
    )
    xs = np.random.default_rng(2).uniform(-5, 5, size=(12, 2))  # not collinear: a unique fit
    write_model(
        store,
        LinearRegression().fit(xs, xs @ np.array([2.0, -1.0]) + 3.0),
        name="line",
        task="regression",
        features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
    )
    return store


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return build_store(tmp_path / "models")


@pytest.fixture
def settings(store: Path) -> Settings:
    return Settings(model_dir=store, max_rows=50, max_body_bytes=64 * 1024)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client
    app.dependency_overrides.clear()


# MLflow writes SQLite tracking stores through SQLAlchemy (and alembic).
MLFLOW_SQLITE = all(importlib.util.find_spec(m) is not None for m in ("sqlalchemy", "alembic"))


@pytest.fixture(scope="session")
def mlflow_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real MLflow models, written once per session by mlflow-skinny itself in a subprocess
    (tests/app/training/mlflow_writer.py says what): the folder and the run and model ids."""
    folder = tmp_path_factory.mktemp("mlflow")
    repo = Path(__file__).resolve().parents[1]
    pythonpath = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "MLFLOW_DISABLE_TELEMETRY": "true"}
    writer = repo / "tests" / "app" / "training" / "mlflow_writer.py"
    run = subprocess.run(
        [sys.executable, str(writer), *(["sqlite"] if MLFLOW_SQLITE else [])],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    ids: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return {"folder": folder, **ids}


class _CloudEventsReceiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, Any]] = []
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def cloudevents_sink() -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """A CloudEvents receiver on the loopback (stdlib http.server): its URL, and each POST's
    (Content-Type, parsed body) as it arrives."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CloudEventsReceiver)
    _CloudEventsReceiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events", _CloudEventsReceiver.received
    server.shutdown()
    server.server_close()

"""Compiled backends through every surface: each estimator type is served by its fast evaluator
(or, unsupported, by scikit-learn), and every surface answers exactly what scikit-learn's own
`predict`/`predict_proba` give, bit for bit, on generated rows and on rows placed on each split
threshold and one float32 ulp to either side."""

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from threadpoolctl import threadpool_limits

from app.config import Settings
from app.main import create_app
from app.serving.backends.parity import split_thresholds
from schemas.cards import FeatureSpec
from tests.conftest import write_model

FEATURES = ["a", "b", "c", "d"]
CLASSES = ["cold", "mild", "warm"]


def _data() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 2.0, size=(300, 4))
    value = x @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(0, 0.5, 300)
    labels = np.array(CLASSES)[np.digitize(value, [-1.5, 1.5])]
    return x, labels, value


# name -> (estimator, task, backend it must get)
def _estimators() -> dict[str, tuple[Any, str, str]]:
    return {
        "logistic": (LogisticRegression(max_iter=500), "classification", "numpy-linear"),
        "scaled-logistic": (
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
            "classification",
            "numpy-linear",
        ),
        "linear": (LinearRegression(), "regression", "numpy-linear"),
        "scaled-ridge": (make_pipeline(MinMaxScaler(), Ridge()), "regression", "numpy-linear"),
        "tree": (
            DecisionTreeClassifier(max_depth=6, random_state=0),
            "classification",
            "numpy-trees",
        ),
        "tree-regressor": (
            DecisionTreeRegressor(max_depth=6, random_state=0),
            "regression",
            "numpy-trees",
        ),
        "forest": (
            RandomForestClassifier(n_estimators=15, random_state=0, n_jobs=1),
            "classification",
            "numpy-trees",
        ),
        "forest-regressor": (
            RandomForestRegressor(n_estimators=10, random_state=0, n_jobs=1),
            "regression",
            "numpy-trees",
        ),
        "extra-regressor": (
            ExtraTreesRegressor(n_estimators=10, random_state=0, n_jobs=1),
            "regression",
            "numpy-trees",
        ),
        "boosting": (
            GradientBoostingClassifier(n_estimators=15, random_state=0),
            "classification",
            "numpy-trees",
        ),
        "hist": (
            HistGradientBoostingClassifier(max_iter=15, random_state=0),
            "classification",
            "numpy-trees",
        ),
        "hist-regressor": (
            HistGradientBoostingRegressor(max_iter=15, random_state=0),
            "regression",
            "numpy-trees",
        ),
        "neighbours": (KNeighborsClassifier(), "classification", "sklearn"),
    }


def _fitted() -> dict[str, tuple[Any, str, str]]:
    x, labels, value = _data()
    with threadpool_limits(limits=1, user_api="openmp"):
        return {
            name: (estimator.fit(x, labels if task == "classification" else value), task, backend)
            for name, (estimator, task, backend) in _estimators().items()
        }


FITTED = _fitted()


def _rows(estimator: Any) -> np.ndarray[Any, Any]:
    """2,000 generated rows, then rows on each split threshold and one float32 ulp either side."""
    rng = np.random.default_rng(5)
    rows = [rng.normal(0.0, 2.5, size=(2000, 4))]
    pairs = split_thresholds(estimator)
    if len(pairs) > 1000:  # within the 10,000-row limit of one request
        pairs = pairs[rng.choice(len(pairs), 1000, replace=False)]
    if len(pairs):
        feature = pairs[:, 0].astype(np.intp)
        at32 = pairs[:, 1].astype(np.float32)
        values = np.concatenate(
            [
                pairs[:, 1],
                at32.astype(np.float64),
                np.nextafter(at32, np.float32(-np.inf)).astype(np.float64),
                np.nextafter(at32, np.float32(np.inf)).astype(np.float64),
            ]
        )
        placed = rng.normal(0.0, 2.5, size=(len(values), 4))
        placed[np.arange(len(values)), np.tile(feature, 4)] = values
        rows.append(placed)
    return np.concatenate(rows)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    store = tmp_path_factory.mktemp("backends") / "models"
    for name, (estimator, task, _) in FITTED.items():
        write_model(
            store,
            estimator,
            name=name,
            task=task,  # type: ignore[arg-type]
            features=[FeatureSpec(name=f, dtype="float") for f in FEATURES],
            classes=CLASSES if task == "classification" else None,
            example=[0.5, -0.5, 1.0, 0.0],
        )
    settings = Settings(model_dir=store, max_rows=10_000, max_body_bytes=8 << 20)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _expected(
    name: str, rows: np.ndarray[Any, Any]
) -> tuple[list[Any], np.ndarray[Any, Any] | None]:
    estimator, task, _ = FITTED[name]
    with threadpool_limits(limits=1, user_api="openmp"):
        predicted = estimator.predict(rows).tolist()
        proba = estimator.predict_proba(rows) if task == "classification" else None
    return predicted, proba


def _assert_items(name: str, items: list[dict[str, Any]], rows: np.ndarray[Any, Any]) -> None:
    predicted, proba = _expected(name, rows)
    if proba is None:
        assert [item["value"] for item in items] == predicted  # exact: floats round-trip JSON
        return
    assert [item["label"] for item in items] == predicted
    served = np.array([[item["probabilities"][c] for c in CLASSES] for item in items])
    assert np.array_equal(served, proba), name


@pytest.mark.parametrize("name", sorted(FITTED))
def test_each_version_gets_the_backend_it_earns(client: TestClient, name: str) -> None:
    info = client.get(f"/models/{name}").json()
    backend = info["backends"]["1"]
    assert backend["name"] == FITTED[name][2]
    if backend["name"] == "sklearn":
        assert "KNeighborsClassifier: no fast evaluator" in backend["reason"]
    else:
        assert backend["reason"] is None


@pytest.mark.parametrize("name", sorted(FITTED))
def test_json_rows_equal_scikit_learn_bit_for_bit(client: TestClient, name: str) -> None:
    rows = _rows(FITTED[name][0])
    response = client.post(f"/models/{name}/predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    _assert_items(name, response.json()["predictions"], rows)


@pytest.mark.parametrize("name", sorted(FITTED))
def test_single_rows_equal_scikit_learn_bit_for_bit(client: TestClient, name: str) -> None:
    # scikit-learn itself may differ in the last bits between one row and many (BLAS picks
    # another kernel), so each single-row answer is compared with its own single-row call.
    for row in _rows(FITTED[name][0])[::97]:
        response = client.post(f"/models/{name}/predict", json={"instances": [row.tolist()]})
        assert response.status_code == 200, response.text
        _assert_items(name, response.json()["predictions"], row[None, :])


@pytest.mark.parametrize("name", sorted(FITTED))
def test_csv_uploads_equal_scikit_learn_bit_for_bit(client: TestClient, name: str) -> None:
    rows = _rows(FITTED[name][0])
    text = ",".join(FEATURES) + "\n" + "\n".join(",".join(map(repr, row)) for row in rows.tolist())
    response = client.post(
        f"/models/{name}/predict/file", files={"file": ("rows.csv", io.BytesIO(text.encode()))}
    )
    assert response.status_code == 200, response.text
    _assert_items(name, response.json()["predictions"], rows)


@pytest.mark.parametrize("name", sorted(FITTED))
def test_v2_tensors_equal_scikit_learn_bit_for_bit(client: TestClient, name: str) -> None:
    rows = _rows(FITTED[name][0])
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    response = client.post(f"/v2/models/{name}/infer", content=json.dumps(body))
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    predicted, proba = _expected(name, rows)
    assert outputs["predict"]["data"] == predicted
    if proba is not None:
        served = np.array(outputs["predict_proba"]["data"]).reshape(proba.shape)
        assert np.array_equal(served, proba)


def test_forms_equal_scikit_learn(client: TestClient) -> None:
    rows = _rows(FITTED["forest"][0])[::250]
    for row in rows.tolist():
        response = client.post(
            "/models/forest/predict/form", data=dict(zip(FEATURES, map(repr, row), strict=True))
        )
        assert response.status_code == 200, response.text
        _assert_items("forest", response.json()["predictions"], np.array([row]))


def test_backends_are_in_the_metrics(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'modelport_model_backend{backend="numpy-trees",model="forest",version="1"} 1.0' in text
    assert 'modelport_model_backend{backend="sklearn",model="forest",version="1"} 0.0' in text
    assert 'modelport_model_backend{backend="sklearn",model="neighbours",version="1"} 1.0' in text

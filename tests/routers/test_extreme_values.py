"""Finite but extreme numbers are the client's to fix: always a 4xx, never a 500."""

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression

from app.config import Settings
from app.main import create_app
from app.serving.schema import FLOAT32_MAX
from schemas.cards import FeatureSpec
from tests.conftest import write_model


@pytest.fixture
def extreme_store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 10, size=(60, 2))
    features = [FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")]
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, x[:, 0] > 5)
    write_model(
        tmp_path,
        forest,
        name="forest",
        task="classification",
        features=features,
        classes=[False, True],
    )
    # A regressor whose answer overflows float64 for large but representable inputs.
    steep = LinearRegression().fit(x, x[:, 0])
    steep.coef_ = np.array([1e300, 0.0])  # fitting to such targets would overflow; set directly
    write_model(tmp_path, steep, name="steep", task="regression", features=features)
    return tmp_path


def test_values_beyond_float32_are_refused_before_a_float32_model_sees_them(
    extreme_store: Path,
) -> None:
    with TestClient(create_app(Settings(model_dir=extreme_store))) as client:
        refused = client.post("/models/forest/predict", json={"instances": [[1.7e308, 1.0]]})
        edge = client.post(
            "/models/forest/predict", json={"instances": [[FLOAT32_MAX, -FLOAT32_MAX]]}
        )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["type"] == "less_than_equal"
    assert edge.status_code == 200, edge.text


def test_a_model_that_cannot_answer_finitely_is_a_422_naming_the_row(extreme_store: Path) -> None:
    with TestClient(create_app(Settings(model_dir=extreme_store))) as client:
        reply = client.post("/models/steep/predict", json={"instances": [[1.0, 1.0], [1e10, 1.0]]})
        v2 = client.post(
            "/v2/models/steep/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1e10, 1.0]}]
            },
        )
    assert reply.status_code == 422, reply.text
    assert reply.json()["detail"] == [
        {
            "loc": ["instances", 1],
            "msg": "The model gives no finite answer for this row: are its values far outside the range seen in training?",
            "type": "non_finite_output",
        }
    ]
    assert v2.status_code == 400 and "no finite answer" in v2.json()["error"]


@pytest.mark.parametrize(
    ("age", "status"), [(4.0, 200), (4, 200), (4.5, 422), (True, 422), ("4", 422)]
)
def test_int_features_take_integral_floats_only(
    client: TestClient, age: object, status: int
) -> None:
    reply = client.post(
        "/models/pets/predict",
        json={"instances": [{"colour": "ginger", "weight": 3.5, "age": age}]},
    )
    assert reply.status_code == status, reply.text

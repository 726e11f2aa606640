"""Liveness and readiness probes, on healthy, broken and empty stores."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import build_store


@contextmanager
def client_for(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_dir))) as client:
        yield client


def test_liveness(client: TestClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness_counts_every_loaded_version(client: TestClient) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "models": 4, "unavailable": {}}


def test_readiness_names_a_tampered_artifact_while_other_models_keep_serving(
    tmp_path: Path,
) -> None:
    store = build_store(tmp_path / "models")
    with (store / "pets" / "1" / "model.joblib").open("ab") as stream:
        stream.write(b"\0")

    with client_for(store) as client:
        ready = client.get("/readyz")
        flowers = client.post("/models/flowers/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        line = client.post("/models/line/predict", json={"instances": [{"a": 1.0, "b": 2.0}]})
        pets = client.post("/models/pets/predict", json={"instances": [["black", 4.0, 3]]})
        liveness = client.get("/healthz")

    assert ready.status_code == 503
    envelope = ready.json()
    assert set(envelope) == {"error", "detail"}
    assert envelope["error"] == "NotReady"
    detail = envelope["detail"]
    assert detail["status"] == "not ready"
    assert detail["models"] == 3
    assert list(detail["unavailable"]) == ["pets/1"]
    assert "SHA-256" in detail["unavailable"]["pets/1"]
    assert flowers.status_code == 200
    assert flowers.json()["model_name"] == "flowers"
    assert line.status_code == 200
    assert line.json()["model_name"] == "line"
    assert pets.status_code == 503
    assert pets.json()["error"] == "ModelUnavailable"
    assert liveness.status_code == 200


def test_readiness_names_a_tampered_pinned_version(tmp_path: Path) -> None:
    store = build_store(tmp_path / "models")
    with (store / "flowers" / "2" / "model.joblib").open("ab") as stream:
        stream.write(b"\0")

    with client_for(store) as client:
        ready = client.get("/readyz")
        pinned = client.post(
            "/models/flowers/versions/2/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}
        )
        default = client.post("/models/flowers/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})

    assert ready.status_code == 503
    unavailable = ready.json()["detail"]["unavailable"]
    assert "SHA-256" in unavailable["flowers/2"]
    assert pinned.status_code == 503
    assert pinned.json()["error"] == "ModelUnavailable"
    assert "SHA-256" in pinned.json()["detail"]
    assert default.status_code == 200
    assert default.json()["model_version"] == 1


def test_readiness_fails_for_an_empty_store(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()

    with client_for(empty) as client:
        response = client.get("/readyz")
        liveness = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {
        "error": "NotReady",
        "detail": {
            "status": "not ready",
            "models": 0,
            "unavailable": {"store": "no models in the store"},
        },
    }
    assert liveness.status_code == 200


def test_readiness_fails_for_a_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with client_for(missing) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"] == "NotReady"
    assert response.json()["detail"]["unavailable"] == {
        str(missing): "model store directory does not exist"
    }

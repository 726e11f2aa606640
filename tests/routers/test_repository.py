"""The Open Inference Protocol's repository extension through the real app (in process: the
repository loads and unloads in this process): the index, load and unload, who may write, the
protocol's error shape, and the OpenAPI document."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sklearn.linear_model import LinearRegression

from app.config import Settings
from app.main import create_app
from schemas.cards import FeatureSpec
from tests.conftest import write_model
from tests.routers.test_v2 import ROW, assert_v2_error, infer_body

INDEX = "/v2/repository/index"
KEY = "repo-key-1"


def load(name: str) -> str:
    return f"/v2/repository/models/{name}/load"


def unload(name: str) -> str:
    return f"/v2/repository/models/{name}/unload"


def tamper(version_dir: Path) -> None:
    with (version_dir / "model.joblib").open("ab") as artifact:
        artifact.write(b"tampered")


@pytest.fixture
def writable(store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=store, repository_writes=True))) as client:
        yield client


def index(client: TestClient, body: Any = None) -> list[dict[str, Any]]:
    reply = client.post(INDEX) if body is None else client.post(INDEX, json=body)
    assert reply.status_code == 200, reply.text
    rows: list[dict[str, Any]] = reply.json()
    return rows


# -- the index --------------------------------------------------------------------------------


def test_the_index_lists_every_version_in_the_protocols_shape(store: Path) -> None:
    tamper(store / "flowers" / "2")
    (store / "drafts").mkdir()
    with TestClient(create_app(Settings(model_dir=store))) as client:
        rows = index(client)

    assert rows[0] == {
        "name": "drafts",
        "state": "UNAVAILABLE",
        "reason": "no version folders (1, 2, ...) in it",
    }
    assert rows[1:3] == [
        {"name": "flowers", "version": "1", "state": "READY", "reason": ""},
        {
            "name": "flowers",
            "version": "2",
            "state": "UNAVAILABLE",
            "reason": rows[2]["reason"],
        },
    ]
    assert rows[2]["reason"].startswith("SHA-256 mismatch")
    assert [(row["name"], row["version"]) for row in rows[3:]] == [("line", "1"), ("pets", "1")]


@pytest.mark.parametrize(
    ("body", "listed"),
    [
        (None, 4),  # tritonclient sends no body at all
        ({}, 4),
        ({"ready": False}, 4),
        ({"ready": True}, 3),
    ],
)
def test_the_index_body_is_optional_and_ready_filters(store: Path, body: Any, listed: int) -> None:
    tamper(store / "flowers" / "2")
    with TestClient(create_app(Settings(model_dir=store))) as client:
        assert len(index(client, body)) == listed


def test_the_index_needs_no_write_permission_but_a_bad_body_is_a_protocol_400(
    client: TestClient,
) -> None:
    assert len(index(client)) == 4  # writes are off by default; reading is not a write
    assert_v2_error(client.post(INDEX, json={"ready": "maybe"}), 400)
    assert_v2_error(client.post(INDEX, json={"ready": 0}), 400)  # strict: not a boolean
    assert_v2_error(client.post(INDEX, json={"ready": "true"}), 400)
    assert_v2_error(client.post(INDEX, content=b"[1]"), 400)
    assert_v2_error(client.post(INDEX, content=b"{not json"), 400)
    assert_v2_error(client.get(INDEX), 405)


# -- unload and load --------------------------------------------------------------------------


def test_unload_stops_every_surface_of_the_model_and_load_brings_it_back(
    writable: TestClient,
) -> None:
    assert writable.post(unload("flowers")).json() == {}

    message = assert_v2_error(
        writable.post("/v2/models/flowers/infer", json=infer_body([ROW])), 404
    )
    assert "unloaded" in message
    assert_v2_error(writable.get("/v2/models/flowers/versions/1/ready"), 404)
    friendly = writable.post("/models/flowers/predict", json={"instances": [ROW]})
    assert friendly.status_code == 404 and "unloaded" in friendly.json()["detail"]
    assert "flowers" not in {model["name"] for model in writable.get("/models").json()["data"]}
    assert {row["state"] for row in index(writable) if row["name"] == "flowers"} == {"UNLOADED"}
    # A deliberate unload is no failure: the server stays ready.
    assert writable.get("/readyz").status_code == 200
    assert writable.get("/v2/health/ready").json() == {"ready": True}
    metrics = writable.get("/metrics").text
    assert 'modelport_model_loaded{model="flowers",version="1"} 0.0' in metrics
    # The docs list only what serves.
    assert "/v2/models/flowers/infer" not in writable.get("/openapi.json").json()["paths"]

    assert writable.post(load("flowers")).json() == {}

    reply = writable.post("/v2/models/flowers/infer", json=infer_body([ROW]))
    assert reply.status_code == 200, reply.text
    assert (
        'modelport_model_loaded{model="flowers",version="1"} 1.0' in writable.get("/metrics").text
    )
    assert "/v2/models/flowers/infer" in writable.get("/openapi.json").json()["paths"]


def test_tritons_load_and_unload_bodies_are_accepted_and_their_parameters_ignored(
    writable: TestClient,
) -> None:
    unloaded = writable.post(unload("pets"), json={"parameters": {"unload_dependents": False}})
    assert unloaded.status_code == 200, unloaded.text
    loaded = writable.post(load("pets"), content=json.dumps({}).encode())  # no Content-Type
    assert loaded.status_code == 200, loaded.text
    config = {"parameters": {"config": '{"backend": "onnx"}', "file:1/model.onnx": "AAAA"}}
    assert writable.post(load("pets"), json=config).status_code == 200


def test_a_model_copied_into_the_store_serves_after_a_load(
    writable: TestClient, store: Path
) -> None:
    xs = np.random.default_rng(3).uniform(-5, 5, size=(12, 2))
    estimator = LinearRegression().fit(xs, xs @ np.array([1.5, 0.5]) - 2.0)
    staging = store.parent / "staging"
    write_model(
        staging,
        estimator,
        name="fresh",
        task="regression",
        features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
    )
    (staging / "fresh").rename(store / "fresh")
    assert_v2_error(writable.post("/v2/models/fresh/infer", json=infer_body([[1.0, 2.0]])), 404)

    assert writable.post(load("fresh")).status_code == 200

    reply = writable.post("/models/fresh/predict", json={"instances": [[1.0, 2.0]]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"][0]["value"] == pytest.approx(
        float(estimator.predict(np.array([[1.0, 2.0]]))[0])
    )


def test_a_model_that_cannot_load_is_a_400_naming_why(writable: TestClient, store: Path) -> None:
    tamper(store / "line" / "1")

    message = assert_v2_error(writable.post(load("line")), 400)

    assert message.startswith("Model 'line' failed to load: version 1: SHA-256 mismatch")
    assert [row["state"] for row in index(writable) if row["name"] == "line"] == ["UNAVAILABLE"]


@pytest.mark.parametrize("name", ["nope", "Bad%20Name", "..", "%2E%2E"])
def test_an_unknown_model_is_a_404(writable: TestClient, name: str) -> None:
    assert_v2_error(writable.post(load(name)), 404)
    assert_v2_error(writable.post(unload(name)), 404)


def test_a_bad_write_body_is_a_protocol_400(writable: TestClient) -> None:
    assert_v2_error(writable.post(load("pets"), json={"parameters": "all"}), 400)
    assert_v2_error(writable.post(unload("pets"), content=b"{not json"), 400)


# -- who may write ----------------------------------------------------------------------------


def test_writes_are_refused_by_default_naming_the_setting(client: TestClient) -> None:
    for path in (load("pets"), unload("pets")):
        message = assert_v2_error(client.post(path), 403)
        assert "MODELPORT_REPOSITORY_WRITES=true" in message
    assert client.post("/v2/models/pets/infer", json={"inputs": []}).status_code == 400  # serving


def test_with_an_api_key_writes_need_it(store: Path) -> None:
    settings = Settings(model_dir=store, api_key=SecretStr(KEY))
    with TestClient(create_app(settings)) as client:
        refused = client.post(unload("pets"))
        assert_v2_error(refused, 401)
        assert refused.headers["www-authenticate"] == "ApiKey"
        assert_v2_error(client.post(unload("pets"), headers={"X-API-Key": "wrong"}), 401)
        assert client.post(unload("pets"), headers={"X-API-Key": KEY}).status_code == 200
        assert len(index(client)) == 4  # the index stays open, like the other v2 reads


def test_writes_turned_off_stay_off_with_the_key(store: Path) -> None:
    settings = Settings(model_dir=store, api_key=SecretStr(KEY), repository_writes=False)
    with TestClient(create_app(settings)) as client:
        message = assert_v2_error(client.post(load("pets"), headers={"X-API-Key": KEY}), 403)
    assert "MODELPORT_REPOSITORY_WRITES=false" in message


# -- the document -----------------------------------------------------------------------------


def test_the_repository_routes_are_documented_with_their_errors(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]

    index_operation = paths[INDEX]["post"]
    assert index_operation["tags"] == ["v2"]
    assert index_operation["requestBody"].get("required", False) is False
    assert index_operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/RepositoryIndexEntry"},
        "title": index_operation["responses"]["200"]["content"]["application/json"]["schema"][
            "title"
        ],
    }
    for path in (
        "/v2/repository/models/{model_name}/load",
        "/v2/repository/models/{model_name}/unload",
    ):
        operation = paths[path]["post"]
        assert {"400", "401", "403", "404", "503"} <= set(operation["responses"])
        for status in ("400", "403", "404", "503"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/V2Error"}
    entry = document["components"]["schemas"]["RepositoryIndexEntry"]
    assert entry["properties"]["state"]["enum"] == ["READY", "UNAVAILABLE", "UNLOADED"]
    assert "model_repository" in client.get("/v2").json()["extensions"]

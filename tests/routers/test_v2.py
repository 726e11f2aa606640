"""/v2 through the real app: health bodies, metadata, and the protocol's error shape on every
failure, malformed bodies included (never FastAPI's {"detail"})."""

import json
from pathlib import Path

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

ROW = [5.1, 3.5, 1.4, 0.2]


def infer_body(rows: list[list[float]], **extra: object) -> dict[str, object]:
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP64",
                "data": rows,
            }
        ],
        **extra,
    }


def assert_v2_error(response: object, status: int) -> str:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = json.loads(response.text)  # type: ignore[attr-defined]
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]
    message: str = body["error"]
    return message


def test_health_bodies_are_what_kserve_parses(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/flowers/ready").json() == {"name": "flowers", "ready": True}
    assert client.get("/v2/models/flowers/versions/2/ready").json() == {
        "name": "flowers",
        "ready": True,
    }
    meta = client.get("/v2").json()
    assert meta["name"] == "modelport" and "binary_tensor_data" in meta["extensions"]


def test_not_ready_server_says_so(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(model_dir=tmp_path / "missing"))) as empty:
        response = empty.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False}


def test_a_refused_version_is_not_ready(store: Path) -> None:
    with (store / "flowers" / "2" / "model.joblib").open("ab") as artifact:
        artifact.write(b"tampered")
    with TestClient(create_app(Settings(model_dir=store))) as client:
        refused = client.get("/v2/models/flowers/versions/2/ready")
        healthy = client.get("/v2/models/flowers/versions/1/ready")
    assert refused.status_code == 503 and refused.json() == {"name": "flowers", "ready": False}
    assert healthy.status_code == 200


def test_metadata_comes_from_the_card(client: TestClient) -> None:
    meta = client.get("/v2/models/pets").json()
    assert meta["name"] == "pets" and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "colour", "datatype": "BYTES", "shape": [-1]},
        {"name": "weight", "datatype": "FP64", "shape": [-1]},
        {"name": "age", "datatype": "INT64", "shape": [-1]},
    ]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "predict": ("BYTES", [-1]),
        "predict_proba": ("FP64", [-1, 2]),
    }
    line = client.get("/v2/models/line/versions/1").json()
    assert [o["name"] for o in line["outputs"]] == ["predict"]


def test_infer_equals_the_pinned_estimator_and_echoes_the_id(
    client: TestClient, store: Path
) -> None:
    rows = [ROW, [6.6, 3.0, 5.5, 2.0]]
    reply = client.post("/v2/models/flowers/versions/2/infer", json=infer_body(rows, id="req-7"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("flowers", "2", "req-7")
    estimator = joblib.load(store / "flowers" / "2" / "model.joblib")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["data"] == estimator.predict(np.asarray(rows)).tolist()
    assert np.allclose(
        outputs["predict_proba"]["data"],
        estimator.predict_proba(np.asarray(rows)).ravel(),
        rtol=1e-12,
        atol=0,
    )


def test_infer_without_content_type_is_read(client: TestClient) -> None:
    """tritonclient sends no Content-Type header at all."""
    reply = client.post(
        "/v2/models/line/infer", content=json.dumps(infer_body([[1.0, 2.0]])).encode()
    )
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/models/nope/infer", json.dumps(infer_body([ROW])).encode(), 404),
        ("/v2/models/flowers/versions/9/infer", json.dumps(infer_body([ROW])).encode(), 404),
        ("/v2/models/flowers/versions/abc/infer", json.dumps(infer_body([ROW])).encode(), 400),
        ("/v2/models/flowers/versions/0/ready", b"", 400),
        ("/v2/models/flowers/infer", b"{not json", 400),
        ("/v2/models/flowers/infer", b"", 400),
        ("/v2/models/flowers/infer", b"\xff\xfe\x00", 400),
        ("/v2/models/flowers/infer", b"[1, 2]", 400),
        ("/v2/models/flowers/infer", b'{"inputs": []}', 400),
        ("/v2/models/flowers/infer", b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [NaN, 1, 1, 1]}]}', 400),
        ("/v2/models/flowers/infer", b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 1, 1]}]}', 400),
        ("/v2/models/flowers/infer", b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BOOL", "data": [true, true, true, true]}]}', 400),
        ("/v2/models/flowers/infer", b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [-1, 1, 1, 1]}]}', 400),
    ],
    ids=[
        "unknown-model", "unknown-version", "non-int-version", "version-zero", "bad-json", "empty",
        "non-utf8", "not-an-object", "no-inputs", "nan", "short-data", "bool", "below-minimum",
    ],
)  # fmt: skip
def test_every_v2_error_has_the_protocol_shape(
    client: TestClient, path: str, body: bytes, status: int
) -> None:
    response = client.get(path) if path.endswith("/ready") else client.post(path, content=body)
    assert_v2_error(response, status)


def test_unknown_v2_path_and_wrong_method_have_the_protocol_shape(client: TestClient) -> None:
    assert_v2_error(client.get("/v2/nothing/here"), 404)
    assert_v2_error(client.get("/v2/models/flowers/infer"), 405)


def test_v2_body_over_the_limit_has_the_protocol_shape(store: Path) -> None:
    with TestClient(create_app(Settings(model_dir=store, max_body_bytes=2048))) as small:
        rows = [ROW] * 200
        message = assert_v2_error(
            small.post("/v2/models/flowers/infer", json=infer_body(rows)), 413
        )
    assert "2048" in message


def test_v2_routes_are_documented_under_their_own_tag(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    v2_operations = [
        op
        for path, item in document["paths"].items()
        if path.startswith("/v2")
        for method, op in item.items()
        if method == "get"
    ]
    assert len(v2_operations) == 7
    assert all(op["tags"] == ["v2"] for op in v2_operations)
    assert "v2" in [tag["name"] for tag in document["tags"]]
    # Inference is typed per model (app/docs.py), under the model's tag.
    infer = document["paths"]["/v2/models/flowers/infer"]["post"]
    assert infer["tags"] == ["model: flowers"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}

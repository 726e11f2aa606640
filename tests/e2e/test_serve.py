"""The real thing: `modelport serve` with 2 gunicorn/uvicorn workers, over loopback HTTP."""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn import datasets

from app.store.artifacts import load_estimator
from schemas.cards import ModelCard
from tests.conftest import pets_frame
from tests.e2e.conftest import BIN, REPO, Server, address, free_port, read_reply

pytestmark = pytest.mark.e2e

DATASETS = {
    "iris": datasets.load_iris,
    "breast-cancer": datasets.load_breast_cancer,
    "diabetes": datasets.load_diabetes,
    "digits": datasets.load_digits,
}


def _card(store: Path, name: str, version: int) -> ModelCard:
    return ModelCard.model_validate_json((store / name / str(version) / "card.json").read_bytes())


def test_serves_every_bundled_model_when_ready(server: Server) -> None:
    with server.client() as http:
        ready = http.get("/readyz")
        listed = http.get("/models")
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"] == 6  # iris v1 + v2, breast-cancer, diabetes, digits, pets
    assert listed.status_code == 200
    assert sorted(m["name"] for m in listed.json()["data"]) == [
        "breast-cancer",
        "diabetes",
        "digits",
        "iris",
        "pets",
    ]


def test_runs_two_uvicorn_workers_under_gunicorn(server: Server) -> None:
    assert len(server.worker_pids()) == 2
    log = server.log.read_text()
    assert "app.server.worker.ModelportWorker" in log  # uvicorn-worker's, with request-head limits


def test_workers_keep_freed_memory_and_small_uploads_in_memory(server: Server) -> None:
    """`modelport serve` starts gunicorn with glibc malloc keeping freed memory for the next
    large request (app.server.allocator); the master logs that and how large an upload stays in
    memory while it is read."""
    for pid in server.worker_pids():
        entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        environ = dict(entry.decode().split("=", 1) for entry in entries if b"=" in entry)
        assert environ["MALLOC_ARENA_MAX"] == "2"
        assert environ["MALLOC_MMAP_THRESHOLD_"] == str(32 * 1024 * 1024)
        assert environ["MALLOC_TRIM_THRESHOLD_"] == str(64 * 1024 * 1024)
    log = server.log.read_text()
    assert (
        f"uploads up to {8 * 1024 * 1024} bytes held in memory; malloc: MALLOC_ARENA_MAX=2 "
        f"MALLOC_MMAP_THRESHOLD_={32 * 1024 * 1024} MALLOC_TRIM_THRESHOLD_={64 * 1024 * 1024}"
    ) in log


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_predictions_equal_in_process_predict(server: Server, name: str) -> None:
    card = _card(server.store, name, 1)
    estimator = joblib.load(server.store / name / "1" / card.artifact)
    features = DATASETS[name]().data[::9][:40]
    rows: list[list[Any]] = features.astype(int).tolist() if name == "digits" else features.tolist()
    names = [feature.name for feature in card.features]
    records = [dict(zip(names, row, strict=True)) for row in rows[:5]]
    with server.client() as http:
        reply = http.post(
            f"/models/{name}/versions/1/predict", json={"instances": rows[5:] + records}
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["model_name"], body["model_version"]) == (name, 1)
    expected_input = np.asarray(rows[5:] + rows[:5], dtype=float)
    predictions = body["predictions"]
    if card.task == "regression":
        assert [p["value"] for p in predictions] == pytest.approx(
            estimator.predict(expected_input).tolist(), rel=1e-12
        )
    else:
        assert [p["label"] for p in predictions] == estimator.predict(expected_input).tolist()
        expected_proba = estimator.predict_proba(expected_input)
        classes = [str(c) for c in estimator.classes_]
        got = [[p["probabilities"][c] for c in classes] for p in predictions]
        assert np.allclose(got, expected_proba, rtol=1e-12, atol=0)


def test_canary_cookie_sticks_and_path_version_wins(server: Server) -> None:
    row = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    with server.client() as http:
        info = http.get("/models/iris").json()
        first = http.post("/models/iris/predict", json=row)  # no cookie yet: assigned by weight
        version = first.json()["model_version"]
        again = [http.post("/models/iris/predict", json=row) for _ in range(5)]  # cookie carried
        pinned = http.post("/models/iris/versions/2/predict", json=row)
    assert info["traffic"] == {"1": 90.0, "2": 10.0}
    assert first.status_code == 200 and "modelport_session=" in first.headers["set-cookie"]
    assert first.headers["x-model-version"] == str(version) and version in (1, 2)
    assert all(
        r.json()["model_version"] == version and "set-cookie" not in r.headers for r in again
    )
    assert pinned.status_code == 200 and pinned.json()["model_version"] == 2


def test_imported_dataframe_pipeline_gets_dataframes(server: Server) -> None:
    frame, _ = pets_frame()
    sample = frame.head(8)
    with server.client() as http:
        reply = http.post(
            "/models/pets/predict", json={"instances": sample.to_dict(orient="records")}
        )
        card = http.get("/models/pets").json()["card"]
    # `import` wrote whichever format the card names (skops where it round-trips).
    pipeline = load_estimator(
        server.store / "pets" / "1" / card["artifact"], trusted_types=[]
    ).estimator
    assert reply.status_code == 200, reply.text
    assert [p["label"] for p in reply.json()["predictions"]] == pipeline.predict(sample).tolist()
    colour = next(f for f in card["features"] if f["name"] == "colour")
    assert colour["dtype"] == "category" and colour["categories"] == ["black", "ginger", "white"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[NaN, 3.5, 1.4, 0.2]]}',
        b'{"instances": [[1e999, 3.5, 1.4, 0.2]]}',
        b'{"instances": [[true, 3.5, 1.4, 0.2]]}',
        b'{"instances": [[null, 3.5, 1.4, 0.2]]}',
        b'{"instances": [[5.1, 3.5, 1.4]]}',
        b'{"instances": []}',
        b'{"instances": [{"sepal_length": 5.1}]}',
        b"\xff\xfe\xfd",
        b'{"instances": [[5.1, 3.5',
        b"[" * 100_000,
    ],
    ids=[
        "nan",
        "overflow",
        "bool",
        "null",
        "short-row",
        "empty",
        "missing-features",
        "non-utf8",
        "truncated",
        "deep",
    ],
)
def test_hostile_bodies_get_4xx_envelope_and_workers_survive(server: Server, body: bytes) -> None:
    before = sorted(server.worker_pids())
    with server.client() as http:
        reply = http.post(
            "/models/iris/predict", content=body, headers={"content-type": "application/json"}
        )
        healthy = http.get("/healthz")
    assert 400 <= reply.status_code < 500, reply.text
    envelope = json.loads(reply.text)
    assert set(envelope) == {"error", "detail"}
    assert "Traceback" not in reply.text
    assert healthy.status_code == 200
    assert sorted(server.worker_pids()) == before


def _raw_exchange(server: Server, request: bytes, body_chunks: int = 0) -> bytes:
    with socket.create_connection(address(server), timeout=30) as conn:
        conn.sendall(request)
        chunk = b"x" * (1 << 20)
        for _ in range(body_chunks):
            try:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed early: what we want
                break
        head, _ = read_reply(conn)
        return head


def test_declared_oversized_body_is_refused_before_reading(server: Server) -> None:
    request = (
        b"POST /models/iris/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
    )
    reply = _raw_exchange(server, request)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_chunked_body_over_the_limit_is_cut_off(server: Server) -> None:
    request = (
        b"POST /models/iris/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    reply = _raw_exchange(server, request, body_chunks=40)  # 40 MiB > 32 MiB default limit
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    with server.client() as http:
        assert http.get("/healthz").status_code == 200


def test_docs_and_their_assets_are_served_locally(server: Server) -> None:
    with server.client() as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page)
            assert html.status_code == 200
            assert "cdn.jsdelivr.net" not in html.text and "fonts.googleapis.com" not in html.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            assert http.get(f"/static/docs/{asset}").status_code == 200
        spec = http.get("/openapi.json").json()
    assert {
        "/models/iris/predict",
        "/models/breast-cancer/predict",
        "/models/digits/predict",
    } <= set(spec["paths"])


def test_dev_serves_with_autoreload(trained_store: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MODELPORT_PORT": str(port), "MODELPORT_MODEL_DIR": str(trained_store)}
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        # Its own session, so the reloader and the server process it spawns stop together.
        process = subprocess.Popen(
            [str(BIN / "modelport"), "dev"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and ready is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, log.read_text()
        assert "reloader" in log.read_text().lower()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

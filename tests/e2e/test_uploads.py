"""Uploads, forms and canary cookies over real HTTP to `modelport serve` (2 gunicorn workers):
answers equal in-process predictions; oversized, abandoned and hostile uploads leave the
workers serving."""

import csv
import io
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from app.serving.registry import ModelRegistry
from schemas.cards import ModelCard
from tests.e2e.conftest import Server, address, read_reply
from tests.routers.test_canary import COOKIE, session_routed_to
from tests.routers.test_files import bomb_png, digit_image, held_out_digits
from tests.routers.test_forms import FormPage

pytestmark = pytest.mark.e2e

BOUNDARY = "modelport-e2e-boundary-51c9"
MIB = 1 << 20
IRIS_HEADER = b"sepal_length,sepal_width,petal_length,petal_width\r\n"


def card_of(store: Path, name: str, version: int = 1) -> ModelCard:
    return ModelCard.model_validate_json((store / name / str(version) / "card.json").read_bytes())


def estimator_of(store: Path, name: str, version: int = 1) -> Any:
    return joblib.load(store / name / str(version) / card_of(store, name, version).artifact)


def assert_envelope(response: httpx.Response, status: int, kind: str) -> Any:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = json.loads(response.text)
    assert set(body) == {"error", "detail"}
    assert body["error"] == kind
    return body["detail"]


def cancer_upload(store: Path) -> tuple[list[str], list[list[str]], np.ndarray[Any, Any]]:
    """200 rows of breast-cancer data as CSV cells with the 30 columns shuffled, and the same
    rows as the matrix the model takes (card order)."""
    names = [feature.name for feature in card_of(store, "breast-cancer").features]
    data = load_breast_cancer().data[150:350]
    order = [str(name) for name in np.random.default_rng(7).permutation(names)]
    assert order != names and sorted(order) == sorted(names)
    index = [names.index(name) for name in order]
    cells = [[repr(float(value)) for value in row[index]] for row in data]
    return order, cells, data


def csv_file(header: list[str], cells: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(cells)
    return buffer.getvalue().encode()


# -- answers equal in-process predictions -----------------------------------------------------


def test_breast_cancer_csv_equals_in_process_predict(server: Server) -> None:
    order, cells, data = cancer_upload(server.store)
    estimator = estimator_of(server.store, "breast-cancer")

    with server.client() as http:
        reply = http.post(
            "/models/breast-cancer/predict/file",
            files={"file": ("cancer.csv", csv_file(order, cells), "application/vnd.ms-excel")},
        )

    assert reply.status_code == 200, reply.text
    assert reply.headers["x-model-version"] == "1"
    body = reply.json()
    assert (body["model_name"], body["model_version"], body["rows"]) == ("breast-cancer", 1, 200)
    assert body["filename"] == "cancer.csv"
    predictions = body["predictions"]
    assert [p["label"] for p in predictions] == estimator.predict(data).tolist()
    classes = [str(c) for c in estimator.classes_]
    got = [[p["probabilities"][c] for c in classes] for p in predictions]
    assert np.allclose(got, estimator.predict_proba(data), rtol=1e-12, atol=0)


def test_breast_cancer_csv_reply(server: Server) -> None:
    order, cells, data = cancer_upload(server.store)
    estimator = estimator_of(server.store, "breast-cancer")
    classes = [str(c) for c in estimator.classes_]

    with server.client() as http:
        reply = http.post(
            "/models/breast-cancer/predict/file",
            files={"file": ("cancer.csv", csv_file(order, cells), "text/csv")},
            headers={"accept": "text/csv"},
        )

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.headers["x-model-version"] == "1"
    header, *lines = list(csv.reader(io.StringIO(reply.text)))
    assert header == [*order, "prediction", *(f"probability_{c}" for c in classes)]
    assert [line[:30] for line in lines] == cells
    assert [line[30] for line in lines] == estimator.predict(data).tolist()
    got = [[float(cell) for cell in line[31:]] for line in lines]
    assert np.allclose(got, estimator.predict_proba(data), rtol=1e-12, atol=0)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_png_of_a_held_out_digit_gets_its_label(server: Server, index: int) -> None:
    images, labels = held_out_digits()

    with server.client() as http:
        reply = http.post(
            "/models/digits/predict/file",
            files={"file": ("digit.png", digit_image(images[index]), "image/png")},
        )

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["model_name"], body["rows"]) == ("digits", 1)
    assert body["predictions"][0]["label"] == int(labels[index])


def test_iris_form_post_equals_in_process_predict(server: Server) -> None:
    fields = {
        "sepal_length": "6.1",
        "sepal_width": "2.8",
        "petal_length": "4.7",
        "petal_width": "1.2",
    }

    with server.client() as http:
        reply = http.post("/models/iris/predict/form", data={**fields, "top_k": "3"})

    assert reply.status_code == 200, reply.text
    assert reply.request.headers["content-type"] == "application/x-www-form-urlencoded"
    version = int(reply.headers["x-model-version"])
    envelope = reply.json()
    assert (envelope["model_name"], envelope["model_version"]) == ("iris", version)
    (body,) = envelope["predictions"]
    estimator = estimator_of(server.store, "iris", version)
    features = np.array([[float(value) for value in fields.values()]])
    proba = estimator.predict_proba(features)[0]
    classes = [str(c) for c in estimator.classes_]
    assert body["label"] == estimator.predict(features)[0]
    assert [item["label"] for item in body["top"]] == [classes[i] for i in np.argsort(-proba)]
    assert [item["probability"] for item in body["top"]] == pytest.approx(
        sorted(proba.tolist(), reverse=True), abs=1e-12
    )


def test_iris_form_page(server: Server) -> None:
    with server.client() as http:
        page = http.get("/models/iris/form")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        form = FormPage()
        form.feed(page.text)
        submitted = http.post(
            "/models/iris/predict/form",
            files=[(name, (None, value)) for name, value in form.browser_submission()],
        )

    names = [feature.name for feature in card_of(server.store, "iris").features]
    assert form.names() == [*names, "top_k"]
    assert [f["action"] for f in form.forms] == ["/models/iris/predict/form"]
    assert form.urls == ["/models/iris/predict/form"]
    assert submitted.status_code == 200, submitted.text
    assert len(submitted.json()["predictions"][0]["top"]) == 3


# -- canary cookies across the two workers ----------------------------------------------------


@pytest.fixture(scope="module")
def iris_sessions(server: Server) -> dict[int, str]:
    registry = ModelRegistry(server.store, max_rows=10)
    registry.load()
    entry = registry.entry("iris")
    assert entry.split
    return {version: session_routed_to(entry, version) for version in (1, 2)}


@pytest.mark.parametrize("version", [1, 2])
def test_a_cookie_sticks_across_workers(
    server: Server, iris_sessions: dict[int, str], version: int
) -> None:
    assert len(server.worker_pids()) == 2
    seen = []
    for _ in range(20):
        # A fresh connection each time, so requests land on either worker.
        with httpx.Client(
            base_url=server.url,
            cookies={COOKIE: iris_sessions[version]},
            headers={"connection": "close"},
            timeout=30,
        ) as http:
            reply = http.post("/models/iris/predict", json={"instances": [[5.8, 2.7, 5.1, 1.9]]})
        assert reply.status_code == 200, reply.text
        assert "set-cookie" not in reply.headers
        seen.append((reply.json()["model_version"], reply.headers["x-model-version"]))

    assert set(seen) == {(version, str(version))}


def test_new_clients_get_a_cookie_that_predicts_their_version(server: Server) -> None:
    registry = ModelRegistry(server.store, max_rows=10)
    registry.load()
    entry = registry.entry("iris")
    for _ in range(10):
        with httpx.Client(base_url=server.url, headers={"connection": "close"}, timeout=30) as http:
            reply = http.post("/models/iris/predict", json={"instances": [[5.8, 2.7, 5.1, 1.9]]})
        assert reply.status_code == 200, reply.text
        session = reply.cookies[COOKIE]
        assert "HttpOnly" in reply.headers["set-cookie"]
        assert reply.json()["model_version"] == entry.route(session)


# -- hostile uploads --------------------------------------------------------------------------


def multipart_head(filename: str = "big.csv") -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + IRIS_HEADER


def big_csv_chunks(total: int) -> Iterator[bytes]:
    row = b"5.1,3.5,1.4,0.2\r\n"
    block = row * (MIB // len(row))
    sent = 0
    while sent < total:
        yield block
        sent += len(block)


def test_chunked_upload_over_64_mib_is_cut_off_with_413(server: Server) -> None:
    before = sorted(server.worker_pids())
    request = (
        "POST /models/iris/predict/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    sent = 0
    with socket.create_connection(address(server), timeout=30) as conn:
        conn.sendall(request)
        for piece in [multipart_head(), *big_csv_chunks(70 * MIB)]:
            if select.select([conn], [], [], 0)[0]:
                break  # the server has answered: stop sending
            try:
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:  # the server answered and closed early
                break
            sent += len(piece)
        head, body = read_reply(conn)

    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    envelope = json.loads(body)
    assert envelope["error"] == "PayloadTooLarge"
    assert str(64 * MIB) in envelope["detail"]
    # How much was sent before the answer arrived depends on socket buffers and load, so only
    # the lower bound is fixed: the limit was really crossed.
    assert sent > 64 * MIB
    with server.client() as http:
        assert http.get("/healthz").status_code == 200
        again = http.post(
            "/models/iris/predict/file",
            files={"file": ("ok.csv", IRIS_HEADER + b"5.1,3.5,1.4,0.2\r\n", "text/csv")},
        )
    assert again.status_code == 200, again.text
    assert sorted(server.worker_pids()) == before


def test_client_that_disconnects_mid_upload_leaves_the_workers_serving(server: Server) -> None:
    before = sorted(server.worker_pids())
    log_size = server.log.stat().st_size
    request = (
        "POST /models/iris/predict/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Content-Length: 10000000\r\n\r\n"
    ).encode()
    with socket.create_connection(address(server), timeout=30) as conn:
        conn.sendall(request + multipart_head())
        conn.sendall(next(big_csv_chunks(MIB)))
    time.sleep(0.3)  # let the worker notice the disconnect

    with server.client() as http:
        healthy = http.get("/healthz")
        predicted = http.post("/models/iris/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})

    assert healthy.status_code == 200
    assert predicted.status_code == 200, predicted.text
    assert sorted(server.worker_pids()) == before
    with server.log.open("rb") as log:
        log.seek(log_size)
        added = log.read().decode(errors="replace")
    assert "Traceback" not in added and "Exception in ASGI application" not in added, added


def test_decompression_bomb_over_http_is_413(server: Server) -> None:
    before = sorted(server.worker_pids())
    bomb = bomb_png()

    with server.client() as http:
        started = time.monotonic()
        reply = http.post(
            "/models/digits/predict/file", files={"file": ("bomb.png", bomb, "image/png")}
        )
        elapsed = time.monotonic() - started
        healthy = http.get("/healthz")

    detail = assert_envelope(reply, 413, "PayloadTooLarge")
    assert "pixels" in detail
    assert elapsed < 5
    assert healthy.status_code == 200
    assert sorted(server.worker_pids()) == before

"""Faults against the real `modelport serve` (2 gunicorn/uvicorn workers), over loopback:
a corrupted artifact, an unreadable store, a model whose predict raises, clients that hang up
mid-upload or trickle their headers, oversized headers, path traversal in model names.

Every test that damages something gets its own server on its own copy of the store."""

import json
import select
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from schemas.cards import ModelCard
from tests.e2e.conftest import Server, address, read_reply, start_server, stop_server
from tests.e2e.faulty_model import MAGIC, MESSAGE, write_faulty_model

pytestmark = pytest.mark.e2e

MIB = 1 << 20
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_BODY = json.dumps({"instances": [IRIS_ROW]}).encode()
BOUNDARY = b"modelport-faults-boundary-7d1e"


# -- helpers ----------------------------------------------------------------------------------


def _copy_store(trained_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_store, tmp_path / "models"))


def _card(store: Path, name: str, version: int = 1) -> ModelCard:
    return ModelCard.model_validate_json((store / name / str(version) / "card.json").read_bytes())


def _envelope(response: httpx.Response, status: int, kind: str) -> Any:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = json.loads(response.text)
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == kind, body
    return body["detail"]


def _stable_workers(server: Server, before: list[int], settle: float = 0.5) -> None:
    """The master is alive and, after `settle` seconds, still runs the same two workers."""
    time.sleep(settle)
    assert server.process.poll() is None, server.log.read_text()
    assert len(before) == 2
    assert sorted(server.worker_pids()) == before, server.log.read_text()


def _predict_iris(http: httpx.Client) -> httpx.Response:
    return http.post("/models/iris/versions/1/predict", json={"instances": [IRIS_ROW]})


@dataclass
class RawReply:
    status: int | None  # None: the server closed (or reset) without answering
    head: bytes
    body: bytes
    seconds: float


def _raw_request(server: Server, request: bytes, *, timeout: float = 10.0) -> RawReply:
    """Send exact bytes (no client-side URL normalising) and read one answer. A server that
    neither answers nor closes within `timeout` fails the test: it is holding the client."""
    started = time.monotonic()
    with socket.create_connection(address(server), timeout=timeout) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before taking everything: read what it said
        try:
            head, body = read_reply(conn)
        except TimeoutError:
            pytest.fail(f"no answer and no close within {timeout} s to {request[:80]!r}…")
    status = int(head[9:12]) if head.startswith(b"HTTP/1.") and len(head) >= 12 else None
    return RawReply(status=status, head=head, body=body, seconds=time.monotonic() - started)


# -- 1. a corrupted artifact ------------------------------------------------------------------


def test_corrupted_artifact_is_refused_by_name_while_others_serve(
    trained_store: Path, tmp_path: Path
) -> None:
    store = _copy_store(trained_store, tmp_path)
    artifact = store / "breast-cancer" / "1" / "model.joblib"
    half = artifact.stat().st_size // 2
    with artifact.open("r+b") as stream:
        stream.write(np.random.default_rng(11).bytes(half))
    cancer_example = _card(store, "breast-cancer").example
    server = start_server(store, tmp_path / "serve.log")
    try:
        before = sorted(server.worker_pids())
        with server.client() as http:
            healthy = http.get("/healthz")
            ready = http.get("/readyz")
            iris = _predict_iris(http)
            cancer = http.post(
                "/models/breast-cancer/predict", json={"instances": [cancer_example]}
            )
            pinned = http.post(
                "/models/breast-cancer/versions/1/predict", json={"instances": [cancer_example]}
            )
        assert healthy.status_code == 200
        detail = _envelope(ready, 503, "NotReady")
        assert detail["status"] == "not ready"
        assert set(detail["unavailable"]) == {"breast-cancer/1"}, detail
        assert "SHA-256" in detail["unavailable"]["breast-cancer/1"], detail
        assert detail["models"] == 5  # iris v1 + v2, diabetes, digits, pets still loaded
        assert iris.status_code == 200, iris.text
        assert iris.json()["model_name"] == "iris"
        assert "breast-cancer" in _envelope(cancer, 503, "ModelUnavailable")
        assert "SHA-256" in _envelope(pinned, 503, "ModelUnavailable")
        _stable_workers(server, before)
    finally:
        stop_server(server)


# -- 2. an unreadable store -------------------------------------------------------------------


def _store_is_a_file(store: Path, outside: Path) -> str:
    shutil.rmtree(store)
    store.write_text("not a directory\n")
    return str(store)


def _model_folder_is_a_dangling_symlink(store: Path, outside: Path) -> str:
    shutil.rmtree(store / "digits")
    (store / "digits").symlink_to(outside / "nowhere", target_is_directory=True)
    return "digits"


def _card_is_a_directory(store: Path, outside: Path) -> str:
    card = store / "breast-cancer" / "1" / "card.json"
    card.unlink()
    card.mkdir()
    return "breast-cancer/1"


@pytest.mark.parametrize(
    "damage",
    [_store_is_a_file, _model_folder_is_a_dangling_symlink, _card_is_a_directory],
    ids=["store-is-a-file", "model-folder-dangling-symlink", "card-json-is-a-directory"],
)
def test_unreadable_store_starts_live_not_ready_naming_the_problem(
    trained_store: Path, tmp_path: Path, damage: Callable[[Path, Path], str]
) -> None:
    store = _copy_store(trained_store, tmp_path)
    named = damage(store, tmp_path)
    server = start_server(store, tmp_path / "serve.log")
    try:
        before = sorted(server.worker_pids())
        with server.client() as http:
            healthy = http.get("/healthz")
            ready = http.get("/readyz")
            listed = http.get("/models")
            v2_ready = http.get("/v2/health/ready")
        assert healthy.status_code == 200
        assert listed.status_code == 200, listed.text
        assert ready.status_code == 503, (
            f"/readyz answered {ready.status_code} {ready.text}, yet {named!r} cannot be served"
        )
        detail = _envelope(ready, 503, "NotReady")
        assert any(named in where for where in detail["unavailable"]), ready.text
        assert v2_ready.status_code == 503, v2_ready.text
        _stable_workers(server, before)
    finally:
        stop_server(server)


# -- 3. a model whose predict raises ----------------------------------------------------------


def test_model_raising_in_predict_is_a_500_envelope_and_the_worker_survives(
    trained_store: Path, tmp_path: Path
) -> None:
    store = _copy_store(trained_store, tmp_path)
    write_faulty_model(store)
    server = start_server(store, tmp_path / "serve.log")
    try:
        before = sorted(server.worker_pids())
        with server.client() as http:
            ready = http.get("/readyz")
            failed = [
                http.post("/models/faulty/predict", json={"instances": [[MAGIC, 1.0]]})
                for _ in range(4)  # more than one, so both workers are likely to meet it
            ]
            v2_failed = http.post(
                "/v2/models/faulty/infer",
                json={
                    "inputs": [
                        {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [MAGIC, 1.0]}
                    ]
                },
            )
            normal = http.post("/models/faulty/predict", json={"instances": [[1.0, 2.0]]})
        assert ready.status_code == 200, ready.text  # it predicts its example, so it loads
        for reply in failed:
            detail = _envelope(reply, 500, "InferenceError")
            assert "RuntimeError" in detail and MESSAGE in detail
            assert 'File "' not in reply.text
        assert v2_failed.status_code == 500, v2_failed.text
        assert "Traceback" not in v2_failed.text and set(v2_failed.json()) == {"error"}
        assert normal.status_code == 200, normal.text
        assert normal.json()["predictions"][0]["value"] == pytest.approx(3.0)  # 2*1 - 2 + 3
        _stable_workers(server, before)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and MESSAGE not in server.log.read_text():
            time.sleep(0.1)
        log = server.log.read_text()
        assert "Traceback (most recent call last)" in log
        assert f"RuntimeError: {MESSAGE}" in log
        assert "faulty_model.py" in log  # the frame that raised, server-side only
    finally:
        stop_server(server)


# -- 4. a client that disconnects mid-upload --------------------------------------------------


def _abandoned_upload(server: Server, declared: int = 10 * MIB, sent: int = MIB) -> None:
    """Declare a `declared`-byte multipart upload, send `sent` bytes of it, then hang up."""
    preamble = (
        b"--" + BOUNDARY + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n"
        b"sepal_length,sepal_width,petal_length,petal_width\r\n"
    )
    row = b"5.1,3.5,1.4,0.2\r\n"
    payload = preamble + row * ((sent - len(preamble)) // len(row))
    request = (
        b"POST /models/iris/predict/file HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % declared
    )
    with socket.create_connection(address(server), timeout=10) as conn:
        conn.sendall(request + payload)


def test_clients_disconnecting_mid_upload_leave_the_workers_serving(
    trained_store: Path, tmp_path: Path
) -> None:
    store = _copy_store(trained_store, tmp_path)
    server = start_server(store, tmp_path / "serve.log")
    try:
        before = sorted(server.worker_pids())
        _abandoned_upload(server)
        with server.client() as http:
            assert http.get("/healthz").status_code == 200
        _stable_workers(server, before, settle=0.5)

        for _ in range(20):
            _abandoned_upload(server)
        with server.client() as http:
            started = time.monotonic()
            healthy = http.get("/healthz")
            took = time.monotonic() - started
            predicted = _predict_iris(http)
            uploaded = http.post(
                "/models/iris/predict/file",
                files={
                    "file": (
                        "ok.csv",
                        b"sepal_length,sepal_width,petal_length,petal_width\r\n5.1,3.5,1.4,0.2\r\n",
                        "text/csv",
                    )
                },
            )
        assert healthy.status_code == 200 and took < 2.0, took
        assert predicted.status_code == 200, predicted.text
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["rows"] == 1
        _stable_workers(server, before)
        assert server.process.poll() is None
    finally:
        stop_server(server)


# -- 6 and 7: hostile request lines and headers, on one server with a model outside its store ---


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: (size, mtime in ns). Any write shows."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


@dataclass
class Hostile:
    server: Server
    loot: Path  # a loadable model beside the store, not in it
    untouched: dict[str, tuple[int, int]]  # its files as they were before any request


@pytest.fixture(scope="module")
def hostile(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A server on a copy of the store, next to which sits a loadable model ("loot") that is
    not in the store: a traversal that reached it would predict with it."""
    root = tmp_path_factory.mktemp("hostile")
    store = Path(shutil.copytree(trained_store, root / "models"))
    shutil.copytree(trained_store / "iris", root / "loot")
    running = start_server(store, root / "serve.log")
    yield Hostile(server=running, loot=root / "loot", untouched=_snapshot(root / "loot"))
    stop_server(running)


def _padded_headers(count: int, size: int) -> bytes:
    lines = []
    for index in range(count):
        prefix = b"X-Pad-%03d: " % index
        lines.append(prefix + b"a" * (size - len(prefix) - 2) + b"\r\n")
    return b"".join(lines)


OVERSIZED = {
    "one-100k-header": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n"
        b"Connection: close\r\n\r\n"
    ),
    "200-headers-of-100-bytes": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + _padded_headers(200, 100)
        + b"Connection: close\r\n\r\n"
    ),
    "20k-path": (
        b"POST /models/" + b"a" * 20_000 + b"/predict HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(IRIS_BODY) + IRIS_BODY
    ),
}


@pytest.mark.parametrize("name", sorted(OVERSIZED))
def test_oversized_request_heads_are_refused_without_hanging(hostile: Hostile, name: str) -> None:
    server = hostile.server
    assert len(OVERSIZED[name]) > 8190 * 2
    before = sorted(server.worker_pids())
    reply = _raw_request(server, OVERSIZED[name])
    assert reply.seconds < 5.0, reply.seconds
    assert reply.status is None or 400 <= reply.status < 500, (
        f"{name}: answered {reply.head[:120]!r} {reply.body[:200]!r} — the header limits "
        "(8190-byte line / 100 fields / 8190-byte field) were not enforced"
    )
    with server.client() as http:
        assert http.get("/healthz").status_code == 200
        assert _predict_iris(http).status_code == 200
    _stable_workers(server, before, settle=0)


V2_BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]}
).encode()
TRAVERSALS = {
    "encoded-slashes": (b"POST", b"/models/..%2F..%2Fetc/predict"),
    "encoded-dots": (b"POST", b"/models/%2e%2e/predict"),
    "dot-segments": (b"GET", b"/models/../../etc/passwd"),
    "v2-encoded-slash": (b"POST", b"/v2/models/..%2Firis/infer"),
    "nul-byte": (b"POST", b"/models/iris%00/predict"),
    "300-char-name": (b"POST", b"/models/" + b"a" * 300 + b"/predict"),
    "to-sibling-of-store": (b"POST", b"/models/..%2Floot/predict"),
    "to-sibling-dot-segments": (b"POST", b"/models/../loot/predict"),
    "to-sibling-pinned": (b"POST", b"/models/%2e%2e%2floot/versions/1/predict"),
    "v2-to-sibling": (b"POST", b"/v2/models/%2e%2e%2floot/infer"),
    "absolute-path-name": (b"POST", b"/models/%2Fetc%2Fpasswd/predict"),
}


@pytest.mark.parametrize("case", sorted(TRAVERSALS))
def test_path_traversal_in_model_names_is_a_4xx_envelope(hostile: Hostile, case: str) -> None:
    method, path = TRAVERSALS[case]
    body = V2_BODY if path.startswith(b"/v2/") else IRIS_BODY
    request = (
        method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % len(body) + body
    )
    reply = _raw_request(hostile.server, request)
    shown = f"{case}: {reply.head[:60]!r} {reply.body[:300]!r}"
    assert reply.status is not None and 400 <= reply.status < 500, shown
    assert b"Traceback" not in reply.body, shown
    envelope = json.loads(reply.body)
    if path.startswith(b"/v2/"):
        assert set(envelope) == {"error"}, shown
    else:
        assert set(envelope) == {"error", "detail"}, shown
    assert b"predictions" not in reply.body and b"outputs" not in reply.body, shown
    assert str(hostile.loot) not in reply.body.decode(errors="replace"), shown
    assert _snapshot(hostile.loot) == hostile.untouched, shown


# -- 5. slow clients trickling headers --------------------------------------------------------
#
# Measuring whether the server ever lets a trickler go takes TRICKLE_LIMIT seconds, so it runs
# in a background thread against its own server, started (autouse) before this module's first
# test; the other tests run meanwhile, and the trickle test, last in the file, waits for the
# measurement's end.

TRICKLERS = 50
TRICKLE_LIMIT = 60.0  # seconds: a client still sending its headers by then must be let go
TRICKLE_START = b"POST /models/iris/predict HTTP/1.1\r\nHost: x\r\n"
TRICKLE_HEADER = b"X-Trickle: "
HEADER_TIMEOUT = 30  # MODELPORT_HEADER_TIMEOUT for this server: all checks fall before it
CHECK_OTHERS_AT = (3.0, 10.0, 20.0)  # seconds after the tricklers connected


def _trickle_byte(tick: int) -> bytes:
    return TRICKLE_HEADER[tick : tick + 1] if tick < len(TRICKLE_HEADER) else b"a"


@dataclass
class Trickle:
    server: Server
    workers: list[int]  # worker PIDs before the tricklers connected
    stop: threading.Event = field(default_factory=threading.Event)  # end early (teardown)
    done: threading.Event = field(default_factory=threading.Event)
    dropped: dict[int, tuple[float, bytes]] = field(default_factory=dict)  # (seconds, told)
    others: list[tuple[float, int, int, float]] = field(default_factory=list)  # (at, codes, s)
    seconds: float = 0.0  # how long the tricklers were measured
    error: BaseException | None = None


def _check_others(run: Trickle, at: float) -> None:
    with httpx.Client(base_url=run.server.url, timeout=5) as http:
        started = time.monotonic()
        healthy = http.get("/healthz").status_code
        predicted = _predict_iris(http).status_code
        run.others.append((at, healthy, predicted, time.monotonic() - started))


def _trickle(run: Trickle) -> None:
    """Open TRICKLERS connections that send a request line, then one header byte a second,
    never finishing; note when (and how) the server lets each go; meanwhile check that other
    clients are served."""
    conns: list[socket.socket] = []
    try:
        for _ in range(TRICKLERS):
            conn = socket.create_connection(address(run.server), timeout=5)
            conn.sendall(TRICKLE_START)
            conns.append(conn)
        opened = time.monotonic()
        checks = list(CHECK_OTHERS_AT)
        tick = 0
        while time.monotonic() - opened < TRICKLE_LIMIT and len(run.dropped) < TRICKLERS:
            if run.stop.is_set():
                return
            for index, conn in enumerate(conns):
                if index not in run.dropped:
                    try:
                        conn.sendall(_trickle_byte(tick))
                    except OSError:
                        run.dropped[index] = (time.monotonic() - opened, b"(send failed)")
            if checks and time.monotonic() - opened >= checks[0]:
                _check_others(run, checks.pop(0))
            tick_end = opened + tick + 1
            while (remaining := tick_end - time.monotonic()) > 0:
                live = [c for i, c in enumerate(conns) if i not in run.dropped]
                if not live:
                    break
                readable, _, _ = select.select(live, [], [], remaining)
                for conn in readable:
                    try:
                        said = conn.recv(4096) or b"(closed)"
                    except OSError:
                        said = b"(reset)"
                    run.dropped[conns.index(conn)] = (time.monotonic() - opened, said[:40])
            tick += 1
        run.seconds = time.monotonic() - opened
    except BaseException as exc:  # reported by the test, not lost in the thread
        run.error = exc
    finally:
        for conn in conns:
            conn.close()
        run.done.set()


@pytest.fixture(scope="module", autouse=True)
def trickle(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trickle]:
    root = tmp_path_factory.mktemp("trickle")
    server = start_server(
        Path(shutil.copytree(trained_store, root / "models")),
        root / "serve.log",
        header_timeout=str(HEADER_TIMEOUT),
    )
    run = Trickle(server=server, workers=sorted(server.worker_pids()))
    thread = threading.Thread(target=_trickle, args=(run,), name="tricklers", daemon=True)
    thread.start()
    try:
        yield run
    finally:
        run.stop.set()
        thread.join(timeout=30)
        stop_server(server)


def test_header_tricklers_do_not_starve_others_and_are_let_go(trickle: Trickle) -> None:
    assert trickle.done.wait(timeout=TRICKLE_LIMIT + 60), "the trickle measurement never ended"
    if trickle.error is not None:
        raise trickle.error
    # The property that matters most: while 50 tricklers are connected, everyone else is
    # served, and quickly.
    assert [at for at, *_ in trickle.others] == list(CHECK_OTHERS_AT), trickle.others
    for at, healthy, predicted, seconds in trickle.others:
        assert (healthy, predicted) == (200, 200), trickle.others
        assert seconds < 2.0, f"at {at:.0f} s other clients waited {seconds:.2f} s"
    _stable_workers(trickle.server, trickle.workers, settle=0)
    # And no client may hold a connection forever by never finishing its headers.
    held = TRICKLERS - len(trickle.dropped)
    assert held == 0, (
        f"after {trickle.seconds:.0f} s (one header byte a second) the server still holds "
        f"{held} of {TRICKLERS} trickling connections open; let go: {trickle.dropped}"
    )

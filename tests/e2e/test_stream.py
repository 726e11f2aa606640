"""Streams against the real server (gunicorn, uvicorn workers): the reply flows while the
upload is still being sent; a client that goes away stops the work and leaves the worker
serving; a chunked body past MODELPORT_STREAM_MAX_BYTES ends its reply with a record saying so;
and `modelport score --url` writes what the in-process run writes."""

import re
import shutil
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from app.cli import main
from tests.e2e.conftest import Server, address, run_cli, start_server, stop_server

pytestmark = pytest.mark.e2e

IRIS_HEADER = b"sepal_length,sepal_width,petal_length,petal_width\n"
IRIS_PATH = "/models/iris/versions/1/predict/stream"


def open_stream(server: Server, path: str, content_type: bytes = b"text/csv") -> socket.socket:
    conn = socket.create_connection(address(server), timeout=30)
    conn.sendall(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nContent-Type: " + content_type
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )  # fmt: skip
    return conn


def send_chunk(conn: socket.socket, data: bytes) -> None:
    conn.sendall(b"%x\r\n" % len(data) + data + b"\r\n")


def read_until(conn: socket.socket, received: bytearray, marker: bytes, count: int = 1) -> None:
    while received.count(marker) < count:
        data = conn.recv(65536)
        assert data, f"closed after {bytes(received)!r}"
        received += data


def test_the_reply_flows_while_the_upload_is_still_being_sent(server: Server) -> None:
    conn = open_stream(server, IRIS_PATH)
    try:
        send_chunk(conn, IRIS_HEADER + b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
        received = bytearray()
        # Both rows are answered before the body has ended (no last chunk sent yet).
        read_until(conn, received, b",\r\n", count=2)
        head = bytes(received).split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
        assert b"5.1,3.5,1.4,0.2,setosa," in received
        assert b"6.7,3.0,5.2,2.3,virginica," in received
        assert b"summary" not in received
        send_chunk(conn, b"5.0,3.0,1.0,0.1\n")
        read_until(conn, received, b",\r\n", count=3)
        assert b"5.0,3.0,1.0,0.1,setosa," in received
        send_chunk(conn, b"")  # the end of the body
        read_until(conn, received, b"0\r\n\r\n")
        assert b'""rows"":3,""errors"":0,""complete"":true' in received
    finally:
        conn.close()


def predicted_rows(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    found = re.findall(r'modelport_predicted_rows_total\{model="iris",version="1"\} (\S+)', text)
    return float(found[0]) if found else 0.0


def test_a_client_that_goes_away_stops_the_work(server: Server) -> None:
    workers = sorted(server.worker_pids())
    before = predicted_rows(server)
    conn = open_stream(server, IRIS_PATH)
    sending = True
    sent = 0

    def send_forever() -> None:
        nonlocal sent
        block = b"5.1,3.5,1.4,0.2\n" * 5_000
        try:
            send_chunk(conn, IRIS_HEADER)
            while sending:
                send_chunk(conn, block)
                sent += 5_000
        except OSError:
            pass  # the connection is gone

    sender = threading.Thread(target=send_forever)
    sender.start()
    received = bytearray()
    read_until(conn, received, b"\n", count=20_000)  # answers are flowing
    sending = False
    # Gone at once, unread replies and all (a reset, not a polite close).
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    sender.join(timeout=30)
    settled = predicted_rows(server)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # what was in flight finishes, then nothing more
        time.sleep(1.0)
        latest = predicted_rows(server)
        if latest == settled:
            break
        settled = latest
    time.sleep(1.0)
    assert predicted_rows(server) == settled
    assert 20_000 <= settled - before < sent  # it stopped short of what had been sent
    # The worker is the same one, and serves the next request.
    assert sorted(server.worker_pids()) == workers
    reply = httpx.post(
        f"{server.url}/models/iris/versions/1/predict",
        json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
        timeout=30,
    )
    assert reply.status_code == 200


@pytest.fixture(scope="module")
def limited_server(
    trained_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server of iris alone (quick to start) with a stream byte limit."""
    store = tmp_path_factory.mktemp("limited") / "models"
    shutil.copytree(trained_store / "iris", store / "iris")
    running = start_server(
        store, store.parent / "serve.log", workers="1", stream_max_bytes="200000"
    )
    yield running
    stop_server(running)


def test_a_chunked_body_past_the_limit_ends_the_reply_with_a_record(limited_server: Server) -> None:
    conn = open_stream(limited_server, IRIS_PATH, b"text/csv")
    received = bytearray()
    try:
        send_chunk(conn, IRIS_HEADER)
        try:
            for _ in range(40):
                send_chunk(conn, b"5.1,3.5,1.4,0.2\n" * 1_000)  # 16,000 bytes a chunk
            send_chunk(conn, b"")
        except OSError:
            pass  # the server stopped reading, as it should
        conn.settimeout(30)
        while b"0\r\n\r\n" not in received:
            data = conn.recv(65536)
            if not data:
                break
            received += data
    finally:
        conn.close()
    assert b'""type"":""PayloadTooLarge""' in received
    assert b"Request body is larger than 200000 bytes" in received
    assert b'""complete"":false' in received


def test_score_with_url_writes_what_the_in_process_run_writes(
    server: Server, trained_store: Path, tmp_path: Path
) -> None:
    data = load_breast_cancer()
    picked = data.data[np.random.default_rng(0).integers(0, len(data.data), 5_000)]
    names = httpx.get(f"{server.url}/models/breast-cancer", timeout=30).json()["card"]["features"]
    header = ",".join(feature["name"] for feature in names)
    source = tmp_path / "rows.csv"
    source.write_text(
        header + "\n" + "".join(",".join(map(repr, r)) + "\n" for r in picked.tolist())
    )
    remote, local = tmp_path / "remote.csv", tmp_path / "local.csv"
    streamed = run_cli(
        "score",
        str(source),
        "--model",
        "breast-cancer",
        "--url",
        server.url,
        "--output",
        str(remote),
    )
    assert streamed.returncode == 0, streamed.stderr
    assert "5,000 rows with breast-cancer v1, 0 errors in this run, complete" in streamed.stderr
    in_process = main(
        ["score", str(source), "--model", "breast-cancer", "--model-dir", str(trained_store),
         "--output", str(local)]
    )  # fmt: skip
    assert in_process == 0
    assert remote.read_bytes() == local.read_bytes()
    assert len(remote.read_text().splitlines()) == 5_001

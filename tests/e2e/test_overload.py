"""Deadlines, admission control and disconnects on the real `modelport serve` (one worker, so
every request meets the same queue), with a model whose estimator call the test can hold for
SLEEP seconds (tests/e2e/slow_model.py). What the estimator was given is read from /metrics:
`modelport_batch_size_rows` counts every row passed to it."""

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Server, address, start_server, stop_server
from tests.e2e.slow_model import MAGIC, SLEEP, target, write_sleepy_model

pytestmark = pytest.mark.e2e

PREDICT = "/models/sleepy/predict"
LABELS = 'model="sleepy",version="1"'
QUEUE_FULL = 'model="sleepy",reason="queue_full",version="1"'  # labels come sorted


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    store = tmp_path_factory.mktemp("overload") / "models"
    write_sleepy_model(store)
    running = start_server(
        store, store.parent / "serve.log", workers="1", queue_max_rows="2", log_level="warning"
    )
    yield running
    stop_server(running)


def metric(server: Server, name: str, labels: str = LABELS) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def wait_for_metric(server: Server, name: str, value: float, labels: str = LABELS) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if metric(server, name, labels) == value:
            return
        time.sleep(0.02)
    pytest.fail(f"{name}{{{labels}}} never reached {value} (now {metric(server, name, labels)})")


class Hold:
    """A request whose row makes the estimator sleep SLEEP seconds, sent from a thread: while it
    runs, every other request to the model queues behind it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.reply: httpx.Response | None = None
        self.calls = metric(server, "modelport_queue_wait_seconds_count")
        self.thread = threading.Thread(target=self._send)

    def _send(self) -> None:
        self.reply = httpx.post(
            f"{self.server.url}{PREDICT}", json={"instances": [[MAGIC, 0.0]]}, timeout=SLEEP + 30
        )

    def __enter__(self) -> "Hold":
        self.thread.start()
        # It went straight to the (idle) estimator: its zero wait is recorded.
        wait_for_metric(self.server, "modelport_queue_wait_seconds_count", self.calls + 1)
        return self

    def __exit__(self, *_: object) -> None:
        self.thread.join(timeout=SLEEP + 40)
        assert self.reply is not None and self.reply.status_code == 200, self.reply


def envelope(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = json.loads(response.text)
    assert set(body) == {"error", "detail"} and body["error"] == kind, body
    detail: str = body["detail"]
    return detail


def test_a_queued_request_past_its_deadline_is_a_504_and_never_reaches_the_model(
    server: Server,
) -> None:
    rows_before = metric(server, "modelport_batch_size_rows_sum")
    expired_before = metric(server, "modelport_deadline_expired_total")
    with Hold(server):
        started = time.monotonic()
        expired = httpx.post(
            f"{server.url}{PREDICT}",
            json={"instances": [[7.0, 7.0]]},
            headers={"X-Request-Timeout": "0.5"},
            timeout=30,
        )
        took = time.monotonic() - started
    wait_for_metric(server, "modelport_deadline_expired_total", expired_before + 1)

    assert "before its rows reached the estimator" in envelope(expired, 504, "DeadlineExceeded")
    assert took < 0.5 + 1.0  # answered at its deadline, not when the held call ended
    # Only the held request's row reached the estimator.
    assert metric(server, "modelport_batch_size_rows_sum") == rows_before + 1
    assert httpx.post(f"{server.url}{PREDICT}", json={"instances": [[1.0, 2.0]]}).is_success


def test_a_full_queue_refuses_at_once_and_a_gone_clients_rows_are_dropped(
    server: Server,
) -> None:
    rows_before = metric(server, "modelport_batch_size_rows_sum")
    dropped_before = metric(server, "modelport_disconnected_total")
    refused_before = metric(
        server, "modelport_refused_total", 'model="sleepy",reason="queue_full",version="1"'
    )
    body = json.dumps({"instances": [[11.0, 1.0], [12.0, 1.0]]}).encode()
    with Hold(server), socket.create_connection(address(server), timeout=10) as leaving:
        # Two rows queue behind the held call: the queue (2 rows at most) is full.
        leaving.sendall(
            b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        wait_for_metric(server, "modelport_queue_rows", 2)
        started = time.monotonic()
        refused = httpx.post(f"{server.url}{PREDICT}", json={"instances": [[3.0, 4.0]]})
        took = time.monotonic() - started
        refused_v2 = httpx.post(
            f"{server.url}/v2/models/sleepy/infer",
            json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]},
        )
        leaving.shutdown(socket.SHUT_RDWR)  # the queued request's client hangs up
    wait_for_metric(server, "modelport_disconnected_total", dropped_before + 1)

    assert "limit is 2" in envelope(refused, 429, "Overloaded")
    assert int(refused.headers["Retry-After"]) >= 1
    assert took < 1.0  # refused at once, not after the held call
    assert refused_v2.status_code == 429 and set(refused_v2.json()) == {"error"}
    assert int(refused_v2.headers["Retry-After"]) >= 1
    refused_now = metric(
        server, "modelport_refused_total", 'model="sleepy",reason="queue_full",version="1"'
    )
    assert refused_now == refused_before + 2
    # The held row reached the estimator; the gone client's two rows did not.
    assert metric(server, "modelport_batch_size_rows_sum") == rows_before + 1
    assert metric(server, "modelport_queue_rows") == 0
    served = httpx.post(f"{server.url}{PREDICT}", json={"instances": [[1.0, 2.0]]})
    assert served.status_code == 200
    assert served.json()["predictions"][0]["value"] == pytest.approx(target([[1.0, 2.0]])[0])


def test_a_slow_clients_timeout_is_an_answer_not_a_hang(server: Server) -> None:
    # A request alone on the idle model, whose call outlasts its deadline: answered 504 at the
    # deadline while the estimator finishes its call.
    expired_before = metric(server, "modelport_deadline_expired_total")
    started = time.monotonic()
    response = httpx.post(
        f"{server.url}{PREDICT}",
        json={"instances": [[MAGIC, 1.0]]},
        headers={"X-Request-Timeout": "0.5"},
        timeout=30,
    )
    took = time.monotonic() - started
    detail = envelope(response, 504, "DeadlineExceeded")

    assert "while the estimator ran" in detail
    assert took < 0.5 + 1.0
    wait_for_metric(server, "modelport_deadline_expired_total", expired_before + 1)
    # A request sent meanwhile queues behind the call and is served once it ends.
    served = httpx.post(f"{server.url}{PREDICT}", json={"instances": [[1.0, 2.0]]}, timeout=30)
    assert served.status_code == 200

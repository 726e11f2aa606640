"""OpenTelemetry tracing against a real `modelport serve` and a real OTLP/HTTP receiver (a stdlib
server in the test that decodes each export with opentelemetry-proto): parents right across
both workers, the server span's `traceparent` in the reply, and spans flushed when a worker
exits. Tracing off, errors and sampling: tests/app/test_tracing.py, in-process."""

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sklearn.linear_model import LogisticRegression

from tests.conftest import flower_data, flower_features, write_model
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.e2e

ROUTE = "/models/{model_name}/predict"
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.6, 3.0, 5.5, 2.0]]}).encode()
VERSION = 1
STEPS = ("decode", "queue", "predict", "encode")
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER
UNSET, ERROR = 0, 2  # Status.StatusCode


@dataclass(frozen=True)
class Call:
    """One traced request: the caller's span ids and the reply's traceparent."""

    trace_id: str
    parent_id: str
    status: int
    traceparent: str | None

    @property
    def server_span_id(self) -> str:
        assert self.traceparent is not None
        version, trace_id, span_id, flags = self.traceparent.split("-")
        assert (version, trace_id, flags) == ("00", self.trace_id, "01"), self.traceparent
        return span_id


def _call(url: str) -> Call:
    """A prediction on a connection of its own, as the child of a new caller span."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    response = httpx.post(
        f"{url}/models/flowers/predict",
        content=BODY,
        headers={
            "Content-Type": "application/json",
            "traceparent": f"00-{trace_id}-{parent_id}-01",
            "tracestate": "caller=e2e",
        },
        timeout=30,
    )
    return Call(trace_id, parent_id, response.status_code, response.headers.get("traceparent"))


def _concurrently(url: str, count: int, threads: int = 8) -> list[Call]:
    calls: list[Call] = []
    lock = threading.Lock()

    def client(share: int) -> None:
        for _ in range(share):
            call = _call(url)
            with lock:
                calls.append(call)

    workers = [threading.Thread(target=client, args=(count // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return calls


def _server_pids(spans: list[ReceivedSpan]) -> set[int]:
    return {span.resource["process.pid"] for span in spans if span.kind == SERVER_KIND}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small model, so the servers start fast."""
    store = tmp_path_factory.mktemp("tracing") / "models"
    write_model(
        store,
        LogisticRegression(max_iter=1000).fit(*flower_data()),
        name="flowers",
        task="classification",
        features=flower_features(),
        classes=["setosa", "versicolor", "virginica"],
    )
    return store


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
def traced_server(
    store: Path, receiver: OtlpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # milliseconds: export soon
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    server = start_server(store, tmp_path / "serve.log")
    yield server
    stop_server(server)


def test_spans_reach_a_real_receiver_with_their_parents_from_both_workers(
    traced_server: Server, receiver: OtlpReceiver
) -> None:
    calls: list[Call] = []
    # Connections land on whichever worker accepts first: send until both have exported.
    for _ in range(10):
        calls += _concurrently(traced_server.url, 32)
        spans = receiver.wait_for(lambda spans: len(_server_pids(spans)) >= 2, timeout=2)
        if len(_server_pids(spans)) >= 2:
            break
    assert {call.status for call in calls} == {200}
    workers = set(traced_server.worker_pids())
    assert _server_pids(spans) == workers, (_server_pids(spans), workers)

    traces = {call.trace_id for call in calls}
    expected = len(calls) * (1 + len(STEPS))

    def ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:  # not start_server's /healthz
        return [span for span in spans if span.trace_id in traces]

    spans = ours(receiver.wait_for(lambda spans: len(ours(spans)) >= expected))
    by_id = {span.span_id: span for span in spans}
    assert len(by_id) == len(spans) == expected  # every span once, none lost
    for call in calls:
        server = by_id[call.server_span_id]  # the reply names the server span
        assert server.trace_id == call.trace_id
        assert server.parent_span_id == call.parent_id  # the caller's span
        assert server.trace_state == "caller=e2e"
        assert server.kind == SERVER_KIND
        assert server.name == f"POST {ROUTE}"
        assert server.status_code == UNSET
        assert server.resource["service.name"] == "modelport"
        assert server.attributes["http.route"] == ROUTE
        assert server.attributes["http.request.method"] == "POST"
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["url.path"] == "/models/flowers/predict"
        assert server.attributes["modelport.model.name"] == "flowers"
        assert server.attributes["modelport.model.version"] == VERSION
        children = [span for span in spans if span.parent_span_id == server.span_id]
        assert sorted(span.name for span in children) == sorted(STEPS)
        for child in children:
            assert child.trace_id == call.trace_id
            assert child.resource["process.pid"] == server.resource["process.pid"]
            assert child.attributes["modelport.model.name"] == "flowers"
            assert child.attributes["modelport.model.version"] == VERSION
            assert child.attributes["modelport.rows"] == 2
            assert server.start_ns <= child.start_ns <= child.end_ns <= server.end_ns
        steps = {span.name: span for span in children}
        assert steps["decode"].end_ns <= steps["queue"].start_ns
        assert steps["queue"].end_ns == steps["predict"].start_ns
        assert steps["predict"].end_ns <= steps["encode"].start_ns
        assert steps["predict"].attributes["modelport.batch.rows"] >= 2
        assert steps["predict"].attributes["modelport.batch.requests"] >= 1


def test_a_worker_exports_what_it_holds_when_it_exits(
    store: Path, receiver: OtlpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{receiver.endpoint}/v1/traces")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # ten minutes: only exit exports
    monkeypatch.setenv("OTEL_SERVICE_NAME", "scoring")
    server = start_server(store, tmp_path / "serve.log", workers="1")
    try:
        calls = [_call(server.url) for _ in range(3)]
        time.sleep(0.5)
        assert receiver.posts == 0  # still queued in the worker
    finally:
        stop_server(server)
    traces = {call.trace_id for call in calls}
    spans = receiver.wait_for(lambda spans: len(spans) >= 15, timeout=5)
    assert {span.resource["service.name"] for span in spans} == {"scoring"}
    assert len([span for span in spans if span.trace_id in traces]) == 15
    assert {call.server_span_id for call in calls} <= {span.span_id for span in spans}

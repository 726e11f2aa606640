"""The server span and the data plane's spans, in-process, exported over OTLP/HTTP to a real
receiver (tests/e2e/otlp_receiver.py): errors as the HTTP conventions say, new and unsampled
traces, and tracing off. Across real gunicorn workers: tests/e2e/test_tracing.py."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.http.middleware.tracing import TracingMiddleware
from app.main import create_app
from tests.e2e.faulty_model import MAGIC, write_faulty_model
from tests.e2e.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

ROW = [5.1, 3.5, 1.4, 0.2]
UNSET, ERROR = 0, 2  # opentelemetry.proto.trace.v1.Status.StatusCode
SERVER_KIND = 2


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture
def traced(
    store: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    write_faulty_model(store)
    with TestClient(create_app(Settings(model_dir=store))) as client:
        yield client


def _trace(receiver: OtlpReceiver, trace_id: str, count: int) -> dict[str, ReceivedSpan]:
    """The `count` spans of one trace, by name."""
    spans = receiver.wait_for(
        lambda spans: len([span for span in spans if span.trace_id == trace_id]) >= count
    )
    mine = [span for span in spans if span.trace_id == trace_id]
    assert len(mine) == count, [span.name for span in mine]
    return {span.name: span for span in mine}


def _caller(flags: str = "01") -> tuple[str, str, dict[str, str]]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, {"traceparent": f"00-{trace_id}-{span_id}-{flags}"}


def test_invalid_rows_fail_the_decode_span_and_leave_the_server_span_unset(
    traced: TestClient, receiver: OtlpReceiver
) -> None:
    trace_id, _, headers = _caller()
    response = traced.post(
        "/models/flowers/versions/1/predict", json={"instances": [[-1, 1, 1, 1]]}, headers=headers
    )
    assert response.status_code == 422
    spans = _trace(receiver, trace_id, 2)
    server, decode = spans["POST /models/{model_name}/versions/{version}/predict"], spans["decode"]
    assert response.headers["traceparent"] == f"00-{trace_id}-{server.span_id}-01"
    assert decode.parent_span_id == server.span_id
    assert server.status_code == UNSET  # a 4xx is the client's: unset on a server span
    assert server.attributes["http.response.status_code"] == 422
    assert "error.type" not in server.attributes
    assert decode.status_code == ERROR
    assert decode.attributes["error.type"] == "InvalidInput"
    assert decode.attributes["modelport.error.status_code"] == 422
    assert decode.attributes["modelport.model.name"] == "flowers"


def test_a_model_failing_is_an_error_on_the_server_span_and_on_predict(
    traced: TestClient, receiver: OtlpReceiver
) -> None:
    trace_id, _, headers = _caller()
    response = traced.post(
        "/models/faulty/predict", json={"instances": [[MAGIC, 1]]}, headers=headers
    )
    assert response.status_code == 500
    spans = _trace(receiver, trace_id, 4)  # the server span, decode, queue, predict
    server, predict = spans["POST /models/{model_name}/predict"], spans["predict"]
    assert server.status_code == ERROR
    assert server.attributes["error.type"] == "InferenceError"  # the service error's kind
    assert server.attributes["http.response.status_code"] == 500
    assert predict.status_code == ERROR
    assert predict.attributes["error.type"] == "InferenceError"
    assert "RuntimeError" in predict.status_message
    assert {spans["decode"].status_code, spans["queue"].status_code} == {UNSET}


def test_an_unknown_model_has_only_its_server_span(
    traced: TestClient, receiver: OtlpReceiver
) -> None:
    trace_id, _, headers = _caller()
    response = traced.post("/models/nope/predict", json={"instances": [ROW]}, headers=headers)
    assert response.status_code == 404
    (server,) = _trace(receiver, trace_id, 1).values()
    assert server.kind == SERVER_KIND
    assert server.status_code == UNSET
    assert server.attributes["http.route"] == "/models/{model_name}/predict"
    assert "modelport.model.name" not in server.attributes


def test_a_request_without_traceparent_starts_a_trace_named_in_the_reply(
    traced: TestClient, receiver: OtlpReceiver
) -> None:
    response = traced.post("/v2/models/flowers/infer", json={
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ROW}]
    })  # fmt: skip
    assert response.status_code == 200, response.text
    _, trace_id, span_id, flags = response.headers["traceparent"].split("-")
    assert int(flags, 16) & 1  # sampled
    spans = _trace(receiver, trace_id, 5)
    server = spans["POST /v2/models/{model_name}/infer"]
    assert (server.span_id, server.parent_span_id) == (span_id, "")
    assert {spans[step].parent_span_id for step in ("decode", "queue", "predict", "encode")} == {
        span_id
    }


def test_a_caller_that_does_not_sample_gets_no_spans_exported(
    traced: TestClient, receiver: OtlpReceiver
) -> None:
    unsampled, _, headers = _caller(flags="00")
    response = traced.post(
        "/models/flowers/versions/1/predict", json={"instances": [ROW]}, headers=headers
    )
    assert response.status_code == 200
    version, trace_id, _, flags = response.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", unsampled, "00")
    sampled, _, headers = _caller()
    assert (
        traced.post(
            "/models/flowers/versions/1/predict", json={"instances": [ROW]}, headers=headers
        ).status_code
        == 200
    )
    _trace(receiver, sampled, 5)  # exported after the unsampled one, had there been any
    assert unsampled not in {span.trace_id for span in receiver.spans}


@pytest.mark.parametrize(
    "switch", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}]
)
def test_switched_off_there_is_no_middleware_no_header_and_nothing_sent(
    store: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, switch: dict[str, str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    for name, value in switch.items():
        monkeypatch.setenv(name, value)
    app = create_app(Settings(model_dir=store))
    assert TracingMiddleware.__name__ not in {
        str(getattr(entry.cls, "__name__", "")) for entry in app.user_middleware
    }
    _, _, headers = _caller()
    with TestClient(app) as client:  # its lifespan's end would flush any spans
        response = client.post(
            "/models/flowers/predict", json={"instances": [ROW]}, headers=headers
        )
        assert response.status_code == 200
        assert "traceparent" not in response.headers
    assert receiver.posts == 0

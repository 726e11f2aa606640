"""app.tracing: which OTEL_* settings turn tracing on, that off it imports nothing, and the
spans of requests that share a micro-batch."""

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.codecs.json_rows import json_reply, json_request
from app.tracing import TRACING, trace_exporters
from tests.app.serving.test_dataplane import dataplane_of
from tests.e2e.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_SERVICE_NAME": "scoring"}, ()),  # a name alone exports nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),  # to the default localhost:4318
        ({"OTEL_TRACES_EXPORTER": " OTLP, console,otlp"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, ()),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            ("otlp",),
        ),  # fmt: skip
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("console",)),
    ],
)
def test_the_otel_variables_choose_the_exporters(
    environ: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert trace_exporters(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "not zipkin"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "grpc",
        ),
    ],
)
def test_what_modelport_cannot_export_is_refused_at_start(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        trace_exporters(environ)


def test_off_the_app_imports_no_opentelemetry_sdk(store: Path) -> None:
    """Created and serving with no OTEL_* variables, a process has loaded nothing of the SDK
    or its exporter (FastAPI itself imports the OpenTelemetry API, which does nothing)."""
    probe = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from app.config import Settings\n"
        "from app.main import create_app\n"
        f"app = create_app(Settings(model_dir={str(store)!r}, access_log=False))\n"
        "with TestClient(app) as client:\n"
        "    reply = client.post('/models/flowers/predict', json={'instances': [[5, 3, 1, 0.2]]})\n"
        "    assert reply.status_code == 200 and 'traceparent' not in reply.headers\n"
        "loaded = sorted(name for name in sys.modules if name.startswith(\n"
        "    ('opentelemetry.sdk', 'opentelemetry.exporter', 'opentelemetry.proto')))\n"
        "print(loaded)\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


def test_requests_batched_together_each_get_a_predict_span_over_the_shared_call(
    store: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    dataplane = dataplane_of(store)
    model = dataplane.model("flowers", 1)
    body = b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.6, 3.0, 5.5, 2.0]]}'

    async def request() -> str:
        """One request as the HTTP layer makes it: inside its current server span."""
        server = TRACING.server_span("POST", [], {})
        with TRACING.current(server):
            await dataplane.infer(model, json_request(body), json_reply, work=0)
        server.span.end()
        return server.traceparent.split("-")[2]

    async def together() -> list[str]:
        return await asyncio.gather(*(request() for _ in range(8)))

    TRACING.start(["otlp"], service_version="test")
    try:
        # The first goes to the estimator at once (in a thread: its calls are not yet timed
        # cheap); the seven arriving meanwhile wait, and share the next call.
        first, *batched = asyncio.run(together())
    finally:
        TRACING.stop()  # exports everything
    spans = receiver.spans
    assert len(spans) == 8 * 5

    def steps(parent: str) -> dict[str, ReceivedSpan]:
        return {span.name: span for span in spans if span.parent_span_id == parent}

    alone = steps(first)
    assert alone["queue"].start_ns == alone["queue"].end_ns  # it did not wait
    assert alone["predict"].attributes["modelport.batch.requests"] == 1
    calls = set()
    for parent in batched:
        mine = steps(parent)
        assert set(mine) == {"decode", "queue", "predict", "encode"}
        queue, predict = mine["queue"], mine["predict"]
        assert queue.start_ns < queue.end_ns == predict.start_ns  # waited for the batch
        assert predict.attributes["modelport.rows"] == 2
        assert predict.attributes["modelport.batch.rows"] == 7 * 2
        assert predict.attributes["modelport.batch.requests"] == 7
        assert predict.attributes["modelport.model.version"] == 1
        calls.add((predict.start_ns, predict.end_ns))
    assert len(calls) == 1  # one call, seen from each request it served
    assert alone["predict"].end_ns <= min(calls)[0]

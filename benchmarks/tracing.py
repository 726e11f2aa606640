"""`python -m benchmarks.tracing`: what OpenTelemetry tracing costs a request, in-process.

Each configuration runs in a fresh process (tracing is chosen by the environment when the app is
created), which drives the ASGI app directly — no HTTP server, no client — with iris prediction
requests carrying a caller's `traceparent`, one at a time and then 16 at once (so requests wait
in the micro-batcher and get `queue` spans), and reports the process's CPU time per request,
export threads included (the run ends with a flush). Spans go over OTLP/HTTP to a sink in another
process, so the receiving side is not counted. Configurations, in turns, `--rounds` times:

- `off`: no OTEL_* variables (the default);
- `on`: OTEL_EXPORTER_OTLP_ENDPOINT set: our server span, decode/queue/predict/encode;
- `unsampled`: on, with OTEL_TRACES_SAMPLER=always_off (spans started, none recorded);
- `fastapi`: FastAPI's native server span (its `telemetry` switched on, a global provider)
  with our data-plane spans under it, instead of our middleware;
- `baseline` (with `--baseline DIR`): the code in DIR, e.g. the commit before tracing
  (`git archive <commit> | tar -x -C DIR`), with no OTEL_* variables.

A microbenchmark of the request path alone; `make bench` measures the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONFIGURATIONS = ("off", "on", "unsampled", "fastapi")
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CONCURRENT = 16

_SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


# -- in the measured process -----------------------------------------------------------------------
async def _lifespan(app: Any) -> tuple[dict[str, Any], asyncio.Queue[dict[str, Any]], Any]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    return state, inbox, (task, outbox)


async def _request(app: Any, state: dict[str, Any]) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/models/iris/versions/1/predict",
        "raw_path": b"/models/iris/versions/1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"traceparent", TRACEPARENT),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": dict(state),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _measure(configuration: str, store: Path, requests: int) -> dict[str, float]:
    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(model_dir=store, access_log=False))
    state, inbox, (task, outbox) = await _lifespan(app)
    if configuration == "fastapi":
        from opentelemetry import trace

        from app.tracing import TRACING

        TRACING.start(("otlp",), service_version="bench")
        trace.set_tracer_provider(TRACING._provider)
        app._telemetry["tracing"] = True  # what FastAPI(telemetry={"tracing": True}) sets
    for _ in range(200):  # warm up: caches, the batcher's timing of small calls
        assert await _request(app, state) == 200
    result = {}
    for label, concurrency in (("sequential", 1), ("concurrent", CONCURRENT)):
        started = time.process_time()
        for _ in range(requests // concurrency):
            statuses = await asyncio.gather(*(_request(app, state) for _ in range(concurrency)))
            assert set(statuses) == {200}, statuses
        if configuration != "off" and configuration != "baseline":
            from app.tracing import TRACING

            TRACING._provider.force_flush()
        result[label] = (time.process_time() - started) / requests * 1e6
    await inbox.put({"type": "lifespan.shutdown"})
    await outbox.get()
    await task
    return result


# -- the driver ------------------------------------------------------------------------------------
def _environment(configuration: str, sink: str, baseline: Path | None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key != "PYTHONPATH"
    }
    env["PYTHONPATH"] = str(baseline if configuration == "baseline" else REPO)
    if configuration in ("on", "unsampled"):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink
    if configuration == "unsampled":
        env["OTEL_TRACES_SAMPLER"] = "always_off"
    if configuration == "fastapi":
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{sink}/v1/traces"
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per round and mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a tree of the code without tracing")
    parser.add_argument(
        "--only", nargs="+", choices=(*CONFIGURATIONS, "baseline"), help="these configurations"
    )
    parser.add_argument("--measure", choices=(*CONFIGURATIONS, "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(asyncio.run(_measure(args.measure, args.store, args.requests))))  # noqa: T201
        return 0

    configurations: tuple[str, ...] = (
        (*CONFIGURATIONS, "baseline") if args.baseline else CONFIGURATIONS
    )
    if args.only:
        configurations = tuple(name for name in configurations if name in args.only)
    with tempfile.TemporaryDirectory(prefix="modelport-tracing-bench-") as work:
        store = Path(work) / "models"
        subprocess.run(
            [str(BIN / "modelport"), "train", "--model-dir", str(store), "--only", "iris"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        sink = subprocess.Popen([sys.executable, "-c", _SINK], stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None
            endpoint = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
            results: dict[str, list[dict[str, float]]] = {name: [] for name in configurations}
            for _ in range(args.rounds):
                for name in configurations:
                    done = subprocess.run(
                        [sys.executable, str(Path(__file__).resolve()), "--measure", name,
                         "--store", str(store), "--requests", str(args.requests)],
                        env=_environment(name, endpoint, args.baseline),
                        cwd=work,
                        capture_output=True,
                        text=True,
                        check=True,
                    )  # fmt: skip
                    results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        finally:
            sink.terminate()
            sink.wait()
    check = min(
        timeit.repeat(
            "if TRACING.on: pass", "from app.tracing import TRACING", number=1_000_000, repeat=5
        )
    )
    lines = [
        f"load average: {os.getloadavg()[0]:.2f}; {args.rounds} rounds of {args.requests} requests",
        f"the off path's one check per request (`if TRACING.on`): {check * 1000:.0f} ns",
        "| configuration | CPU µs per request, 1 at a time | 16 at a time |",
        "|---|---|---|",
    ]
    for name, rounds in results.items():
        cells = []
        for mode in ("sequential", "concurrent"):
            values = [round_[mode] for round_ in rounds]
            cells.append(f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    print("\n".join(lines))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())

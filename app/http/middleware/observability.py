"""Per-request observability, as one ASGI middleware: the request id, one JSON log line per
request, and the request metrics.

`X-Request-ID` is honoured when it looks like an id (else replaced) and always returned. Labels
use the matched route template (`/models/{model_name}/predict`), never the raw path, so a client
cannot blow up the metrics' cardinality; unmatched paths are labelled "unmatched".
"""

import asyncio
import random
import re
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import LATENCY, REQUESTS, TURN_METRICS
from app.serving.payload_log import REQUEST_ID

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class AccessLog:
    """The access log: one JSON line per request on stdout (`stream`, when set, for tests).

    Lines are written once per turn of the event loop, not once per request: under load a
    worker answers many requests per turn, and each write is a system call during which the GIL
    goes to any thread running a model and must be won back. Not the `logging` module: a
    LogRecord and a handler call per request cost as much as the rest of the line (~12 µs of
    ~180 µs per iris request in-process). `flush` writes what is pending at once (the app's
    shutdown calls it); lines added off an event loop are written at once.
    """

    def __init__(self) -> None:
        self.stream: TextIO | None = None
        self._pending: list[bytes] = []
        self._scheduled = False
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry)
        with self._lock:
            self._pending.append(line)
            if self._scheduled:
                return
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # not on an event loop: no turn to wait for
                pass
            else:
                self._scheduled = True
                return
        self.flush()

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            lines, self._pending = self._pending, []
        if lines:
            stream = sys.stdout if self.stream is None else self.stream
            try:
                stream.write(b"\n".join([*lines, b""]).decode())
                stream.flush()
            except (OSError, ValueError):
                pass  # stdout closed or gone: the lines are lost, never the requests


ACCESS_LOG = AccessLog()


def _route_label(scope: Scope, status: int) -> str:
    template = getattr(scope.get("route"), "path", None)
    if template:
        return str(template)
    # FastAPI records the route only for API routes. Other successful answers come from a fixed
    # set of paths (/openapi.json, the docs' assets), so their raw path is a bounded label; any
    # other path a client makes up is "unmatched".
    return str(scope["path"]) if status < 400 else "unmatched"


# Label children looked up once per (route, method[, status]): `labels()` takes a lock and
# builds its key on every call. Routes are templates, so these stay small.
_COUNTERS: dict[tuple[str, str, int], Any] = {}
_HISTOGRAMS: dict[tuple[str, str], Any] = {}


def _request_counter(route: str, method: str, status: int) -> Any:
    key = (route, method, status)
    child = _COUNTERS.get(key)
    if child is None:
        child = _COUNTERS[key] = REQUESTS.labels(route, method, str(status))
    return child


def _latency_histogram(route: str, method: str) -> Any:
    key = (route, method)
    child = _HISTOGRAMS.get(key)
    if child is None:
        child = _HISTOGRAMS[key] = LATENCY.labels(route, method)
    return child


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: AccessLog | None) -> None:
        """`access_log` None: no access log (MODELPORT_ACCESS_LOG=false)."""
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        offered = next(
            (value for name, value in scope["headers"] if name == b"x-request-id"), b""
        ).decode("latin-1")
        # Not a secret, so no system call for it: `random` is re-seeded in every forked worker.
        request_id = (
            offered if _REQUEST_ID.fullmatch(offered) else f"{random.getrandbits(128):032x}"
        )
        REQUEST_ID.set(request_id)  # for the payload log (this request's task's own context)
        status = 500
        model_version = ""

        async def send_with_id(message: Message) -> None:
            nonlocal status, model_version
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = list(message.get("headers", []))
                for name, value in response_headers:
                    if name.lower() == b"x-model-version":
                        model_version = value.decode("latin-1")
                message["headers"] = [*response_headers, (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            latency = time.perf_counter() - started
            route = _route_label(scope, status)
            method = scope["method"]
            TURN_METRICS.inc(_request_counter(route, method, status))
            TURN_METRICS.observe(_latency_histogram(route, method), latency)
            if self.access_log is not None:
                self.access_log.add(
                    {
                        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "path": scope["path"],
                        "status": status,
                        "latency_ms": round(latency * 1000, 3),
                        "model": scope.get("path_params", {}).get("model_name"),
                        "version": int(model_version) if model_version.isdigit() else None,
                    }
                )

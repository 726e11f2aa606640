"""Per-request observability, as one ASGI middleware: the request id, one JSON log line per
request, and the request metrics.

`X-Request-ID` is honoured when it looks like an id (else replaced) and always returned. Labels
use the matched route template (`/models/{model_name}/predict`), never the raw path, so a client
cannot blow up the metrics' cardinality; unmatched paths are labelled "unmatched".
"""

import logging
import random
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import LATENCY, REQUESTS

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_logger = logging.getLogger("modelport.access")


def configure_access_log() -> None:
    """JSON lines on stdout, one per request, nothing added around them."""
    if not access_logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(handler)
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False


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
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            _request_counter(route, method, status).inc()
            _latency_histogram(route, method).observe(latency)
            if access_logger.isEnabledFor(logging.INFO):
                _log_access(scope, request_id, route, status, latency, model_version)


def _log_access(
    scope: Scope, request_id: str, route: str, status: int, latency: float, model_version: str
) -> None:
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "method": scope["method"],
        "route": route,
        "path": scope["path"],
        "status": status,
        "latency_ms": round(latency * 1000, 3),
        "model": scope.get("path_params", {}).get("model_name"),
        "version": int(model_version) if model_version.isdigit() else None,
    }
    # A record made directly: Logger.info would also walk the stack to find its caller, which
    # costs more than the rest of this line (handlers and filters still apply).
    line = orjson.dumps(record).decode()
    access_logger.handle(
        logging.LogRecord(access_logger.name, logging.INFO, __file__, 0, line, None, None)
    )

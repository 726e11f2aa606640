"""Per-request observability, as one ASGI middleware: the request id, one JSON log line per
request, and the request metrics.

`X-Request-ID` is honoured when it looks like an id (else replaced) and always returned. Labels
use the matched route template (`/models/{model_name}/predict`), never the raw path, so a client
cannot blow up the metrics' cardinality; unmatched paths are labelled "unmatched".
"""

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

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


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
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
            REQUESTS.labels(route, method, str(status)).inc()
            LATENCY.labels(route, method).observe(latency)
            record: dict[str, Any] = {
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
            access_logger.info(json.dumps(record))

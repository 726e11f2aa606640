"""Per-request observability, as one ASGI middleware: the request id, one JSON log line per
request, and the request metrics.

`X-Request-ID` is honoured when it looks like an id (else replaced) and always returned. Labels
use the matched route template (`/models/{model_name}/predict`), never the raw path, so a client
cannot blow up the metrics' cardinality; unmatched paths are labelled "unmatched".
"""

import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.access_log import AccessLog
from app.access_log import request_id as new_request_id
from app.metrics import TURN_METRICS, latency_histogram, request_counter
from app.serving.payload_log import REQUEST_ID


def _route_label(scope: Scope, status: int) -> str:
    template = getattr(scope.get("route"), "path", None)
    if template:
        return str(template)
    # FastAPI records the route only for API routes. Other successful answers come from a fixed
    # set of paths (/openapi.json, the docs' assets), so their raw path is a bounded label; any
    # other path a client makes up is "unmatched".
    return str(scope["path"]) if status < 400 else "unmatched"


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
        request_id = new_request_id(offered)
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
            TURN_METRICS.inc(request_counter(route, method, status))
            TURN_METRICS.observe(latency_histogram(route, method), latency)
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

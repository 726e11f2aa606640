"""The HTTP server span of each request, as one ASGI middleware (installed only when tracing is
on: app.tracing).

The span is the child of the caller's span named by the request's W3C `traceparent` (and
`tracestate`), or a new trace's root; the reply carries the server span's own `traceparent`, so
a caller without a tracer can still find its request's trace. Named and attributed by
OpenTelemetry's HTTP server conventions ("POST /models/{model_name}/predict", `http.route`,
`http.response.status_code`, ...): a 5xx reply sets the span's status to ERROR, with the service
error's kind as `error.type` (e.g. "InferenceError"); a 4xx leaves it unset, as the conventions
say of server spans; the data plane's step that refused the request carries the error itself.
"""

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.errors import ERROR_KIND
from app.tracing import TRACING

_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)


def _request_attributes(scope: Scope, method: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    if method != scope["method"]:
        attributes["http.request.method_original"] = scope["method"]
    if scope.get("query_string"):
        attributes["url.query"] = scope["query_string"].decode("latin-1")
    server = scope.get("server")
    if server:
        attributes["server.address"], attributes["server.port"] = server[0], server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"], attributes["client.port"] = client[0], client[1]
    for name, value in scope["headers"]:
        if name == b"user-agent":
            attributes["user_agent.original"] = value.decode("latin-1")
        elif name == b"host":  # the address the client used, which the conventions prefer
            host, port = _authority(value.decode("latin-1"), scheme=attributes["url.scheme"])
            if host:
                attributes["server.address"], attributes["server.port"] = host, port
    return attributes


def _authority(host: str, *, scheme: str) -> tuple[str, int]:
    """A Host header's host and port ("[::1]:8000", "example.com": the scheme's port)."""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        address, _, port = host.partition(":")
    return address, int(port) if port.isdigit() else (443 if scheme == "https" else 80)


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not TRACING.on:
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "_OTHER"
        name = "HTTP" if method == "_OTHER" else method
        server = TRACING.server_span(name, scope["headers"], _request_attributes(scope, method))
        traceparent = server.traceparent.encode()
        status = 0

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                for key, value in headers:
                    if key == b"x-request-id":  # set by the observability middleware
                        server.span.set_attribute("modelport.request.id", value.decode("latin-1"))
                message["headers"] = [*headers, (b"traceparent", traceparent)]
            await send(message)

        error: BaseException | None = None
        try:
            with TRACING.current(server):
                await self.app(scope, receive, send_traced)
        except BaseException as exc:
            error = exc
            raise
        finally:
            span = server.span
            route = getattr(scope.get("route"), "path", None)
            if route:
                span.set_attribute("http.route", route)
                span.update_name(f"{name} {route}")
            if error is not None and not status:
                status = 500  # unhandled: answered by Starlette's outermost error middleware
            if status:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                TRACING.failed(span, error)
            elif status >= 500:
                TRACING.failed(span, scope.get(ERROR_KIND) or str(status))
            span.end()

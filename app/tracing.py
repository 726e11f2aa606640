"""OpenTelemetry tracing: off unless the `OTEL_*` variables name an exporter, and free when off.

Off (the default) this module imports nothing of OpenTelemetry, no middleware is installed, and
the data plane pays one attribute check per request (`TRACING.on`). On, each worker process
starts its own `TracerProvider` in the app's lifespan — after gunicorn forks it, so the
`BatchSpanProcessor`'s export thread runs in the worker that fills its queue — and shuts it down
(flushing what is queued) when the worker exits.

A request's trace: the HTTP server span (app.http.middleware.tracing, the child of the caller's
`traceparent`), and under it one span per step of the data plane — `decode`, `queue` (waiting in
the version's micro-batcher), `predict` (the estimator call) and `encode` — each carrying the
model's name and version and the request's rows. One estimator call may serve several requests
(micro-batching): each request gets its own `predict` span over the shared call, which says how
many rows and requests the call served.

A leaf: the layers above call it; the OpenTelemetry SDK is imported only in `start`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

SERVICE_NAME = "modelport"  # unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names one
EXPORTERS = ("otlp", "console")
MODEL_NAME = "modelport.model.name"
MODEL_VERSION = "modelport.model.version"
ROWS = "modelport.rows"
BATCH_ROWS = "modelport.batch.rows"
BATCH_REQUESTS = "modelport.batch.requests"


def trace_exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters the standard `OTEL_*` variables ask for; empty when tracing is off.

    Off unless `OTEL_TRACES_EXPORTER` names `otlp` or `console`, or, with it unset, an OTLP
    endpoint is given (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`):
    the specification's default exporter is `otlp`, but a server should not post spans to
    localhost:4318 because nobody said otherwise. `OTEL_SDK_DISABLED=true` or `none` turn it off.
    Raises ValueError on what modelport cannot export (another exporter, OTLP over gRPC)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names: tuple[str, ...] = ("otlp",) if endpoint else ()
    else:
        names = tuple(dict.fromkeys(name.strip() for name in named.split(",") if name.strip()))
        if "none" in names:
            return ()
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={named}: modelport exports spans with "
            f"{' or '.join(EXPORTERS)} (or none), not {', '.join(unknown)}"
        )
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if "otlp" in names and protocol != "http/protobuf":
        raise ValueError(
            f"OTLP protocol {protocol}: modelport exports OTLP over HTTP (http/protobuf) only"
        )
    return names


@dataclass(slots=True)
class CallTiming:
    """When the estimator call that answered one request ran (ns since the epoch). The
    micro-batcher fills in `started`..`requests` when the request waited for a batch; left at 0,
    the request went straight to the estimator when it `entered`."""

    entered: int
    started: int = 0
    ended: int = 0
    rows: int = 0  # rows in the call: this request's and its batch-mates'
    requests: int = 0


def mark_calls(batch: list[tuple[CallTiming | None, int]], started: int) -> None:
    """Record one batched call, which began at `started` and ends now, on the timings of its
    requests (each with its rows; untraced requests have no timing)."""
    ended = time.time_ns()
    rows = sum(count for _, count in batch)
    for timing, _ in batch:
        if timing is not None:
            timing.started, timing.ended = started, ended
            timing.rows, timing.requests = rows, len(batch)


class Step:
    """One data-plane step being traced; `rows` is set by the step once it knows them."""

    __slots__ = ("rows",)

    def __init__(self, rows: int | None) -> None:
        self.rows = rows


class RequestTrace:
    """The data plane's handle on one request's trace: makes its steps' spans, children of the
    request's server span (created with an explicit parent, so from any thread)."""

    __slots__ = ("_tracing", "_parent", "_attributes")

    def __init__(self, tracing: Tracing, parent: Any, attributes: dict[str, Any]) -> None:
        self._tracing = tracing
        self._parent = parent
        self._attributes = attributes

    @contextmanager
    def step(self, name: str, rows: int | None = None) -> Iterator[Step]:
        span = self._tracing.tracer.start_span(
            name, context=self._parent, attributes=self._attributes
        )
        step = Step(rows)
        try:
            yield step
        except Exception as exc:
            self._tracing.failed(span, exc)
            raise
        finally:
            if step.rows is not None:
                span.set_attribute(ROWS, step.rows)
            span.end()

    def call(self) -> CallTiming:
        return CallTiming(entered=time.time_ns())

    def called(self, timing: CallTiming, rows: int, error: Exception | None = None) -> None:
        """The `queue` and `predict` spans of a call that has returned (or raised `error`)."""
        if not timing.started:  # straight to the estimator, alone
            timing.started, timing.ended = timing.entered, time.time_ns()
            timing.rows, timing.requests = rows, 1
        tracer = self._tracing.tracer
        attributes = {**self._attributes, ROWS: rows}
        queue = tracer.start_span(
            "queue", context=self._parent, attributes=attributes, start_time=timing.entered
        )
        queue.end(end_time=timing.started)
        attributes[BATCH_ROWS] = timing.rows
        attributes[BATCH_REQUESTS] = timing.requests
        predict = tracer.start_span(
            "predict", context=self._parent, attributes=attributes, start_time=timing.started
        )
        if error is not None:
            self._tracing.failed(predict, error)
        predict.end(end_time=timing.ended)


class ServerSpan:
    """The HTTP layer's handle on a request's server span, current while the app runs."""

    __slots__ = ("span", "traceparent", "context")

    def __init__(self, span: Any, context: Any) -> None:
        self.span = span
        self.context = context
        ids = span.get_span_context()
        self.traceparent = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"


class Tracing:
    """The process's tracer. `on` is the one attribute the off path reads."""

    def __init__(self) -> None:
        self.on = False
        self.tracer: Any = None
        self._provider: Any = None
        self._api: Any = None  # opentelemetry's `trace`, `context` and `propagate`, once on
        self._server_kind: Any = None

    # -- lifecycle, in each worker ---------------------------------------------------------------
    def start(self, exporters: Iterable[str], *, service_version: str) -> None:
        """A TracerProvider with a BatchSpanProcessor per exporter, for this process. The SDK reads
        the rest of the `OTEL_*` variables itself: the endpoint, headers, timeout and compression
        (OTEL_EXPORTER_OTLP_*), the batching (OTEL_BSP_*), the sampler (OTEL_TRACES_SAMPLER[_ARG]),
        the span limits and OTEL_RESOURCE_ATTRIBUTES."""
        from opentelemetry import context, propagate, trace
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

        self.stop()
        configured = OTELResourceDetector().detect().attributes  # OTEL_SERVICE_NAME and co.
        resource = Resource.create(
            {
                "service.name": SERVICE_NAME,
                "service.version": service_version,
                "process.pid": os.getpid(),  # the worker's: spans tell which worker served them
                **configured,
            }
        )
        # Shut down by `stop` (from the lifespan), not at interpreter exit as well.
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for name in exporters:
            exporter: SpanExporter
            if name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                exporter = OTLPSpanExporter()
            else:
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter

                exporter = ConsoleSpanExporter()
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self._api = (trace, context, propagate)
        self._server_kind = trace.SpanKind.SERVER
        self._provider = provider
        self.tracer = provider.get_tracer("modelport", service_version)
        self.on = True

    def stop(self) -> None:
        """Export what is queued and stop the export threads."""
        self.on = False
        provider, self._provider = self._provider, None
        if provider is not None:
            provider.shutdown()

    # -- the HTTP server span ----------------------------------------------------------------------
    def server_span(
        self, name: str, headers: Iterable[tuple[bytes, bytes]], attributes: dict[str, Any]
    ) -> ServerSpan:
        """A server span, the child of the span the request's `traceparent` names (W3C trace
        context, `tracestate` kept; OTEL_PROPAGATORS may choose other propagators)."""
        trace, _, propagate = self._api
        carrier: dict[str, list[str]] = {}
        for key, value in headers:
            carrier.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
        parent = propagate.extract(carrier)
        span = self.tracer.start_span(
            name, context=parent, kind=self._server_kind, attributes=attributes
        )
        return ServerSpan(span, trace.set_span_in_context(span, parent))

    @contextmanager
    def current(self, server: ServerSpan) -> Iterator[None]:
        """`server` as the current span: the data plane's steps find it there."""
        context = self._api[1]
        token = context.attach(server.context)
        try:
            yield
        finally:
            context.detach(token)

    def failed(self, span: Any, error: BaseException | str) -> None:
        """Mark `span` ERROR. A service error's `error.type` is its kind (e.g. InvalidInput)."""
        from opentelemetry.trace import Status, StatusCode

        if isinstance(error, str):
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR))
            return
        kind = getattr(error, "kind", None) or _qualified_name(type(error))
        span.set_attribute("error.type", kind)
        status_code = getattr(error, "status_code", None)
        if isinstance(status_code, int):
            span.set_attribute("modelport.error.status_code", status_code)
        message = str(error)
        span.set_status(
            Status(StatusCode.ERROR, kind if message in ("", kind) else f"{kind}: {message}")
        )

    # -- the data plane's steps --------------------------------------------------------------------
    def request(self, model_name: str, version: int) -> RequestTrace | None:
        """The current request's trace, for its steps' spans; None when no recording span is
        current (the request was not sampled, or came from outside the HTTP server)."""
        trace, context, _ = self._api
        span = trace.get_current_span()
        if not span.is_recording():
            return None
        attributes = {MODEL_NAME: model_name, MODEL_VERSION: version}
        span.set_attributes(attributes)
        return RequestTrace(self, context.get_current(), attributes)


def _qualified_name(cls: type) -> str:
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


TRACING = Tracing()

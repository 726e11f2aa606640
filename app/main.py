"""The application factory and lifespan. `app = create_app()` is the ASGI entrypoint."""

import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.access_log import ACCESS_LOG
from app.config import MASTER_PID_ENV, Settings, get_settings, repository_state_file_of
from app.grpc.server import start_grpc
from app.http import paths
from app.http.dependencies import ApiKeyGuard
from app.http.docs_pages import install_docs
from app.http.errors import add_exception_handlers
from app.http.middleware.body_limit import BodyLimitMiddleware
from app.http.middleware.cors import EnvelopeCORSMiddleware
from app.http.middleware.observability import ObservabilityMiddleware
from app.http.middleware.tracing import TracingMiddleware
from app.http.openapi import install_openapi
from app.metrics import TURN_METRICS
from app.server.handover import hand_over
from app.serving.dataplane import DataPlane
from app.serving.loading import registry_for
from app.serving.master_repository import MasterRepository
from app.serving.payload_log import payload_log_from
from app.serving.registry import ModelRegistry
from app.serving.repository import InProcessRepository, Repository
from app.serving.repository_state import StateFile
from app.tracing import TRACING, trace_exporters
from routers import explain, files, forms, health, models, predict, stream, v2

logger = logging.getLogger("modelport")

# How long a worker shutting down keeps the gRPC port for a new worker to start listening on it.
HANDOVER_SECONDS = 10.0


class State(TypedDict):
    registry: ModelRegistry
    dataplane: DataPlane


def _configure_logging(level: str) -> None:
    service_logger = logging.getLogger("modelport")
    if not service_logger.handlers:  # an embedding app may have configured it already
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
        )
        service_logger.addHandler(handler)
    service_logger.setLevel(level.upper())


def _body_limits(settings: Settings) -> Callable[[str], int]:
    def limit_for(path: str) -> int:
        # Multipart uploads (files, forms) get their own, larger limit.
        if path.endswith(paths.UPLOAD_SUFFIXES):
            return settings.max_upload_bytes
        # Streams count their own bodies (MODELPORT_STREAM_MAX_BYTES, if set): past the limit
        # the reply has started, and says so in its own last records rather than being cut.
        if path.endswith(paths.STREAM_SUFFIX):
            return sys.maxsize
        return settings.max_body_bytes

    return limit_for


def _operation_id(route: APIRoute) -> str:
    tag = str(route.tags[0]) if route.tags else "default"
    return f"{tag}-{route.name}"


def _repository(settings: Settings, registry: ModelRegistry) -> Repository:
    """Under `modelport serve` the gunicorn master holds the models, and loads and unloads them
    for its workers; anywhere else (`modelport dev`, tests) this process does."""
    master = os.environ.get(MASTER_PID_ENV)
    if master is None:
        return InProcessRepository(registry)
    return MasterRepository(
        registry,
        StateFile(repository_state_file_of(settings)),
        master_pid=int(master),
        timeout=settings.repository_timeout,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    _configure_logging(settings.log_level)
    # The backend and the batcher are attached to each version as it loads (app.serving.loading).
    registry = registry_for(settings)
    payload_log = payload_log_from(settings)
    dataplane = DataPlane(registry, _repository(settings, registry), payload_log)
    # OpenTelemetry, by the standard OTEL_* variables (app.tracing): off unless they name an
    # exporter, and then started in each worker (the lifespan runs after gunicorn's fork).
    exporters = trace_exporters(os.environ)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        # Every model is loaded before the first request; a broken one is reported, not fatal.
        # Under `modelport serve` the gunicorn master has loaded the store before forking this
        # worker (app.server.gunicorn_conf), so the models' memory is shared: keep that copy.
        if not registry.loaded:
            registry.load()
        if exporters:
            TRACING.start(exporters, service_version=app.version)
        # The gRPC surface, on this process's event loop: under gunicorn, in every worker after
        # the fork (app.grpc.server).
        grpc_server = await start_grpc(dataplane, settings) if settings.grpc_port else None
        yield {"registry": registry, "dataplane": dataplane}
        if grpc_server is not None:
            # On a reload the port stays served until a new worker listens on it (gRPC's
            # listeners are the workers' own); then calls in flight finish before the models go.
            started = time.monotonic()
            await hand_over(grpc_server.port, timeout=HANDOVER_SECONDS)
            spent = time.monotonic() - started
            await grpc_server.stop(grace=max(settings.graceful_timeout - spent, 1.0))
        registry.clear()
        if payload_log is not None:
            payload_log.close()
        ACCESS_LOG.flush()
        TURN_METRICS.flush()
        if exporters:
            TRACING.stop()

    app = FastAPI(
        title="modelport",
        summary="Serve scikit-learn models over HTTP.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs
        redoc_url=None,
        openapi_url=paths.OPENAPI if settings.docs_enabled else None,
        generate_unique_id_function=_operation_id,
        # FastAPI's native OpenTelemetry stays off, even with tracing on: it asks on every
        # request whether a provider was configured (~3% of a worker's time on iris), and, on,
        # its server span cost more CPU than ours (app.http.middleware.tracing, installed only
        # when tracing is on; `python -m benchmarks.tracing`, docs/operations.md "Tracing").
        # Metrics are Prometheus', at /metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.dataplane = dataplane
    add_exception_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limit_for=_body_limits(settings))
    if settings.cors_origins:  # outside the body limit: even a 413 carries CORS headers
        app.add_middleware(
            EnvelopeCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    # Outermost: every request, refused ones included, gets an id, a log line and metrics.
    app.add_middleware(
        ObservabilityMiddleware, access_log=ACCESS_LOG if settings.access_log else None
    )
    if exporters:  # outside it, so the server span covers the whole request
        app.add_middleware(TracingMiddleware)
    # First, so they are matched first. They carry the API-key guard only when a key is
    # configured: even a guard that lets everything through costs a dependency solve.
    predict.add_routes(app, guard=[ApiKeyGuard] if settings.api_key else [])
    explain.add_routes(app, guard=[ApiKeyGuard] if settings.api_key else [])
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(files.router)
    app.include_router(stream.router)
    app.include_router(forms.router)
    app.include_router(v2.router)
    if settings.docs_enabled:
        install_docs(app)
        install_openapi(app, registry)
    return app


app = create_app()

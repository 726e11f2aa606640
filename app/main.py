"""The application factory and lifespan. `app = create_app()` is the ASGI entrypoint."""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.config import Settings, get_settings
from app.http import paths
from app.http.dependencies import ApiKeyGuard
from app.http.docs_pages import install_docs
from app.http.errors import add_exception_handlers
from app.http.middleware.body_limit import BodyLimitMiddleware
from app.http.middleware.cors import EnvelopeCORSMiddleware
from app.http.middleware.observability import ACCESS_LOG, ObservabilityMiddleware
from app.http.openapi import install_openapi
from app.metrics import TURN_METRICS
from app.serving.backend_gate import backend_hook
from app.serving.batching import BatchPolicy, batching_hook
from app.serving.dataplane import DataPlane
from app.serving.payload_log import payload_log_from
from app.serving.registry import ModelRegistry
from routers import explain, files, forms, health, models, predict, v2

logger = logging.getLogger("modelport")


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
        return settings.max_body_bytes

    return limit_for


def _operation_id(route: APIRoute) -> str:
    tag = str(route.tags[0]) if route.tags else "default"
    return f"{tag}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    _configure_logging(settings.log_level)
    registry = ModelRegistry(
        settings.model_dir,
        max_rows=settings.max_rows,
        trusted_types=settings.skops_trusted_types,
        # The backend and the batcher are attached to each version as it loads (MLServer's
        # load-hook pattern): the parity gate first, so the batcher sees the chosen backend.
        on_load=[
            backend_hook(settings.backend),
            batching_hook(
                BatchPolicy(
                    max_rows=settings.batch_max_rows,
                    max_wait=settings.batch_max_wait_ms / 1000,
                    enabled=settings.batching,
                )
            ),
        ],
    )
    payload_log = payload_log_from(settings)
    dataplane = DataPlane(registry, payload_log)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        # Every model is loaded before the first request; a broken one is reported, not fatal.
        # Under `modelport serve` the gunicorn master has loaded the store before forking this
        # worker (app.server.gunicorn_conf), so the models' memory is shared: keep that copy.
        if not registry.loaded:
            registry.load()
        yield {"registry": registry, "dataplane": dataplane}
        registry.clear()
        if payload_log is not None:
            payload_log.close()
        ACCESS_LOG.flush()
        TURN_METRICS.flush()

    app = FastAPI(
        title="modelport",
        summary="Serve scikit-learn models over HTTP.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs
        redoc_url=None,
        openapi_url=paths.OPENAPI if settings.docs_enabled else None,
        generate_unique_id_function=_operation_id,
        # FastAPI's native OpenTelemetry: no OpenTelemetry SDK ships with modelport, so all it
        # could do is ask, on every request, whether a provider was configured (~3% of a
        # worker's time on iris). Metrics are Prometheus', at /metrics.
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
    # First, so they are matched first. They carry the API-key guard only when a key is
    # configured: even a guard that lets everything through costs a dependency solve.
    predict.add_routes(app, guard=[ApiKeyGuard] if settings.api_key else [])
    explain.add_routes(app, guard=[ApiKeyGuard] if settings.api_key else [])
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(files.router)
    app.include_router(forms.router)
    app.include_router(v2.router)
    if settings.docs_enabled:
        install_docs(app)
        install_openapi(app, registry)
    return app


app = create_app()

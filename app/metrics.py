"""Prometheus metrics, right whichever gunicorn worker answers.

Under gunicorn, `app.server.gunicorn_conf` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before
any worker starts: each worker writes its samples there and `/metrics` aggregates them all.
Without it (tests, `modelport dev`) the process's own registry is used.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

_pid = os.getpid()


def _remember_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_remember_pid)


def _process_id() -> int:
    return _pid


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # In multiprocess mode every increment asks for os.getpid() (a system call), to notice a
    # fork; with five or so per request that is measurable. The pid is kept here instead,
    # refreshed in every forked child. Set before any metric exists, so all of them use it.
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)  # type: ignore[no-untyped-call]

REQUESTS = Counter(
    "modelport_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "modelport_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PREDICTIONS = Counter(
    "modelport_predictions_total",
    "Prediction calls (one per request, any surface).",
    ["model", "version"],
)
PREDICTED_ROWS = Counter("modelport_predicted_rows_total", "Rows predicted.", ["model", "version"])
BATCH_SIZE = Histogram(
    "modelport_batch_size_rows",
    "Rows passed to one estimator call.",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384),
)
# "max": one value per model across workers (they load the same store).
MODEL_LOADED = Gauge(
    "modelport_model_loaded", "1 when the version is serving, 0 when it was refused.", ["model", "version"],
    multiprocess_mode="max",
)  # fmt: skip
MODEL_LOAD_SECONDS = Gauge(
    "modelport_model_load_seconds",
    "Time taken to load the version.",
    ["model", "version"],
    multiprocess_mode="max",
)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

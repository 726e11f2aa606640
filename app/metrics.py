"""Prometheus metrics, right whichever gunicorn worker answers.

Under gunicorn, `app.server.gunicorn_conf` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before
any worker starts: each worker writes its samples there and `/metrics` aggregates them all.
Without it (tests, `modelport dev`) the process's own registry is used.
"""

import asyncio
import bisect
import math
import os
import threading
from typing import Any

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
    "modelport_requests_total",
    "Requests answered: HTTP, and gRPC calls (method GRPC, status the HTTP equivalent of the gRPC code).",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "modelport_request_duration_seconds",
    "Time to answer a request (HTTP, or a gRPC call).",
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
# Overload: admission control and deadlines (app.serving.batching). "livesum": rows waiting in
# every live worker, summed.
QUEUE_ROWS = Gauge(
    "modelport_queue_rows",
    "Rows waiting for the version's estimator (queued behind a running call).",
    ["model", "version"],
    multiprocess_mode="livesum",
)
QUEUE_WAIT = Histogram(
    "modelport_queue_wait_seconds",
    "Time a request's rows waited before the estimator took them (0 for a request that found it idle).",
    ["model", "version"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REFUSED = Counter(
    "modelport_refused_total",
    "Requests refused at once with 429: reason queue_full or deadline_unreachable.",
    ["model", "version", "reason"],
)
DEADLINE_EXPIRED = Counter(
    "modelport_deadline_expired_total",
    "Requests answered 504 because their deadline passed (rows still queued then never reach the estimator).",
    ["model", "version"],
)
DISCONNECTED = Counter(
    "modelport_disconnected_total",
    "Requests whose client disconnected while their rows waited: dropped before the estimator.",
    ["model", "version"],
)


# Whether concurrent requests of different protocols share estimator calls (they should: every
# surface goes through the same batcher). Counted only for calls serving two or more requests,
# so a lone request costs nothing here.
SHARED_BATCHES = Counter(
    "modelport_shared_batches_total",
    "Estimator calls that served two or more requests, by those requests' protocols (http, grpc or grpc+http).",
    ["model", "version", "protocols"],
)
# "max": one value per model across workers (they load the same store).
MODEL_LOADED = Gauge(
    "modelport_model_loaded", "1 when the version is serving, 0 when it was refused or unloaded.", ["model", "version"],
    multiprocess_mode="max",
)  # fmt: skip
MODEL_BACKEND = Gauge(
    "modelport_model_backend",
    "1 for the backend serving the version (numpy-linear, numpy-trees or sklearn).",
    ["model", "version", "backend"],
    multiprocess_mode="max",
)
MODEL_VERSION_MISMATCH = Gauge(
    "modelport_model_version_mismatch",
    "1 when the version's artifact was made with another scikit-learn minor version than the "
    "server runs (refused, or served under MODELPORT_VERSION_MISMATCH=warn).",
    ["model", "version"],
    multiprocess_mode="max",
)
MODEL_LOAD_SECONDS = Gauge(
    "modelport_model_load_seconds",
    "Time taken to load the version.",
    ["model", "version"],
    multiprocess_mode="max",
)
PAYLOAD_LOG_RECORDS = Counter(
    "modelport_payload_log_records_total",
    "Payload log records written to the file or accepted by the sink.",
)
PAYLOAD_LOG_DROPPED = Counter(
    "modelport_payload_log_dropped_total",
    "Payload log records dropped: queue_full (the writer fell behind) or sink_error.",
    ["reason"],
)


# Label children looked up once per (route, method[, status]): `labels()` takes a lock and
# builds its key on every call. Routes are templates, so these stay small.
_COUNTERS: dict[tuple[str, str, int], Any] = {}
_HISTOGRAMS: dict[tuple[str, str], Any] = {}


def request_counter(route: str, method: str, status: int) -> Any:
    key = (route, method, status)
    child = _COUNTERS.get(key)
    if child is None:
        child = _COUNTERS[key] = REQUESTS.labels(route, method, str(status))
    return child


def latency_histogram(route: str, method: str) -> Any:
    key = (route, method)
    child = _HISTOGRAMS.get(key)
    if child is None:
        child = _HISTOGRAMS[key] = LATENCY.labels(route, method)
    return child


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class TurnMetrics:
    """Metric updates gathered per turn of the event loop, as the access log's lines are.

    Each update of a multiprocess metric is a locked write into a shared file (~3 µs for a
    counter, ~5 µs for a histogram here, five or so per request). Under load a worker answers
    many requests per turn: gathered, a counter's increments of one turn become one write, a
    histogram's observations one write to its sum plus one per bucket they fall in, and a
    gauge's settings one write of the last. Updates made
    off an event loop (estimator threads) are written at once.
    """

    def __init__(self) -> None:
        self._counts: dict[Any, float] = {}
        self._observations: dict[Any, list[float]] = {}
        self._levels: dict[Any, float] = {}
        self._scheduled = False
        self._lock = threading.Lock()

    def inc(self, counter: Any, amount: float = 1.0) -> None:
        """`counter` is a labelled child (`COUNTER.labels(...)`)."""
        with self._lock:
            self._counts[counter] = self._counts.get(counter, 0.0) + amount
        self._soon()

    def observe(self, histogram: Any, value: float) -> None:
        """`histogram` is a labelled child (`HISTOGRAM.labels(...)`)."""
        with self._lock:
            self._observations.setdefault(histogram, []).append(value)
        self._soon()

    def set(self, gauge: Any, value: float) -> None:
        """`gauge` is a labelled child; the turn's last value is the one written."""
        with self._lock:
            self._levels[gauge] = value
        self._soon()

    def _soon(self) -> None:
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # not on an event loop: no turn to wait for
            self.flush()
        else:
            self._scheduled = True

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            counts, self._counts = self._counts, {}
            observations, self._observations = self._observations, {}
            levels, self._levels = self._levels, {}
        for counter, amount in counts.items():
            counter.inc(amount)
        for gauge, value in levels.items():
            gauge.set(value)
        for histogram, values_ in observations.items():
            observe_all(histogram, values_)


def observe_all(histogram: Any, observed: list[float]) -> None:
    """Observe every value, with one write to the sum and one per bucket used. Reads the
    histogram child's own fields (prometheus_client 0.26, pinned; a test compares the result
    with one `observe` per value); where they are missing, observes one by one."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for value in observed:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in observed:
        # `observe` counts a value in the first bucket whose upper bound is >= it (the last
        # bound is +Inf).
        counts[bisect.bisect_left(bounds, value)] += 1
    total.inc(math.fsum(observed))
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)


TURN_METRICS = TurnMetrics()

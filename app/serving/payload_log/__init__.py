"""Payload logging: a sampled share of prediction requests' inputs and outputs, kept off the
request's path (docs/operations.md, "Payload logging").

Every surface's rows pass through the data plane, which hands the sampled ones to `offer`: a
random draw (none at rate 1.0), a length test and an append to a bounded in-memory queue, with
the request id the HTTP layer put in `REQUEST_ID`. Nothing is formatted or written there. A
background thread per process (started on the first record, so after gunicorn forks the
worker) wakes every FLUSH_INTERVAL seconds, turns what queued into JSON records and hands them
to the sink: a size-rotated JSON-lines file (sinks.FileSink) or CloudEvents POSTed to a URL
(sinks.CloudEventsSink). A full queue drops the record and counts it, and so does a sink that
fails; neither ever blocks a request.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import random
import threading
import time
import weakref
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from app.config import Settings
from app.metrics import PAYLOAD_LOG_DROPPED, PAYLOAD_LOG_RECORDS, TURN_METRICS
from app.serving.model import LoadedModel, ModelOutput, prediction_document
from app.serving.payload_log.sinks import CloudEventsSink, FileSink, Sink
from app.serving.schema import Rows

logger = logging.getLogger("modelport.payload_log")

# The id of the request being answered: set per request by the HTTP layer's observability
# middleware (each request runs in its own task, so its own context), read when logging.
REQUEST_ID: ContextVar[str | None] = ContextVar("modelport_request_id", default=None)
FLUSH_INTERVAL = 0.1  # seconds between the writer's passes over the queue
WRITE_CHUNK = 128  # records formatted and written at a time

_QUEUE_FULL = PAYLOAD_LOG_DROPPED.labels("queue_full")
_SINK_ERROR = PAYLOAD_LOG_DROPPED.labels("sink_error")

# (request id, time, model, rows, output): formatted by the writer, not by the request.
Pending = tuple[str | None, float, LoadedModel, Rows, ModelOutput]


class PayloadLog:
    """One process's payload log: `offer` on the request's path, a writer thread behind it."""

    def __init__(
        self, sink: Sink, *, rate: float, capacity: int, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self.sink = sink
        self.rate = rate
        self.capacity = capacity
        self.flush_interval = flush_interval
        self._queue: collections.deque[Pending] = collections.deque()
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        # A forked child (a gunicorn worker) starts its own writer on its first record, with an
        # empty queue: the parent's thread does not exist there, nor are its records the
        # child's to write.
        # (Through a weak reference: the hook lives as long as the process, the log need not.)
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_writer(this()))

    def offer(self, model: LoadedModel, rows: Rows, output: ModelOutput) -> None:
        """Queue one request's rows and output, if sampled; never blocks. The rows and the
        output are not copied: neither is changed once predicted."""
        if self.rate < 1.0 and random.random() >= self.rate:
            return
        queue = self._queue
        if len(queue) >= self.capacity:
            TURN_METRICS.inc(_QUEUE_FULL)
            return
        queue.append((REQUEST_ID.get(), time.time(), model, rows, output))
        if self._writer is None:
            self._start_writer()

    def close(self) -> None:
        """Stop the writer after it has written what is queued (the app's shutdown). A record
        offered later starts a new one."""
        with self._start_lock:
            self._stop.set()
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.join(timeout=10)
        self._write_pending()
        self.sink.close()
        self._stop.clear()

    def _start_writer(self) -> None:
        with self._start_lock:
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._run, name="modelport-payload-log", daemon=True
                )
                self._writer.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._write_pending()

    def _write_pending(self) -> None:
        """Write what is queued, WRITE_CHUNK records at a time: between chunks the writer lets
        the event loop have the GIL back, so a long backlog never stalls requests for more
        than one chunk's formatting."""
        queue = self._queue
        while queue:
            records: list[Pending] = []
            while queue and len(records) < WRITE_CHUNK:
                try:
                    records.append(queue.popleft())
                except IndexError:  # pragma: no cover - emptied by close() meanwhile
                    break
            if not records:
                return
            try:
                written = self.sink.write(records_of(records))
            except Exception as exc:  # a sink never takes the worker down: count, say, go on
                logger.warning("payload log: %d records dropped: %s", len(records), exc)
                written = 0
            TURN_METRICS.inc(PAYLOAD_LOG_RECORDS, written)
            if written < len(records):
                TURN_METRICS.inc(_SINK_ERROR, len(records) - written)
            time.sleep(0)


def _forget_writer(log: PayloadLog | None) -> None:
    if log is not None:
        log._writer = None
        log._queue = collections.deque()
        log._start_lock = threading.Lock()


def record_of(
    request_id: str | None, when: float, model: LoadedModel, rows: Rows, output: ModelOutput
) -> dict[str, Any]:
    """One request's record: `inputs` in the array form of a prediction request (card feature
    order), `outputs` as the prediction reply's items."""
    return records_of([(request_id, when, model, rows, output)])[0]


def records_of(pending: list[Pending]) -> list[dict[str, Any]]:
    """Records of queued requests, in order. The reply items of all of one version's requests
    are built in one pass over their outputs joined together: per request, the fixed cost of
    building them would be most of a small request's record."""
    outputs: list[list[dict[str, Any]] | None] = [None] * len(pending)
    by_model: dict[int, list[int]] = {}
    for index, (_, _, model, _, _) in enumerate(pending):
        by_model.setdefault(id(model), []).append(index)
    for indices in by_model.values():
        model = pending[indices[0]][2]
        parts = [pending[index][4] for index in indices]
        probabilities = [part.probabilities for part in parts]
        joined = ModelOutput(
            np.concatenate([part.predictions for part in parts]),
            None if probabilities[0] is None else np.concatenate(probabilities),  # type: ignore[arg-type]
        )
        items = prediction_document(model, joined)["predictions"]
        start = 0
        for index, part in zip(indices, parts, strict=True):
            outputs[index] = items[start : start + len(part)]
            start += len(part)
    return [
        {
            "request_id": request_id,
            "time": _iso_time(when),
            "model": model.name,
            "version": model.version,
            "inputs": rows,
            "outputs": items,
        }
        for (request_id, when, model, rows, _), items in zip(pending, outputs, strict=True)
    ]


def _iso_time(when: float) -> str:
    """`when` as ISO 8601 UTC with milliseconds, like the access log's times. The text of the
    second is kept from one call to the next: formatting a datetime costs more than the rest of
    a record."""
    # Microseconds rounded as datetime.fromtimestamp rounds them, then cut to milliseconds.
    fraction, whole = math.modf(when)
    microseconds = round(fraction * 1e6)
    if microseconds >= 1_000_000:
        whole, microseconds = whole + 1, microseconds - 1_000_000
    second = int(whole)
    if second != _last_second[0]:
        _last_second[:] = [
            second,
            datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        ]
    return f"{_last_second[1]}.{microseconds // 1000:03d}+00:00"


_last_second: list[Any] = [None, ""]  # (second, its text): only the writer thread formats


def dump(record: dict[str, Any]) -> bytes:
    """A record as one JSON line's bytes (a float64 matrix of rows goes in as is)."""
    return orjson.dumps(record, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)


def _plain(value: Any) -> Any:
    # What orjson leaves to `default`: arrays that are not C-contiguous, numpy scalars.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def payload_log_from(settings: Settings) -> PayloadLog | None:
    """The payload log the settings ask for, or None (rate 0: no logging, no cost)."""
    if settings.payload_log_rate <= 0:
        return None
    sink: Sink
    if settings.payload_log_url is not None:
        sink = CloudEventsSink(
            settings.payload_log_url, batch=settings.payload_log_batch, dump=dump
        )
    else:
        assert settings.payload_log_path is not None  # the settings insist on one of the two
        sink = FileSink(
            settings.payload_log_path,
            max_bytes=settings.payload_log_max_bytes,
            backups=settings.payload_log_backups,
            dump=dump,
        )
    return PayloadLog(sink, rate=settings.payload_log_rate, capacity=settings.payload_log_queue)

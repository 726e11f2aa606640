"""Adaptive micro-batching: concurrent requests to one model version share one estimator call.

A scikit-learn call has a large fixed cost (input checks, and for forests one pass per tree) and a
small cost per row: a 100-tree forest takes about as long for 64 rows as for one. So each model
version, in each worker, has one `MicroBatcher`:

- idle, a request goes straight to the estimator (no added latency, no timer); when it is the
  worker's only request in flight and calls of its size are measured cheaper than a thread
  hop, on the event loop itself;
- while a call is running, requests that arrive wait in a queue; when it ends, the queue is taken
  as the next batch (up to `max_rows` rows; a request larger than that goes on its own), after at
  most `max_wait` seconds more for stragglers, and the batch is predicted in one call in a thread;
- the output is scattered back in order. Each request's rows were validated before they queued,
  and each request's share of the output is checked on its own (a non-finite answer fails only
  the request whose row caused it); an estimator error fails only the requests of that batch.

Pure asyncio (no FastAPI). Attached from outside: `batching_hook(policy)` is one of the
registry's load hooks, and sets each loaded version's `runner`, which the data plane calls.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.metrics import SHARED_BATCHES, TURN_METRICS
from app.serving.model import (
    LoadedModel,
    ModelOutput,
    Transport,
    call_estimator,
    check_output,
    run,
)
from app.serving.offload import in_thread
from app.serving.schema import Row, Rows
from app.tracing import TRACING, CallTiming, mark_calls

# An idle batcher serving the worker's only request in flight runs the call on the event loop,
# with no thread hop, when calls of this size have been measured below INLINE_CALL_SECONDS
# (under load, calls stay in the thread, where concurrent requests batch): the hop to a thread and back costs ~180–900 µs
# for a lone request, far more than a compiled backend's single-row call (~10–60 µs), while
# scikit-learn's own single-row call (~500 µs of input checks) keeps its thread.
INLINE_MAX_ROWS = 16
INLINE_CALL_SECONDS = 0.0003


@dataclass(frozen=True)
class BatchPolicy:
    max_rows: int = 256  # rows in one estimator call (a bigger single request still goes whole)
    max_wait: float = 0.0  # seconds a batch formed under load waits for more requests
    enabled: bool = True


@dataclass
class _Waiting:
    rows: Rows
    reply: asyncio.Future[ModelOutput]
    transport: Transport
    timing: CallTiming | None = None  # traced requests: when their batch's call ran


class MicroBatcher:
    """One model version's queue in one worker process. Holds no event-loop state between
    batches, so it may be created before the worker forks and used from any loop."""

    def __init__(self, model: LoadedModel, policy: BatchPolicy) -> None:
        self.model = model
        self.policy = policy
        self._queue: deque[_Waiting] = deque()
        self._busy = False
        # Smoothed seconds of one estimator call of at most INLINE_MAX_ROWS rows (unknown
        # until the first such call has been timed).
        self.small_call_seconds = math.inf

    async def predict(
        self,
        rows: Rows,
        *,
        alone: bool = False,
        transport: Transport = "http",
        timing: CallTiming | None = None,
    ) -> ModelOutput:
        """This request's checked output. `alone`: no other request is in flight in this
        worker, so a call measured cheap may run on the event loop without holding anyone up.
        `transport`: the protocol the request came by (counted when batches mix them).
        `timing` (traced requests) learns when the call ran if the request waits for a batch."""
        if not self.policy.enabled:
            return await in_thread(run, self.model, rows)
        if self._busy:
            reply: asyncio.Future[ModelOutput] = asyncio.get_running_loop().create_future()
            self._queue.append(_Waiting(rows, reply, transport, timing))
            return await reply
        # Idle: this request runs at once, alone; whatever queues meanwhile is drained after.
        # A call measured cheaper than the hop to a thread and back runs on the event loop.
        self._busy = True
        try:
            if alone and self.runs_inline(len(rows)):
                output = self._timed_call(rows)
            else:
                output = await in_thread(self._timed_call, rows)
        finally:
            self._hand_over()
        return check_output(self.model, output)

    def runs_inline(self, rows: int) -> bool:
        return rows <= INLINE_MAX_ROWS and self.small_call_seconds < INLINE_CALL_SECONDS

    def _timed_call(self, rows: Rows) -> ModelOutput:
        started = time.perf_counter()
        output = call_estimator(self.model, rows)
        if len(rows) <= INLINE_MAX_ROWS:
            seconds = time.perf_counter() - started
            previous = self.small_call_seconds
            self.small_call_seconds = (
                seconds if previous == math.inf else 0.8 * previous + 0.2 * seconds
            )
        return output

    def _hand_over(self) -> None:
        if self._queue:
            asyncio.get_running_loop().create_task(self._drain())
        else:
            self._busy = False

    async def _drain(self) -> None:
        try:
            while self._queue:
                if self.policy.max_wait > 0 and self._queued_rows() < self.policy.max_rows:
                    await asyncio.sleep(self.policy.max_wait)
                await self._run_batch(self._take_batch())
        finally:
            self._busy = False

    def _queued_rows(self) -> int:
        return sum(len(waiting.rows) for waiting in self._queue)

    def _take_batch(self) -> list[_Waiting]:
        batch = [self._queue.popleft()]
        rows = len(batch[0].rows)
        while self._queue and rows + len(self._queue[0].rows) <= self.policy.max_rows:
            waiting = self._queue.popleft()
            batch.append(waiting)
            rows += len(waiting.rows)
        return batch

    async def _run_batch(self, batch: list[_Waiting]) -> None:
        batch = [waiting for waiting in batch if not waiting.reply.done()]  # clients gone
        if not batch:
            return
        if len(batch) > 1:
            protocols = "+".join(sorted({waiting.transport for waiting in batch}))
            TURN_METRICS.inc(
                SHARED_BATCHES.labels(self.model.name, str(self.model.version), protocols)
            )
        started = time.time_ns() if TRACING.on else 0
        try:
            output = await in_thread(
                call_estimator, self.model, _concatenate([waiting.rows for waiting in batch])
            )
        except Exception as exc:  # the estimator failed: every request of this batch gets it
            for waiting in batch:
                if not waiting.reply.done():
                    waiting.reply.set_exception(exc)
            return
        finally:
            if started:
                mark_calls([(waiting.timing, len(waiting.rows)) for waiting in batch], started)
        start = 0
        for waiting in batch:
            stop = start + len(waiting.rows)
            if not waiting.reply.done():
                try:
                    waiting.reply.set_result(check_output(self.model, output.slice(start, stop)))
                except Exception as exc:  # this request's own rows had no finite answer
                    waiting.reply.set_exception(exc)
            start = stop


def _concatenate(parts: list[Rows]) -> Rows:
    """Several requests' rows as one: a matrix when any part is one (only all-numeric models
    produce matrices, so every part converts), else one list of tuples."""
    if len(parts) == 1:
        return parts[0]
    if any(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate([np.asarray(part, dtype=np.float64) for part in parts])
    rows: list[Row] = []
    for part in parts:
        assert isinstance(part, list)
        rows.extend(part)
    return rows


def batching_hook(policy: BatchPolicy) -> Callable[[LoadedModel], None]:
    """A registry load hook giving each loaded version its own micro-batcher. Made in whichever
    process loads the model (the gunicorn master, before forking): a batcher holds no event-loop
    state between batches, so each forked worker uses its copy as its own."""

    def attach(model: LoadedModel) -> None:
        model.runner = MicroBatcher(model, policy)

    return attach

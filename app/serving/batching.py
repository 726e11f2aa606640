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

Under overload the batcher also refuses requests it cannot serve in time, expires deadlines and
drops disconnected clients' rows: app.serving.admission says how.

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
from functools import partial
from typing import NoReturn

from app.errors import ClientGone, DeadlineExceeded, Overloaded
from app.metrics import SHARED_BATCHES, TURN_METRICS
from app.serving.admission import Throughput, deadline_unreachable, queue_full
from app.serving.deadline import Deadline
from app.serving.model import (
    LoadedModel,
    ModelOutput,
    Transport,
    call_estimator,
    check_output,
    concatenate_rows,
    run,
)
from app.serving.offload import bounded, in_thread
from app.serving.schema import Rows
from app.tracing import TRACING, CallTiming, mark_calls

# An idle batcher serving the worker's only request in flight runs the call on the event loop,
# with no thread hop, when calls of this size have been measured below INLINE_CALL_SECONDS
# (under load, calls stay in the thread, where concurrent requests batch): the hop to a thread and back costs ~180–900 µs
# for a lone request, far more than a compiled backend's single-row call (~10–60 µs), while
# scikit-learn's own single-row call (~500 µs of input checks) keeps its thread.
INLINE_MAX_ROWS = 16
INLINE_CALL_SECONDS = 0.0003
_LAG_SMOOTHING = 0.2
# uvloop's timers count whole milliseconds: a request within this of its deadline when the timer
# fires is answered then, not a timer turn later.
TIMER_SLACK = 0.001


@dataclass(frozen=True)
class BatchPolicy:
    max_rows: int = 256  # rows in one estimator call (a bigger single request still goes whole)
    max_wait: float = 0.0  # seconds a batch formed under load waits for more requests
    enabled: bool = True
    max_queue_rows: int = 10_000  # rows waiting; beyond, requests are refused (429)


class _Waiting:
    """One request whose rows are queued or in the running call."""

    __slots__ = ("counted", "deadline", "gone", "reply", "rows", "since", "timing", "transport")

    def __init__(
        self,
        rows: Rows,
        reply: asyncio.Future[ModelOutput],
        deadline: Deadline | None,
        gone: Callable[[], bool] | None,
        transport: Transport,
        timing: CallTiming | None,
    ) -> None:
        self.rows = rows
        self.reply = reply
        self.deadline = deadline
        self.gone = gone
        self.transport = transport
        self.timing = timing  # traced requests: when their batch's call ran
        self.since = time.monotonic()
        self.counted = False  # its rows count in `queued_rows`


class MicroBatcher:
    """One model version's queue in one worker process. Holds no event-loop state between
    batches, so it may be created before the worker forks and used from any loop."""

    def __init__(self, model: LoadedModel, policy: BatchPolicy) -> None:
        self.model = model
        self.policy = policy
        self._where = f"Model {model.name} v{model.version}"
        self._queue: deque[_Waiting] = deque()
        self.queued_rows = 0
        self._busy = False
        self._running: list[_Waiting] = []  # the requests whose rows the running call holds
        self._call_rows = 0
        self._call_started = 0.0
        self._call_started_ns = 0  # when tracing is on: the running call's start, for its spans
        self.drain = Throughput()
        # Smoothed seconds from a request's arrival (its deadline's start: the head parsed, under
        # `modelport serve`) to its route first asking for admission: the event loop's own
        # queue, which for a cheap, batched model is most of the wait under overload.
        self.loop_lag = 0.0
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf
        # Smoothed seconds of one estimator call of at most INLINE_MAX_ROWS rows (unknown
        # until the first such call has been timed).
        self.small_call_seconds = math.inf

    # -- admission -----------------------------------------------------------------------------
    def predicted_wait(self, rows: int, now: float) -> float:
        """Seconds until `rows` more rows would be answered: the running call's rest, then the
        queue ahead and these rows, at the measured drain rate (0 when idle or unmeasured)."""
        if not self._busy:
            return 0.0
        drain = self.drain
        running = max(0.0, drain.seconds_for(self._call_rows) - (now - self._call_started))
        return running + drain.seconds_for(self.queued_rows + rows)

    def admit(self, rows: int, deadline: Deadline | None) -> None:
        """Refuse (`Overloaded`) a request of `rows` rows (0: not yet known) that would overfill
        the queue or, by the predicted wait, outlast its deadline. An idle batcher admits all."""
        if not self._busy or not self.policy.enabled:
            return
        queued = self.queued_rows
        limit = self.policy.max_queue_rows
        if queued and queued + max(rows, 1) > limit:
            drain = self.predicted_wait(0, time.monotonic())
            self._refused(queue_full(self._where, queued, limit, drain))
        if deadline is not None:
            now = time.monotonic()
            if not rows:  # first sight of this request: how long it waited for the event loop
                self.loop_lag += _LAG_SMOOTHING * (now - deadline.start - self.loop_lag)
            # Its reply will wait for the event loop too, about as long as requests now do.
            wait = self.predicted_wait(rows, now) + self.loop_lag
            if now + wait > deadline.at:
                drain = self.predicted_wait(0, now)
                self._refused(deadline_unreachable(self._where, wait, deadline.at - now, drain))

    def _refused(self, refusal: Overloaded) -> NoReturn:
        TURN_METRICS.inc(self.model.queue_metrics.refused[refusal.reason])
        raise refusal

    # -- predict -------------------------------------------------------------------------------
    async def predict(
        self,
        rows: Rows,
        *,
        alone: bool = False,
        deadline: Deadline | None = None,
        gone: Callable[[], bool] | None = None,
        transport: Transport = "http",
        timing: CallTiming | None = None,
        refusable: bool = True,
    ) -> ModelOutput:
        """This request's checked output. `alone`: no other request is in flight in this
        worker, so a call measured cheap may run on the event loop without holding anyone up.
        `deadline`: answer `DeadlineExceeded` once it passes; `gone()`: the client has left.
        `transport`: the protocol the request came by (counted when batches mix them).
        `timing` (traced requests) learns when the call ran if it ran in a thread.
        `refusable=False`: never refused (a stream's pieces, which would fail the whole stream)."""
        if not self.policy.enabled:  # no queue here: the executor's is the only one
            return await bounded(in_thread(run, self.model, rows), deadline)
        if self._busy:
            if refusable:
                self.admit(len(rows), deadline)
            return await self._queued(rows, deadline, gone, transport, timing)
        # Idle: this request runs at once, alone; whatever queues meanwhile is taken after.
        self._busy = True
        TURN_METRICS.observe(self.model.queue_metrics.wait, 0.0)
        if alone and self.runs_inline(len(rows)):
            # A call measured cheaper than the hop to a thread and back runs on the event loop.
            started = time.monotonic()
            try:
                output = self._timed_call(rows)
            finally:
                self.drain.record(len(rows), time.monotonic() - started)
                self._next_batch()
            return check_output(self.model, output)
        reply = asyncio.get_running_loop().create_future()
        waiting = _Waiting(rows, reply, deadline, gone, transport, timing)
        # Traced, it went straight to the estimator: no time in the queue.
        self._start([waiting], self._timed_call, timing.entered if timing is not None else 0)
        return await waiting.reply

    async def _queued(
        self,
        rows: Rows,
        deadline: Deadline | None,
        gone: Callable[[], bool] | None,
        transport: Transport,
        timing: CallTiming | None,
    ) -> ModelOutput:
        reply = asyncio.get_running_loop().create_future()
        waiting = _Waiting(rows, reply, deadline, gone, transport, timing)
        self._queue.append(waiting)
        waiting.counted = True
        self.queued_rows += len(rows)
        TURN_METRICS.set(self.model.queue_metrics.queue_rows, self.queued_rows)
        if deadline is not None:
            self._watch(deadline.at)
        try:
            return await waiting.reply
        except asyncio.CancelledError:  # its task was cancelled: its rows stop counting now
            self._uncount(waiting)
            raise

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

    # -- the calls -----------------------------------------------------------------------------
    def _start(
        self, batch: list[_Waiting], call: Callable[[Rows], ModelOutput], started_ns: int = 0
    ) -> None:
        """One estimator call for `batch` in a thread; `_finished` answers it and goes on. The
        requests await their own replies, not the call: one whose deadline passes is answered
        then, while the call runs on for the others. `started_ns` (traced): when the call counts
        as begun for its spans, by default now."""
        rows = concatenate_rows([waiting.rows for waiting in batch])
        if len(batch) > 1:
            protocols = "+".join(sorted({waiting.transport for waiting in batch}))
            TURN_METRICS.inc(
                SHARED_BATCHES.labels(self.model.name, str(self.model.version), protocols)
            )
        self._call_started_ns = (started_ns or time.time_ns()) if TRACING.on else 0
        self._running = batch
        self._call_rows = len(rows)
        self._call_started = time.monotonic()
        for waiting in batch:
            if waiting.deadline is not None:
                self._watch(waiting.deadline.at)
        future = asyncio.get_running_loop().run_in_executor(None, call, rows)
        future.add_done_callback(partial(self._finished, batch))

    def _finished(self, batch: list[_Waiting], future: asyncio.Future[ModelOutput]) -> None:
        self.drain.record(self._call_rows, time.monotonic() - self._call_started)
        if self._call_started_ns:
            mark_calls(
                [(waiting.timing, len(waiting.rows)) for waiting in batch], self._call_started_ns
            )
        self._running = []
        self._call_rows = 0
        if future.cancelled():  # the loop is closing: nobody is left to answer
            for waiting in batch:
                waiting.reply.cancel()
        elif (failure := future.exception()) is not None:
            # The estimator failed: every request of this batch gets its error.
            for waiting in batch:
                if not waiting.reply.done():
                    waiting.reply.set_exception(failure)
        else:
            output = future.result()
            start = 0
            for waiting in batch:
                stop = start + len(waiting.rows)
                if not waiting.reply.done():
                    share = output if len(batch) == 1 else output.slice(start, stop)
                    try:
                        waiting.reply.set_result(check_output(self.model, share))
                    except Exception as exc:  # this request's own rows had no finite answer
                        waiting.reply.set_exception(exc)
                start = stop
        self._next_batch()

    def _next_batch(self) -> None:
        """Start the next batch from the queue (after `max_wait` when it is short of a full
        batch), or go idle."""
        if self._queue and self.policy.max_wait > 0 and self.queued_rows < self.policy.max_rows:
            asyncio.get_running_loop().call_later(self.policy.max_wait, self._take_and_start)
            return
        self._take_and_start()

    def _take_and_start(self) -> None:
        batch = self._take_batch() if self._queue else []
        if batch:
            self._start(batch, partial(call_estimator, self.model))
            return
        self._busy = False  # idle: no timer outlives the requests it was for
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep, self._sweep_at = None, math.inf

    def _take_batch(self) -> list[_Waiting]:
        """The next batch, in arrival order: up to `max_rows` rows (or one larger request), with
        requests already answered skipped and those expired or disconnected dropped."""
        now = time.monotonic()
        metrics = self.model.queue_metrics
        batch: list[_Waiting] = []
        rows = 0
        queue = self._queue
        while queue:
            waiting = queue[0]
            if waiting.reply.done():  # expired by the timer, or its task was cancelled
                queue.popleft()
                self._uncount(waiting)
                continue
            size = len(waiting.rows)
            if batch and rows + size > self.policy.max_rows:
                break
            queue.popleft()
            self._uncount(waiting)
            if waiting.deadline is not None and waiting.deadline.at <= now + TIMER_SLACK:
                waiting.reply.set_exception(self._expired(waiting, now, running=False))
            elif waiting.gone is not None and waiting.gone():
                TURN_METRICS.inc(metrics.disconnected)
                waiting.reply.set_exception(
                    ClientGone(f"{self._where}: the client disconnected while its rows waited")
                )
            else:
                TURN_METRICS.observe(metrics.wait, now - waiting.since)
                batch.append(waiting)
                rows += size
        TURN_METRICS.set(metrics.queue_rows, self.queued_rows)
        return batch

    def _uncount(self, waiting: _Waiting) -> None:
        if waiting.counted:
            waiting.counted = False
            self.queued_rows -= len(waiting.rows)

    # -- deadlines -----------------------------------------------------------------------------
    def _watch(self, at: float) -> None:
        """Make sure the sweep runs by `at` (monotonic time)."""
        if at >= self._sweep_at:
            return
        loop = asyncio.get_running_loop()
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_at = at
        self._sweep = loop.call_at(loop.time() + (at - time.monotonic()), self._expire_due)

    def _expire_due(self) -> None:
        """Answer every waiting request whose deadline has passed, then re-arm for the next."""
        self._sweep, self._sweep_at = None, math.inf
        now = time.monotonic()
        soonest = math.inf
        for running, waitings in ((False, self._queue), (True, self._running)):
            for waiting in waitings:
                deadline = waiting.deadline
                if deadline is None or waiting.reply.done():
                    continue
                if deadline.at <= now + TIMER_SLACK:
                    self._uncount(waiting)
                    waiting.reply.set_exception(self._expired(waiting, now, running=running))
                elif deadline.at < soonest:
                    soonest = deadline.at
        TURN_METRICS.set(self.model.queue_metrics.queue_rows, self.queued_rows)
        if soonest < math.inf:
            self._watch(soonest)

    def _expired(self, waiting: _Waiting, now: float, *, running: bool) -> DeadlineExceeded:
        assert waiting.deadline is not None
        where = "while the estimator ran" if running else "before its rows reached the estimator"
        waited = now - waiting.deadline.start
        return DeadlineExceeded(
            f"{self._where}: the request's deadline passed after {waited:.3f} s, {where}"
        )


def batching_hook(policy: BatchPolicy) -> Callable[[LoadedModel], None]:
    """A registry load hook giving each loaded version its own micro-batcher. Made in whichever
    process loads the model (the gunicorn master, before forking): a batcher holds no event-loop
    state between batches, so each forked worker uses its copy as its own."""

    def attach(model: LoadedModel) -> None:
        model.runner = MicroBatcher(model, policy)

    return attach

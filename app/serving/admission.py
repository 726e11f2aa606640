"""Admission control's arithmetic: how fast a version's estimator drains its queue, the wait a
newcomer would have, and the refusal that says when to come back.

What the micro-batcher (app.serving.batching) does with it under overload, per
docs/api.md, "Deadlines and overload":

- admission: a request is refused at once (`Overloaded`, 429) when the queue holds
  `max_queue_rows` rows, or when its predicted completion would outlast its deadline: the wait
  for the queue ahead at the measured drain rate (below), plus the time its
  reply will wait for the event loop (as long, smoothed, as requests now wait for it before
  their route runs) — first before its body is read (`admit(0, ...)`), then with its rows;
- deadlines: rows still queued when their request's deadline passes are taken out, never reach
  the estimator, and the request is answered `DeadlineExceeded` (504) then; a request whose rows
  are in the running call is answered 504 at its deadline while the call finishes for the
  others. One timer per batcher does this, armed for the soonest deadline waiting (not one per
  request), and is dropped whenever the batcher goes idle;
- disconnects: when a batch is formed, a waiting request whose `gone()` says its client left is
  dropped (`ClientGone`) instead of predicted.

Each micro-batcher measures its own drain rate: rows answered per second
of estimator call, smoothed over recent calls (an exponentially weighted average of rows and of
seconds). Under load the batches are large and the rate is the one that empties the queue; when
idle the batches are small and the rate low, so a sudden burst is predicted slower than it will
run, and the estimate climbs as batches grow. A call's seconds are measured on the event loop,
from submitting it to resuming after it, so they include the time its thread waited for the
core and the interpreter lock: the rate is the one the queue actually sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from app.errors import Overloaded
from app.metrics import DEADLINE_EXPIRED, DISCONNECTED, QUEUE_ROWS, QUEUE_WAIT, REFUSED

QUEUE_FULL = "queue_full"
DEADLINE_UNREACHABLE = "deadline_unreachable"
REASONS = (QUEUE_FULL, DEADLINE_UNREACHABLE)

# Weight of the newest call in the averages: about the last ten calls count.
_SMOOTHING = 0.2


class Throughput:
    """Rows per second of estimator call, smoothed; unknown (no prediction) before a call."""

    __slots__ = ("_rows", "_seconds")

    def __init__(self) -> None:
        self._rows = 0.0
        self._seconds = 0.0

    def record(self, rows: int, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._seconds == 0.0:
            self._rows, self._seconds = float(rows), seconds
            return
        self._rows += _SMOOTHING * (rows - self._rows)
        self._seconds += _SMOOTHING * (seconds - self._seconds)

    @property
    def rows_per_second(self) -> float | None:
        return self._rows / self._seconds if self._seconds > 0 else None

    def seconds_for(self, rows: float) -> float:
        """Predicted seconds to drain `rows` rows (0 while nothing has been measured)."""
        if self._seconds == 0.0 or rows <= 0:
            return 0.0
        return rows * self._seconds / self._rows


@dataclass
class QueueMetrics:
    """One version's admission and deadline metrics, labelled once (labels() costs a lock and a
    key per call)."""

    model: str
    version: int
    queue_rows: Any = field(init=False)
    wait: Any = field(init=False)
    refused: dict[str, Any] = field(init=False)
    expired: Any = field(init=False)
    disconnected: Any = field(init=False)

    def __post_init__(self) -> None:
        labels = (self.model, str(self.version))
        self.queue_rows = QUEUE_ROWS.labels(*labels)
        self.wait = QUEUE_WAIT.labels(*labels)
        self.refused = {reason: REFUSED.labels(*labels, reason) for reason in REASONS}
        self.expired = DEADLINE_EXPIRED.labels(*labels)
        self.disconnected = DISCONNECTED.labels(*labels)


def retry_after(drain_seconds: float) -> int:
    """Retry-After: whole seconds until the queue ahead has drained, at least 1."""
    return max(1, math.ceil(drain_seconds))


def queue_full(where: str, queued: int, limit: int, drain_seconds: float) -> Overloaded:
    wait = retry_after(drain_seconds)
    return Overloaded(
        f"{where} is overloaded: {queued} rows are waiting (the limit is {limit}); "
        f"retry after {wait} s",
        reason=QUEUE_FULL,
        retry_after=wait,
    )


def deadline_unreachable(
    where: str, predicted: float, remaining: float, drain_seconds: float
) -> Overloaded:
    wait = retry_after(drain_seconds)
    return Overloaded(
        f"{where} cannot answer within the request's deadline: the predicted wait is "
        f"{predicted:.3f} s and {max(remaining, 0.0):.3f} s remain; retry after {wait} s",
        reason=DEADLINE_UNREACHABLE,
        retry_after=wait,
    )

"""Deadlines: the moment by which a request must be answered, whatever protocol carried it.

A surface turns its protocol's timeout into a `Deadline` (HTTP: the X-Request-Timeout header or
MODELPORT_REQUEST_TIMEOUT; gRPC: the call's deadline; the Open Inference Protocol's `timeout`
parameter tightens it once the body is decoded) and passes it to the data plane, which answers
`DeadlineExceeded` (504) once it has passed: before the estimator if the rows are still waiting,
at the deadline itself if a call holding them is still running. Times are `time.monotonic()`.
"""

from __future__ import annotations

import time

# Where a server records, in an ASGI scope, the `time.monotonic()` at which the request's head
# was parsed (app.server.worker): the deadline counts from then, not from when the event loop
# first ran the request's task, which under load may be milliseconds later.
ARRIVED = "modelport.arrived"

# A timeout longer than this is taken as this: no deadline that far out can matter, and event
# loops' timers do not all take arbitrarily distant times.
MAX_SECONDS = 86_400.0


class Deadline:
    """A request's arrival (`start`) and the time by which it must be answered (`at`)."""

    __slots__ = ("at", "start")

    def __init__(self, start: float, at: float) -> None:
        self.start = start
        self.at = at

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> Deadline:
        """`seconds` (> 0, at most MAX_SECONDS counted) from `start` (default: now)."""
        begun = time.monotonic() if start is None else start
        return cls(begun, begun + min(seconds, MAX_SECONDS))

    def remaining(self, now: float | None = None) -> float:
        return self.at - (time.monotonic() if now is None else now)

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the request arrived."""
        return (time.monotonic() if now is None else now) - self.start

    def expired(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.at

    def tightened(self, seconds: float) -> Deadline:
        """This deadline, or `seconds` after the request's arrival if that comes first."""
        at = self.start + min(seconds, MAX_SECONDS)
        return self if at >= self.at else Deadline(self.start, at)

    def __repr__(self) -> str:
        return f"Deadline(in {self.remaining():.6f} s)"


def tightened(deadline: Deadline | None, seconds: float | None) -> Deadline | None:
    """`deadline` tightened to `seconds` from arrival (from now when there is no deadline)."""
    if seconds is None:
        return deadline
    if deadline is None:
        return Deadline.after(seconds)
    return deadline.tightened(seconds)

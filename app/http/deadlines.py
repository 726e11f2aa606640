"""A request's deadline and disconnect probe, as the HTTP surfaces hand them to the data plane.

- `X-Request-Timeout: <seconds>` (a positive decimal number, e.g. `0.25` or `2`), capped by
  MODELPORT_REQUEST_TIMEOUT, which is also the deadline of a request that names none (0 in the
  setting: no default and no cap). Counted from when the server parsed the request's head
  (`ARRIVED`, set by app.server.worker), else from when the route first ran. A malformed value
  is a 400 in the surface's envelope.
- Disconnects: uvicorn marks a request's cycle `disconnected` when its connection closes; the
  cycle is the object behind the ASGI `receive` callable it hands the app. Reading that flag when
  a batch is formed costs an attribute read, where listening for `http.disconnect` would cost a
  task per request; a server (or a middleware wrapping `receive`) that exposes no such flag gets
  no probe, and its clients' rows are predicted even if they left.

The routes call these directly (no dependency solving on the hot path); they are cheap when the
header is absent: one pass over the raw header list.
"""

import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope

from app.config import Settings
from app.errors import InvalidTimeout
from app.serving.deadline import ARRIVED, MAX_SECONDS, Deadline

TIMEOUT_HEADER = "X-Request-Timeout"
_HEADER_KEY = TIMEOUT_HEADER.lower().encode()
# A decimal number, optionally with an exponent (what JSON and most HTTP clients write).
_SECONDS = re.compile(rb"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_LONGEST = 64

# OpenAPI: the header as every prediction operation documents it (added to the operation rather
# than declared as a parameter, which would take the hot-path routes off their direct handler).
TIMEOUT_PARAMETER: dict[str, Any] = {
    "name": TIMEOUT_HEADER,
    "in": "header",
    "required": False,
    "description": "Seconds this request may take, from its arrival to its reply (a positive "
    "number, e.g. 0.5), at most MODELPORT_REQUEST_TIMEOUT (also the default). Past it the "
    "answer is 504; a request that cannot be served in time is refused at once with 429 and "
    "Retry-After.",
    "schema": {"type": "number", "exclusiveMinimum": 0, "examples": [2.5]},
}


def parse_timeout(raw: bytes) -> float:
    """The header's seconds (> 0; a number too large to represent counts as infinite, which
    the cap then bounds), or `InvalidTimeout`."""
    text = raw.strip()
    if len(text) <= _LONGEST and _SECONDS.fullmatch(text):
        seconds = float(text)
        if seconds > 0:
            return seconds
    shown = text[:_LONGEST].decode("latin-1")
    raise InvalidTimeout(f"{TIMEOUT_HEADER} must be a positive number of seconds, not {shown!r}")


def request_deadline(scope: Scope, settings: Settings) -> Deadline | None:
    """The request's deadline: its X-Request-Timeout capped by MODELPORT_REQUEST_TIMEOUT, or
    that setting alone; None when neither applies."""
    cap = settings.request_timeout
    seconds = cap
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            seconds = parse_timeout(value)
            if cap > 0:
                seconds = min(seconds, cap)
            break
    if not seconds:
        return None
    start = scope.get(ARRIVED) or time.monotonic()
    return Deadline(start, start + min(seconds, MAX_SECONDS))


def disconnect_probe(receive: Receive) -> Callable[[], bool] | None:
    """A cheap "has the client gone?" for this request, where the server exposes one."""
    cycle = getattr(receive, "__self__", None)
    if cycle is None or not isinstance(getattr(cycle, "disconnected", None), bool):
        return None
    return lambda: bool(cycle.disconnected)

"""The access log, one JSON line per request or call on stdout, shared by every protocol (the HTTP
middleware in app.http.middleware.observability, the gRPC interceptor in app.grpc), and the
request ids those lines carry."""

import asyncio
import random
import re
import sys
import threading
from typing import Any, TextIO

import orjson

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(offered: str) -> str:
    """The client's request id when it looks like one, else a fresh random one."""
    if _REQUEST_ID.fullmatch(offered):
        return offered
    # Not a secret, so no system call for it: `random` is re-seeded in every forked worker.
    return f"{random.getrandbits(128):032x}"


class AccessLog:
    """The access log: one JSON line per request on stdout (`stream`, when set, for tests).

    Lines are written once per turn of the event loop, not once per request: under load a
    worker answers many requests per turn, and each write is a system call during which the GIL
    goes to any thread running a model and must be won back. Not the `logging` module: a
    LogRecord and a handler call per request cost as much as the rest of the line (~12 µs of
    ~180 µs per iris request in-process). `flush` writes what is pending at once (the app's
    shutdown calls it); lines added off an event loop are written at once.
    """

    def __init__(self) -> None:
        self.stream: TextIO | None = None
        self._pending: list[bytes] = []
        self._scheduled = False
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry)
        with self._lock:
            self._pending.append(line)
            if self._scheduled:
                return
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # not on an event loop: no turn to wait for
                pass
            else:
                self._scheduled = True
                return
        self.flush()

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            lines, self._pending = self._pending, []
        if lines:
            stream = sys.stdout if self.stream is None else self.stream
            try:
                stream.write(b"\n".join([*lines, b""]).decode())
                stream.flush()
            except (OSError, ValueError):
                pass  # stdout closed or gone: the lines are lost, never the requests


ACCESS_LOG = AccessLog()

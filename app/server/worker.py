"""The gunicorn worker: uvicorn-worker's, with limits on the request head.

gunicorn's own `limit_request_*` settings and timeouts do not reach uvicorn (uvicorn-worker does
not pass them on), and uvicorn's httptools protocol has neither size limits for a request's head
nor a deadline for receiving it: a client could send one 100 KB header, or trickle a header byte
a second and hold a connection forever. This protocol refuses oversized heads with a 400 and
closes connections whose head has not arrived within `MODELPORT_HEADER_TIMEOUT` seconds. It also
records when each request's head was parsed, where its deadline starts.
"""

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from app.config import get_settings
from app.serving.deadline import ARRIVED

MAX_REQUEST_LINE = 8190  # the same limits gunicorn applies to its own workers
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD = 8190


class HeadTooLarge(Exception):
    """Raised from a parser callback; httptools turns it into a parser error, answered 400."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = get_settings().header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        self._url_bytes = 0
        self._header_fields = 0
        self._head_pending = False  # a request has begun and its head is not complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()  # also covers a client that connects and sends nothing

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Armed only when a head is still incomplete once this chunk is parsed: the usual
        # request arrives whole in one chunk and needs no timer (one per request costs).
        if self._head_pending and self._head_deadline is None:
            self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        self._header_fields = 0
        self._head_pending = True

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > MAX_REQUEST_LINE:
            raise HeadTooLarge("request line too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_fields += 1
        if self._header_fields > MAX_HEADER_FIELDS:
            raise HeadTooLarge("too many header fields")
        if len(name) + len(value) > MAX_HEADER_FIELD:
            raise HeadTooLarge("header field too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._disarm_head_deadline()
        # The request's deadline counts from here (app.serving.deadline), not from when the
        # event loop first runs its task.
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        scope[ARRIVED] = time.monotonic()
        super().on_headers_complete()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        # Only a connection still waiting for a head is closed; a request being answered is not.
        if self.cycle is None or self.cycle.response_complete:
            if not self.transport.is_closing():
                self.transport.close()


class ModelportWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker is untyped
    CONFIG_KWARGS = {"loop": "auto", "http": GuardedHttpToolsProtocol}

"""The gunicorn worker: uvicorn-worker's, with limits on the request head.

gunicorn's own `limit_request_*` settings and timeouts do not reach uvicorn (uvicorn-worker does
not pass them on), and uvicorn's httptools protocol has neither size limits for a request's head
nor a deadline for receiving it: a client could send one 100 KB header, or trickle a header byte
a second and hold a connection forever. This protocol refuses oversized heads with a 400 and
closes connections whose head has not arrived within `MODELPORT_HEADER_TIMEOUT` seconds. It also
records when each request's head was parsed, where its deadline starts.

A retiring worker (SIGHUP's reload, which a repository load or unload also makes, or a
shutdown) stops accepting connections, and gives each connection idle between requests a short
grace (`RETIRE_GRACE`): a request the client sends on it meanwhile is answered with
`Connection: close`, where uvicorn would close the connection at once and reset a request
already on its way. Then the worker records, in the repository API's state file, that no new
request can reach it: a load or unload answers only once every retired worker has
(app.serving.master_repository), so the next request meets a worker with the change.
"""

import asyncio
import logging
import os
import socket
import sys
import time
from types import FrameType
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from app.config import get_settings, repository_state_file_of
from app.serving.deadline import ARRIVED
from app.serving.master_repository import record_stopped
from app.serving.repository_state import StateFile

MAX_REQUEST_LINE = 8190  # the same limits gunicorn applies to its own workers
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD = 8190
# Seconds a retiring worker keeps a connection idle between requests open for one more request.
RETIRE_GRACE = 1.0


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
        self.retiring = False

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
        if self.retiring:  # answered, then closed: the client's next request goes elsewhere
            self.cycle.keep_alive = False

    @property
    def idle(self) -> bool:
        """Open, and no request being answered."""
        return not self.transport.is_closing() and (
            self.cycle is None or self.cycle.response_complete
        )

    def shutdown(self) -> None:
        """The worker retires: answer whatever request comes within the grace, then close."""
        if self.retiring or self.transport.is_closing():
            return
        self.retiring = True
        if self.idle:
            self.loop.call_later(min(RETIRE_GRACE, self.timeout_keep_alive), self._retired)
        else:
            self.cycle.keep_alive = False

    def _retired(self) -> None:
        if self.idle:
            self.transport.close()

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


class RetiringServer(Server):
    """uvicorn's server, retiring gracefully and saying when no new request can reach it."""

    _loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # Stop accepting at once, not at uvicorn's next tick (up to 0.1 s later): a connection
        # accepted meanwhile would be served by a worker the reload has already replaced.
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_accepting)

    def _stop_accepting(self) -> None:
        for server in self.servers:
            server.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn's own first steps (doing them twice is harmless): stop accepting, and tell
        # every connection (GuardedHttpToolsProtocol.shutdown: idle ones get the grace).
        self._stop_accepting()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        deadline = time.monotonic() + RETIRE_GRACE + 1
        while time.monotonic() < deadline and any(
            getattr(connection, "idle", False) for connection in self.server_state.connections
        ):
            await asyncio.sleep(0.05)
        try:
            record_stopped(StateFile(repository_state_file_of(get_settings())), os.getpid())
        except OSError:
            logging.getLogger("modelport").exception("cannot record this worker's retirement")
        await super().shutdown(sockets)


class ModelportWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn-worker is untyped
    CONFIG_KWARGS = {"loop": "auto", "http": GuardedHttpToolsProtocol}

    async def _serve(self) -> None:
        # uvicorn-worker 0.4.0's own `_serve` (pinned), with the server above.
        self.config.app = self.wsgi
        server = RetiringServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

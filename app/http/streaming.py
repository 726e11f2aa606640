"""Full-duplex streams over HTTP/1.1: the request body read as it arrives while the reply is
already being written.

Starlette's `StreamingResponse` cannot serve this: under uvicorn (ASGI spec 2.3) it listens for
the client's disconnect by calling `receive` itself, which would swallow the request body the
reply is made from. Here the body is read by the stream alone; only once the whole body has
been read does a watcher take over `receive`, to notice a client that goes away while the rest
of the reply is still being computed. Either way the stream is cancelled, so work stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.errors import PayloadTooLarge


class RequestBody:
    """A request's body as it arrives, counted against an optional byte limit."""

    def __init__(self, receive: Receive, *, limit: int | None) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self._complete = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes. ClientDisconnect when the client goes away first; PayloadTooLarge
        once more than `limit` bytes have come (the rest is not read)."""
        while not self._complete.is_set():
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            data = message.get("body", b"")
            self.received += len(data)
            if self.limit is not None and self.received > self.limit:
                raise PayloadTooLarge(f"Request body is larger than {self.limit} bytes")
            if not message.get("more_body", False):
                self._complete.set()
            if data:
                yield data

    async def disconnected(self) -> None:
        """Returns once the client has gone away. Listens only after the whole body has been
        read: before that, reading it is what notices."""
        await self._complete.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass


class DuplexStreamingResponse(Response):
    """Streams `content` while `body` (what it is computed from) may still be arriving."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        body: RequestBody,
        *,
        media_type: str,
        status_code: int = 200,
    ) -> None:
        self.body_iterator = content
        self.request_body = body
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers()

    async def _stream(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    await self.request_body.disconnected()
                    group.cancel_scope.cancel()  # the client is gone: stop computing

                group.start_soon(watch)
                try:
                    await self._stream(send)
                except ClientDisconnect:
                    pass  # gone while its body was being read: nobody to answer
                finally:
                    group.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        with contextlib.suppress(Exception):
                            await self.body_iterator.aclose()  # type: ignore[attr-defined]
        except BaseExceptionGroup as raised:  # anyio groups even a single error
            if len(raised.exceptions) != 1:
                raise
            raise raised.exceptions[0] from raised.exceptions[0].__cause__

"""A full-duplex HTTP/1.1 client for the stream routes: the body is sent, chunked, while the
reply is read.

A stream's reply starts while its body is still being sent, and the server reads no more of the
body than it has room to answer; a client that sends the whole body before reading (httpx and
most clients do: encode/httpx#877) stalls once the socket buffers fill. This one writes and
reads concurrently on one asyncio connection, with h11 (a dependency of uvicorn) keeping the
HTTP/1.1 framing on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

READ_BYTES = 256 * 1024


class RemoteError(Exception):
    """The server refused the stream (its status and answer), or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool
    prefix: str  # a path the server is mounted under, e.g. behind a proxy

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise RemoteError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))

    @property
    def authority(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


async def _send(
    connection: h11.Connection, writer: asyncio.StreamWriter, body: AsyncIterator[bytes]
) -> None:
    async for block in body:
        writer.write(connection.send(h11.Data(data=block)))
        await writer.drain()
    writer.write(connection.send(h11.EndOfMessage()))
    await writer.drain()


async def post_stream(
    url: str, target: str, headers: dict[str, str], body: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """POST `body` (chunked) to `url` + `target`; the reply's bytes as they come. RemoteError
    when the server cannot be reached or answers other than 200."""
    endpoint = Endpoint.parse(url)
    try:
        reader, writer = await asyncio.open_connection(
            endpoint.host, endpoint.port, ssl=ssl.create_default_context() if endpoint.tls else None
        )
    except OSError as exc:
        raise RemoteError(f"cannot connect to {url}: {exc}") from exc
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=endpoint.prefix + target,
        headers=[
            ("Host", endpoint.authority),
            ("Transfer-Encoding", "chunked"),
            ("User-Agent", "modelport-score"),
            *headers.items(),
        ],
    )
    writer.write(connection.send(request))
    sending = asyncio.create_task(_send(connection, writer, body))
    try:
        async for data in _read(connection, reader, sending):
            yield data
    finally:
        sending.cancel()
        with contextlib.suppress(BaseException):
            await sending
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read(
    connection: h11.Connection, reader: asyncio.StreamReader, sending: asyncio.Task[None]
) -> AsyncIterator[bytes]:
    status: int | None = None
    refusal = b""
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:  # e.g. closed in the middle of the reply
            if status is None:
                raise RemoteError(f"the server closed the connection: {exc}") from exc
            return
        if event is h11.NEED_DATA:
            try:
                data = await reader.read(READ_BYTES)
            except OSError as exc:
                raise RemoteError(f"connection lost: {exc}") from exc
            if not data and sending.done() and sending.exception() is not None and status is None:
                raise RemoteError(f"the server stopped reading: {sending.exception()}")
            connection.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            if status == 200:
                yield bytes(event.data)
            else:
                refusal += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            if status != 200:
                text = refusal.decode("utf-8", "replace").strip()
                raise RemoteError(f"the server answered {status}: {text}", status)
            return

"""A streamed body cut into pieces of complete lines, for the stream codecs (CSV, NDJSON).

One row per line: a line ends at every "\\n" ("\\r\\n" too), so a quoted CSV cell cannot span
lines, and a row with an unclosed quote is one bad row rather than the rest of the body swallowed
into it. A piece is cut when enough lines have arrived (`target_bytes`, or `max_rows` lines), or
when lines are waiting and nothing more has come for `max_wait` seconds, so a slow client's rows
are answered as they come rather than when a chunk fills.

A line longer than `max_line_bytes` is not held: its bytes are dropped as they arrive and it
becomes a piece of its own marked `too_long`, answered with an error in its place. So the
memory a stream holds is bounded by the target and the line limit, whatever the body's length.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import PayloadTooLarge

# A piece's target size: large enough that per-chunk costs (a thread hop, an estimator call)
# vanish beside the rows' own, small enough that a few in flight stay a few MB.
TARGET_BYTES = 2 * 1024 * 1024
# How long complete lines wait for more before they are answered anyway.
MAX_WAIT_SECONDS = 0.05
_NEWLINE = ord("\n")
_BLANK_FIRST_BYTES = np.frombuffer(b" \t\r\n", dtype=np.uint8)

Positions = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True)
class LinePiece:
    """Complete lines of the body (the last may lack its "\\n" at the end of the body), the
    first being line `first_line`; or, when `too_long`, the one line at `first_line` that was
    longer than the limit (its bytes dropped, `data` empty)."""

    data: bytes
    first_line: int
    too_long: bool = False


@dataclass(frozen=True)
class Lines:
    """The non-blank lines of a piece: where each starts in `data`, its length without its
    line ending, its line number in the body, and whether it is over the line limit."""

    data: bytes
    starts: Positions
    lengths: Positions
    numbers: Positions
    too_long: np.ndarray[Any, np.dtype[np.bool_]]
    # Every line of `data` is non-blank and within the limit: the whole of `data` is the rows.
    whole: bool

    def __len__(self) -> int:
        return len(self.starts)

    def line(self, index: int) -> bytes:
        start = int(self.starts[index])
        return self.data[start : start + int(self.lengths[index])]


def split_lines(piece: LinePiece, max_line_bytes: int) -> Lines:
    """The non-blank lines of a piece (blank: empty, or only spaces and tabs), with vectorised
    bookkeeping: one scan for the line ends, and only lines starting with blank space looked at
    one by one."""
    data = piece.data
    text = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(text == _NEWLINE)
    if len(data) and (not len(ends) or ends[-1] != len(data) - 1):
        ends = np.append(ends, len(data))  # the body's last line, without its "\n"
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64) if len(ends) else ends
    lengths = ends - starts
    carriage = np.zeros(len(ends), dtype=bool)
    inside = lengths > 0
    carriage[inside] = text[ends[inside] - 1] == ord("\r")
    lengths = lengths - carriage
    numbers = piece.first_line + np.arange(len(starts), dtype=np.int64)
    blank = lengths == 0
    maybe = ~blank & np.isin(text[np.minimum(starts, max(len(text) - 1, 0))], _BLANK_FIRST_BYTES)
    for index in np.flatnonzero(maybe).tolist():
        start = int(starts[index])
        blank[index] = not data[start : start + int(lengths[index])].strip()
    too_long = lengths > max_line_bytes
    keep = ~blank
    whole = bool(keep.all()) and not too_long.any()
    return Lines(data, starts[keep], lengths[keep], numbers[keep], too_long[keep], whole=whole)


class LineReader:
    """Reads a body (an async iterator of byte strings) as its first line, then pieces."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        max_line_bytes: int,
        max_rows: int,
        target_bytes: int = TARGET_BYTES,
        max_wait: float = MAX_WAIT_SECONDS,
    ) -> None:
        self._body = body
        self.max_line_bytes = max_line_bytes
        self.max_rows = max(1, max_rows)
        self.target_bytes = max(1, target_bytes)
        self.max_wait = max_wait
        self._buffer = bytearray()
        self._newlines = 0  # in the buffer, kept as bytes come and go (never counted again)
        self._line = 1  # the number of the buffer's first line
        self._ended = False
        self._skipping = False  # dropping the rest of an over-long line
        self._ready: deque[LinePiece] = deque()

    async def _receive(self) -> bytes | None:
        """The body's next bytes, or None at its end."""
        async for data in self._body:
            if data:
                return data
        return None

    def _absorb(self, data: bytes) -> None:
        """Take in new bytes; an over-long line is dropped as it arrives (only its place is
        kept, as a `too_long` piece, once its end is seen)."""
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self._ready.append(LinePiece(b"", self._line, too_long=True))
            self._line += 1
            self._skipping = False
            data = data[end + 1 :]
        self._buffer += data
        self._newlines += data.count(b"\n")
        tail_start = self._buffer.rfind(b"\n") + 1
        if len(self._buffer) - tail_start > self.max_line_bytes:
            while self._newlines:  # what is complete goes first, in pieces of max_rows lines
                self._ready.append(self._take(self._piece_end(force=True)))
            self._buffer.clear()
            self._skipping = True

    def _take(self, end: int) -> LinePiece:
        with memoryview(self._buffer) as whole:  # one copy (a bytearray slice would be two)
            piece = LinePiece(whole[:end].tobytes(), self._line)
        lines = piece.data.count(b"\n")
        self._line += lines
        self._newlines -= lines
        del self._buffer[:end]  # cheap: a bytearray drops its head by moving its start
        return piece

    def _piece_end(self, *, force: bool) -> int:
        """Where the next piece ends (0: not yet): at most `max_rows` lines, and about
        `target_bytes` (more only for a line that crosses it). Looks at no more than the piece
        itself, so a large buffer is not scanned again for every piece cut from it."""
        buffer = self._buffer
        if self._newlines >= self.max_rows:
            end = _end_of_line(buffer, self.max_rows, self._newlines)
            if end <= self.target_bytes:
                return end
        if len(buffer) >= self.target_bytes:
            end = buffer.rfind(b"\n", 0, self.target_bytes) + 1
            return end or buffer.find(b"\n", self.target_bytes) + 1
        return buffer.rfind(b"\n") + 1 if force else 0

    def _cut(self, *, force: bool) -> LinePiece | None:
        """A piece of the complete lines held, when it is time for one."""
        if self._ready:
            return self._ready.popleft()
        if self._ended:
            if self._newlines:
                return self._take(self._piece_end(force=True))
            if self._buffer:  # the body's last line, without its "\n"
                return self._take(len(self._buffer))
            if self._skipping:
                self._skipping = False
                return LinePiece(b"", self._line, too_long=True)
            return None
        end = self._piece_end(force=force)
        return self._take(end) if end else None

    async def prime(self) -> None:
        """Wait for the body's first bytes (or its end): a client that waits for `100
        Continue` is asked for its body before the reply starts."""
        if not self._buffer and not self._ended:
            data = await self._receive()
            if data is None:
                self._ended = True
            else:
                self._absorb(data)

    async def first_line(self) -> bytes | None:
        """The body's first line without its line ending (None for an empty body); its number
        is 1. PayloadTooLarge when it is longer than the line limit."""
        while b"\n" not in self._buffer and not self._ended:
            data = await self._receive()
            if data is None:
                self._ended = True
            else:
                self._buffer += data
                self._newlines += data.count(b"\n")
            if len(self._buffer) > self.max_line_bytes and b"\n" not in self._buffer:
                raise PayloadTooLarge(f"Line 1 is longer than {self.max_line_bytes} bytes")
        end = self._buffer.find(b"\n")
        if end < 0:
            if not self._buffer:
                return None
            end = len(self._buffer)
        line = bytes(self._buffer[:end])
        if len(line.removesuffix(b"\r")) > self.max_line_bytes:
            raise PayloadTooLarge(f"Line 1 is longer than {self.max_line_bytes} bytes")
        self._newlines -= self._buffer.count(b"\n", 0, end + 1)
        del self._buffer[: end + 1]
        self._line = 2
        return line.removesuffix(b"\r")

    async def pieces(self) -> AsyncIterator[LinePiece]:
        """The rest of the body in pieces of complete lines, in order."""
        reading: asyncio.Task[bytes | None] | None = None
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                piece = self._cut(force=False)
                if piece is not None:
                    deadline = None
                    yield piece
                    continue
                if self._ended:
                    return
                if deadline is None and b"\n" in self._buffer:
                    deadline = loop.time() + self.max_wait
                if reading is None:
                    reading = asyncio.create_task(self._receive())
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait({reading}, timeout=timeout)
                if not done:  # lines have waited long enough: answer them
                    piece = self._cut(force=True)
                    deadline = None
                    if piece is not None:
                        yield piece
                    continue
                data = reading.result()
                reading = None
                if data is None:
                    self._ended = True
                else:
                    self._absorb(data)
        finally:
            if reading is not None:
                reading.cancel()


def _end_of_line(buffer: bytearray, lines: int, held: int) -> int:
    """The offset just past the `lines`-th "\\n" of `buffer`, which holds `held` >= `lines`.
    Looks at about twice the bytes that many lines take on average, not at the whole buffer."""
    size = min(len(buffer), max(4096, 2 * lines * len(buffer) // held))
    while True:
        window = bytes(buffer[:size])
        newlines = np.flatnonzero(np.frombuffer(window, dtype=np.uint8) == _NEWLINE)
        if len(newlines) >= lines:
            return int(newlines[lines - 1]) + 1
        size = min(len(buffer), 2 * size)

"""Where payload records go: a size-rotated JSON-lines file, or CloudEvents POSTed to a URL.

Both are called only from the payload log's writer thread, never from a request.
"""

from __future__ import annotations

import fcntl
import http.client
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

logger = logging.getLogger("modelport.payload_log")

Record = dict[str, Any]
Dump = Callable[[Record], bytes]

CLOUDEVENT_TYPE = "io.modelport.inference.payload"
SINK_TIMEOUT = 5.0  # seconds a sink's POST may take before its records count as dropped


class Sink(Protocol):
    def write(self, records: list[Record]) -> int:
        """Deliver records; answer how many were delivered (the rest count as dropped)."""
        ...

    def close(self) -> None: ...


class FileSink:
    """JSON lines appended to one file, rotated before a line would take it past `max_bytes`
    (`path` → `path.1` → ... → `path.<backups>`; the oldest is deleted).

    Every worker of a server appends to the same file. Each pass writes its lines with one
    `write` on a descriptor opened with O_APPEND, under an exclusive `flock` on `path.lock`
    that rotation takes too: lines of different workers never interleave, and no worker writes
    into a file another is renaming. A worker whose descriptor points at a rotated file (its
    inode is no longer the path's) reopens the path first."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int, dump: Dump) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.dump = dump
        self._fd: int | None = None
        self._lock_fd: int | None = None

    def write(self, records: list[Record]) -> int:
        lines = [self.dump(record) + b"\n" for record in records]
        if self._lock_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            fd = self._current()
            size = os.fstat(fd).st_size
            pending: list[bytes] = []
            held = 0
            for line in lines:
                # Rotate before the line that would take the file past its size (a line longer
                # than the limit gets a file of its own).
                if size + held + len(line) > self.max_bytes and size + held > 0:
                    _write_all(fd, b"".join(pending))
                    self._rotate()
                    fd = self._current()
                    size, held, pending = 0, 0, []
                pending.append(line)
                held += len(line)
            _write_all(fd, b"".join(pending))
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return len(records)

    def _current(self) -> int:
        """A descriptor of the file now at `path` (opened anew after a rotation)."""
        if self._fd is not None:
            try:
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def _rotate(self) -> None:
        if self.backups == 0:
            os.unlink(self.path)
            return
        prefix = f"{self.path.name}."
        numbers = sorted(
            (
                int(p.name[len(prefix) :])
                for p in self.path.parent.glob(f"{prefix}*")
                if p.name[len(prefix) :].isdigit()
            ),
            reverse=True,
        )
        for number in numbers:
            older = self.path.with_name(f"{prefix}{number}")
            if number >= self.backups:
                older.unlink(missing_ok=True)
            else:
                older.rename(self.path.with_name(f"{prefix}{number + 1}"))
        self.path.rename(self.path.with_name(f"{prefix}1"))

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class CloudEventsSink:
    """Each record as a CloudEvents 1.0 event in JSON (structured content mode), POSTed to
    `url` over one kept-alive connection: `batch` events per POST as a JSON array
    (`application/cloudevents-batch+json`, the batched mode), or with `batch` 1 one event per
    POST (`application/cloudevents+json`, which every CloudEvents receiver accepts, Knative's
    broker included). A POST that fails or answers other than 2xx drops its records."""

    def __init__(self, url: str, *, batch: int, dump: Dump) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"payload log URL must be http(s)://host[:port]/path, not {url!r}")
        self.url = url
        self.batch = batch
        self.dump = dump
        self._parts = parts
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection: http.client.HTTPConnection | None = None
        self._problem: str | None = None

    def write(self, records: list[Record]) -> int:
        delivered = 0
        for start in range(0, len(records), self.batch):
            chunk = records[start : start + self.batch]
            events = [self._event(record) for record in chunk]
            if self.batch == 1:
                body, media = events[0], "application/cloudevents+json"
            else:
                body, media = b"[" + b",".join(events) + b"]", "application/cloudevents-batch+json"
            if self._post(body, media):
                delivered += len(chunk)
        return delivered

    def _event(self, record: Record) -> bytes:
        event = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": f"/models/{record['model']}/versions/{record['version']}",
            "type": CLOUDEVENT_TYPE,
            "time": record["time"],
            "datacontenttype": "application/json",
            "data": record,
        }
        return self.dump(event)

    def _post(self, body: bytes, media: str) -> bool:
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more, anew
            connection = self._connect()
            try:
                connection.request("POST", self._target, body=body, headers={"Content-Type": media})
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2:
                    self._report(f"{type(exc).__name__}: {exc}")
                    return False
                continue
            if 200 <= response.status < 300:
                self._report(None)
                return True
            self._report(f"HTTP {response.status}")
            return False
        return False  # pragma: no cover - the loop always returns

    def _report(self, problem: str | None) -> None:
        """Log when the sink starts failing and when it recovers (not at every POST)."""
        if problem is not None and self._problem is None:
            logger.warning("payload log sink %s failing (records dropped): %s", self.url, problem)
        elif problem is None and self._problem is not None:
            logger.warning("payload log sink %s accepting records again", self.url)
        self._problem = problem

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            parts = self._parts
            kind = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            self._connection = kind(parts.hostname or "", parts.port, timeout=SINK_TIMEOUT)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

"""Where `modelport score` writes a stream's reply: OUT gets every row's record, as the server
writes it; the summary (and a record of what ended a stream early) are reported, not written,
so OUT holds exactly one record per input row answered, in order, and `--resume` can count
them. A resumed run's reply drops its CSV header and has its line numbers moved to the file's.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from app.codecs.streams import Format

_SCAN_BYTES = 1024 * 1024


class OutputError(Exception):
    """OUT cannot be resumed (it holds another reply's columns)."""


@dataclass(frozen=True)
class ResumePoint:
    records: int  # complete records in OUT: the input rows already answered
    header: bytes | None  # OUT's CSV header line, with its line ending


def resume_point(path: Path, fmt: Format) -> ResumePoint:
    """The records OUT already holds. A last line without its line ending (a run killed while
    writing it) is cut off, so the resumed run writes that row again, once."""
    complete_end = newlines = 0
    header: bytes | None = None
    with path.open("r+b") as file:
        offset = 0
        while block := file.read(_SCAN_BYTES):
            count = block.count(b"\n")
            if count:
                newlines += count
                complete_end = offset + block.rfind(b"\n") + 1
            offset += len(block)
        file.truncate(complete_end)
        if fmt == "csv" and newlines:
            file.seek(0)
            header = file.readline()
    records = newlines - (1 if header is not None else 0)
    return ResumePoint(records, header)


def _lines(data: bytes) -> list[bytes]:
    """`data` split after each "\\n" (only: a CSV cell may hold a lone "\\r")."""
    parts = [part + b"\n" for part in data.split(b"\n")]
    parts[-1] = parts[-1][:-1]
    return parts if parts[-1] else parts[:-1]


def _csv_cells(line: bytes) -> list[str]:
    return next(csv.reader([line.decode("utf-8", "replace").rstrip("\r\n")]), [])


def _csv_line(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().encode()


def _record(line: bytes, fmt: Format) -> dict[str, Any] | None:
    """The JSON of a record that is not a prediction (a bad row, a failure, the summary)."""
    try:
        if fmt == "ndjson":
            found = orjson.loads(line)
        else:
            cells = _csv_cells(line)
            found = json.loads(cells[-1]) if cells and cells[-1].startswith("{") else None
    except (ValueError, IndexError):
        return None
    return found if isinstance(found, dict) else None


class ReplyWriter:
    """Takes a reply's bytes as they come. Holds back its last two lines, which may be the
    failure and summary records, until the reply ends."""

    def __init__(
        self,
        sink: BinaryIO,
        fmt: Format,
        *,
        header: bytes | None,
        line_offset: Callable[[], int],
    ) -> None:
        """`header`: OUT's CSV header when resuming (the reply's must match, and is dropped)."""
        self.sink = sink
        self.fmt = fmt
        self.resumed_header = header
        self.line_offset = line_offset
        self.records = 0
        self._pending = b""
        self._header_done = fmt != "csv"

    def feed(self, data: bytes) -> None:
        self._pending += data
        if not self._header_done:
            end = self._pending.find(b"\n")
            if end < 0:
                return
            head, self._pending = self._pending[: end + 1], self._pending[end + 1 :]
            self._header_done = True
            if self.resumed_header is None:
                self.sink.write(head)
            elif head != self.resumed_header:
                raise OutputError(
                    "the output file's header differs from this reply's: "
                    f"{self.resumed_header!r} != {head!r}"
                )
        last = self._pending.rfind(b"\n")
        before = self._pending.rfind(b"\n", 0, last) if last > 0 else -1
        if before < 0:
            return
        cut = self._pending.rfind(b"\n", 0, before) + 1
        if cut:
            self._write(self._pending[:cut])
            self._pending = self._pending[cut:]

    def _write(self, block: bytes) -> None:
        offset = self.line_offset()
        if offset and self._has_error_records(block):
            block = b"".join(self._moved(line, offset) for line in _lines(block))
        self.records += block.count(b"\n")
        self.sink.write(block)
        self.sink.flush()

    def _has_error_records(self, block: bytes) -> bool:
        return (b'{"line":' if self.fmt == "ndjson" else b'"{""line"":') in block

    def _moved(self, line: bytes, offset: int) -> bytes:
        """A bad row's record with its line number counted from the file's start."""
        record = _record(line, self.fmt)
        if record is None or not isinstance(record.get("line"), int):
            return line
        record["line"] += offset
        if self.fmt == "ndjson":
            return orjson.dumps(record) + b"\n"
        cells = _csv_cells(line)
        return _csv_line([*cells[:-1], orjson.dumps(record).decode()])

    def close(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Write what is left; the summary and the failure record, when the reply had them.
        A last line cut in the middle is not written (the answer was cut there)."""
        lines = _lines(self._pending)
        if lines and not lines[-1].endswith(b"\n"):
            lines.pop()
        summary = failure = None
        if lines:
            found = _record(lines[-1], self.fmt)
            if found is not None and isinstance(found.get("summary"), dict):
                summary = found["summary"]
                lines.pop()
        if summary is not None and lines:
            found = _record(lines[-1], self.fmt)
            if found is not None and "line" in found and found["line"] is None:
                failure = found.get("error", found)
                lines.pop()
        if lines:
            self._write(b"".join(lines))
        self._pending = b""
        return summary, failure

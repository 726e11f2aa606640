"""The file `modelport score` reads, as the body of a stream: CSV and NDJSON as they are,
Parquet as CSV (read a row group batch at a time, written by pyarrow, whose floats read back
exactly). A resumed run starts after the rows already answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.codecs.streams import Format

BLOCK_BYTES = 1024 * 1024
PARQUET_BATCH_ROWS = 8192
SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class SourceError(Exception):
    """The input cannot be read as asked."""


@dataclass
class Source:
    """A body in blocks. `wire` is what it is sent as; `line_offset` the lines of the file
    left out ahead of the body's (so a resumed run's line numbers can be made the file's);
    `total` and `done` what the progress bar shows (bytes of the file, rows for Parquet)."""

    path: Path
    kind: str  # "csv", "ndjson" or "parquet"
    wire: Format
    skip_rows: int = 0
    line_offset: int = 0
    total: int = 0
    done: int = 0
    unit: str = "bytes"

    def blocks(self) -> Iterator[bytes]:
        if self.kind == "parquet":
            yield from self._parquet_blocks()
            return
        with self.path.open("rb") as file:
            self.total = self.path.stat().st_size
            head = file.readline() if self.kind == "csv" else b""
            if head and not head.endswith(b"\n"):
                head += b"\n"
            lines = _skip_rows(file, self.skip_rows)
            self.line_offset = lines
            self.done = file.tell()
            if head:
                yield head
            while block := file.read(BLOCK_BYTES):
                self.done += len(block)
                yield block

    def _parquet_blocks(self) -> Iterator[bytes]:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.path}: not a Parquet file: {exc}") from exc
        self.unit = "rows"
        self.total = parquet.metadata.num_rows
        self.done = self.skip_rows
        self.line_offset = self.skip_rows
        to_skip = self.skip_rows
        header = True
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            if to_skip >= batch.num_rows:
                to_skip -= batch.num_rows
                continue
            batch = batch.slice(to_skip)
            to_skip = 0
            sink = pa.BufferOutputStream()
            options = pa_csv.WriteOptions(include_header=header, quoting_style="needed")
            pa_csv.write_csv(pa.Table.from_batches([batch]), sink, options)
            header = False
            self.done += batch.num_rows
            yield sink.getvalue().to_pybytes()
        if header:  # nothing left to send but the header
            empty = parquet.schema_arrow.empty_table()
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(empty, sink, pa_csv.WriteOptions(quoting_style="needed"))
            yield sink.getvalue().to_pybytes()


def _skip_rows(file: BinaryIO, rows: int) -> int:
    """Read past `rows` rows (non-blank lines, as the server counts them); the lines read."""
    lines = skipped = 0
    while skipped < rows:
        line = file.readline()
        if not line:
            break
        lines += 1
        if line.strip():
            skipped += 1
    return lines


def open_source(path: Path, *, kind: str | None, skip_rows: int) -> Source:
    """The input file; its kind from `kind`, else from its suffix."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    found = kind or SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise SourceError(
            f"{path}: cannot tell its format from its name: use --input-format csv, ndjson or parquet"
        )
    wire: Format = "ndjson" if found == "ndjson" else "csv"
    return Source(path, found, wire, skip_rows=skip_rows)

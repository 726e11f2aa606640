"""`python -m benchmarks.csv_readers`: the CSV readers that could turn rows of numbers into the
float64 matrix a model takes, timed side by side on one core (issue 21, item 5).

Two inputs, as modelport reads them: the 10,000-row breast-cancer upload of `make bench`'s bulk
section (a header, then 30 numbers a row as Python's `repr` writes them, ~2 MB) and one chunk of
a stream (the data lines of one ~2 MiB piece, as `benchmarks.streaming` sends them). Each reader
must give the same matrix, bit for bit, as Python's `float()`; rounds are interleaved and the
median (min–max) is reported. pyarrow reads with its thread pool off: a worker is one core.
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sklearn.datasets import load_breast_cancer

from app import native
from app.codecs.tabular import read_float_lines

Matrix = np.ndarray[Any, np.dtype[np.float64]]
Reader = Callable[[bytes, int], Matrix | None]


def upload_text() -> bytes:
    """The bulk section's 10,000-row CSV (header and `repr` floats)."""
    data = load_breast_cancer()
    rows = data.data[np.random.default_rng(0).integers(0, len(data.data), 10_000)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f"f{i}" for i in range(rows.shape[1])])
    writer.writerows(rows.tolist())
    return buffer.getvalue().encode()


def chunk_text() -> bytes:
    """One stream chunk: ~2 MiB of data lines, numbers as orjson writes them."""
    data = load_breast_cancer().data
    rng = np.random.default_rng(21)
    rows = data[rng.integers(0, len(data), 7_000)]
    rows = np.round(rows * rng.uniform(0.99, 1.01, size=rows.shape), 6)
    text = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2]
    return text.replace(b"],[", b"\n") + b"\n"


def _header_end(data: bytes, has_header: bool) -> int:
    return data.index(b"\n") + 1 if has_header else 0


def compiled(data: bytes, start: int) -> Matrix | None:
    hot_path = native.HOT_PATH
    return None if hot_path is None else hot_path.read_float_rows(data, start, 30)


def simdjson_lines(data: bytes, start: int) -> Matrix | None:
    return read_float_lines(data[start:], 30)


def _options(start: int) -> pa_csv.ReadOptions:
    names = [f"f{i}" for i in range(30)]
    return pa_csv.ReadOptions(use_threads=False, column_names=names, skip_rows=1 if start else 0)


def _matrix(table: pa.Table) -> Matrix:
    return np.column_stack([column.to_numpy() for column in table.columns])


def arrow_whole(data: bytes, start: int) -> Matrix:
    return _matrix(pa_csv.read_csv(pa.py_buffer(data), read_options=_options(start)))


def arrow_streaming(data: bytes, start: int) -> Matrix:
    reader = pa_csv.open_csv(pa.py_buffer(data), read_options=_options(start))
    return _matrix(pa.Table.from_batches(list(reader), schema=reader.schema))


def pandas_c(data: bytes, start: int) -> Matrix:
    frame = pd.read_csv(io.BytesIO(data[start:]), header=None, dtype=np.float64, engine="c")
    return frame.to_numpy(dtype=np.float64)


READERS: dict[str, Reader] = {
    "compiled reader (app/native)": compiled,
    "pyarrow.csv.read_csv (whole file)": arrow_whole,
    "pyarrow.csv.open_csv (streaming)": arrow_streaming,
    "simdjson lines (the fallback)": simdjson_lines,
    "pandas C parser": pandas_c,
}


def _exact(data: bytes, start: int) -> Matrix:
    lines = data[start:].decode().splitlines()
    return np.array([[float(cell) for cell in line.split(",")] for line in lines])


def measure(rounds: int) -> list[tuple[str, str, list[float], bool]]:
    inputs = {"10,000-row upload": (upload_text(), True), "one stream chunk": (chunk_text(), False)}
    found = []
    for label, (data, has_header) in inputs.items():
        start = _header_end(data, has_header)
        truth = _exact(data, start).view(np.int64)
        timings: dict[str, list[float]] = {name: [] for name in READERS}
        exact: dict[str, bool] = {}
        for _ in range(rounds):
            for name, reader in READERS.items():
                started = time.perf_counter()
                matrix = reader(data, start)
                timings[name].append((time.perf_counter() - started) * 1000)
                exact[name] = matrix is not None and np.array_equal(matrix.view(np.int64), truth)
        found += [
            (f"{label} ({len(data) / 1e6:.1f} MB)", name, timings[name], exact[name])
            for name in READERS
        ]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.csv_readers")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    if native.HOT_PATH is None:
        print("the compiled reader is not built: python -m app.native.build", file=sys.stderr)  # noqa: T201
        return 2
    lines = ["| input | reader | ms, median (min–max) | bit-exact |", "|---|---|---|---|"]
    for label, name, samples, exact in measure(args.rounds):
        spread = f"{statistics.median(samples):.2f} ({min(samples):.2f}–{max(samples):.2f})"
        lines.append(f"| {label} | {name} | {spread} | {'yes' if exact else 'no'} |")
    print("\n".join(lines))  # noqa: T201 - the table is the output
    return 0


if __name__ == "__main__":
    sys.exit(main())

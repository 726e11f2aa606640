"""Issue 21's bulk scenario: millions of rows streamed over HTTP to the breast-cancer forest in
one request (`POST .../predict/stream`, CSV in and out), to a real server pinned to one core.

Rows are made on the fly by the client: a few distinct chunks of real breast-cancer rows
(resampled, each cell nudged by up to ±1%) are sent again and again in a seeded random order, so
no file is written and the client holds a few MB whatever the count. Every answer is checked:
the reply must be, byte for byte, the header, then for each chunk sent its rows echoed with
scikit-learn's own label and probabilities for them (computed in-process, once per distinct
chunk), in the order sent, then a summary counting every row, so a lost, repeated or reordered
row fails the run. The worker's RSS is read from /proc while the stream runs. Throughput is set
beside in-process scikit-learn `predict` on the same rows, called on chunks of the size the
server cuts the stream into, timed on the client's core.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
from sklearn.datasets import load_breast_cancer

from app.bulk.remote import post_stream
from app.codecs.stream_lines import TARGET_BYTES
from benchmarks.servers import (
    MODELPORT,
    RunningServer,
    start_server,
    stop_server,
    wait_idle,
    wait_ready,
)
from benchmarks.stats import TargetCheck

logger = logging.getLogger("benchmarks")

MODEL = "breast-cancer"
PATH = f"/models/{MODEL}/versions/1/predict/stream"
FULL_ROWS = 5_000_000
QUICK_ROWS = 50_000
CHUNK_ROWS = 10_000  # rows per distinct chunk the client cycles through
DISTINCT_CHUNKS = 8
RSS_GROWTH_TARGET_MB = 150.0
THROUGHPUT_TARGET = 0.7
ISSUE = "issue 21"


@dataclass(frozen=True)
class StreamResult:
    model: str
    rows: int
    rows_answered: int
    in_order: bool  # the reply was byte for byte the expected one
    problem: str | None  # the first difference, when it was not
    seconds: float
    rows_per_s: float
    predict_rows_per_s: float  # in-process scikit-learn predict on the server's chunk size
    read_and_predict_rows_per_s: float  # the same, parsing each chunk's CSV text first
    server_chunk_rows: int
    ratio_to_predict: float
    rss_before_mb: float
    rss_max_mb: float
    rss_after_mb: float
    rss_samples: int
    upload_mb: float
    reply_mb: float
    targets: list[TargetCheck]


def _chunks(names: list[str], distinct: int) -> tuple[list[np.ndarray[Any, Any]], list[bytes]]:
    """The distinct chunks: rows in the card's feature order, and their CSV data lines."""
    data = load_breast_cancer().data
    rng = np.random.default_rng(21)
    matrices, texts = [], []
    for _ in range(distinct):
        rows = data[rng.integers(0, len(data), CHUNK_ROWS)]
        rows = np.round(rows * rng.uniform(0.99, 1.01, size=rows.shape), 6)
        matrices.append(rows)
        # orjson writes each float as the shortest text that reads back exactly.
        text = orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2]
        texts.append(text.replace(b"],[", b"\n") + b"\n")
    assert len(names) == data.shape[1]
    return matrices, texts


def _expected_reply(
    estimator: Any, rows: np.ndarray[Any, Any], text: bytes, classes: list[str]
) -> bytes:
    """What the route answers for these rows, written here independently: each line as sent,
    scikit-learn's label and each class's probability as `repr` writes it, an empty error."""
    probabilities = estimator.predict_proba(rows)
    labels = np.asarray(estimator.classes_)[np.argmax(probabilities, axis=1)]
    order = [list(map(str, estimator.classes_)).index(label) for label in classes]
    lines = text.decode().splitlines()
    return "".join(
        f"{line},{label},{','.join(repr(row[index]) for index in order)},\r\n"
        for line, label, row in zip(lines, labels.tolist(), probabilities.tolist(), strict=True)
    ).encode()


class _Checker:
    """Compares the reply, as it arrives, with what it must be (without holding it)."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.part = 0
        self.offset = 0
        self.tail = b""  # what follows the expected rows: the summary
        self.problem: str | None = None
        self.received = 0

    def feed(self, data: bytes) -> None:
        # Slices of bytes compare with one memcmp (a memoryview's compare goes byte by byte).
        position = 0
        while position < len(data) and self.problem is None and self.part < len(self.parts):
            expected = self.parts[self.part]
            size = min(len(data) - position, len(expected) - self.offset)
            if data[position : position + size] != expected[self.offset : self.offset + size]:
                where = self.received + position
                self.problem = f"reply differs from byte {where} (expected part {self.part})"
                break
            position += size
            self.offset += size
            if self.offset == len(expected):
                self.part, self.offset = self.part + 1, 0
        if self.part == len(self.parts):
            self.tail += data[position:]
        self.received += len(data)

    def summary(self) -> dict[str, Any]:
        if self.problem is not None or self.part < len(self.parts):
            return {}
        cells = next(csv.reader(io.StringIO(self.tail.decode())), [])
        found: dict[str, Any] = json.loads(cells[-1]).get("summary", {}) if cells else {}
        return found


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.samples.append(_rss_mb(self.pid))
            except OSError:
                return
            self.stop.wait(self.every_s)


def _in_process_rates(
    estimator: Any, matrices: list[np.ndarray[Any, Any]], texts: list[bytes], chunk_rows: int
) -> tuple[float, float]:
    """Rows per second of `estimator.predict` on the same rows in chunks of `chunk_rows`:
    alone, and after reading each chunk's CSV text (pyarrow's reader)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rows = np.concatenate(matrices)
    text = b"".join(texts)
    lines = text.splitlines(keepends=True)
    names = [f"c{i}" for i in range(rows.shape[1])]
    options = pa_csv.ReadOptions(column_names=names)
    best_predict = best_both = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for start in range(0, len(rows), chunk_rows):
            estimator.predict(rows[start : start + chunk_rows])
        best_predict = min(best_predict, time.perf_counter() - started)
        started = time.perf_counter()
        for start in range(0, len(rows), chunk_rows):
            chunk = b"".join(lines[start : start + chunk_rows])
            table = pa_csv.read_csv(pa.py_buffer(chunk), read_options=options)
            estimator.predict(np.column_stack([table[name].to_numpy() for name in names]))
        best_both = min(best_both, time.perf_counter() - started)
    return len(rows) / best_predict, len(rows) / best_both


async def _stream(
    url: str, header: bytes, texts: list[bytes], order: list[int], checker: _Checker
) -> int:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield header
        for index in order:
            sent += len(texts[index])
            yield texts[index]

    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    async for data in post_stream(url, PATH, headers, body()):
        checker.feed(data)
    return sent


def run_stream(
    store: Path,
    *,
    rows: int,
    work_dir: Path,
    server_cpu: int,
    server: RunningServer | None = None,
) -> StreamResult:
    """Stream `rows` rows to `server` (modelport with one worker, serving `store`), or to a
    server of its own started on `server_cpu`."""
    card = json.loads((store / MODEL / "1" / "card.json").read_text())
    names = [feature["name"] for feature in card["features"]]
    classes = [str(label) for label in card["target"]["classes"]]
    estimator = joblib.load(store / MODEL / "1" / "model.joblib")
    count = max(1, rows // CHUNK_ROWS)
    distinct = min(DISTINCT_CHUNKS, count)
    matrices, texts = _chunks(names, distinct)
    header = (",".join(names) + "\n").encode()
    order = np.random.default_rng(7).integers(0, distinct, count).tolist()
    replies = [
        _expected_reply(estimator, m, t, classes) for m, t in zip(matrices, texts, strict=True)
    ]
    reply_header = ",".join([*names, "prediction", *(f"probability_{c}" for c in classes), "error"])
    checker = _Checker([reply_header.encode() + b"\r\n", *(replies[index] for index in order)])
    bytes_per_row = sum(map(len, texts)) / (CHUNK_ROWS * distinct)
    # The server's pieces: about TARGET_BYTES of lines, at most MODELPORT_MAX_ROWS (10,000).
    server_chunk_rows = min(10_000, int(TARGET_BYTES // bytes_per_row))
    predict_rate, both_rate = _in_process_rates(estimator, matrices, texts, server_chunk_rows)
    own = server is None
    if server is None:
        server = start_server(MODELPORT, store=store, cpu=server_cpu, log_dir=work_dir)
    try:
        example = {"instances": [matrices[0][0].tolist()]}
        wait_ready(server, f"/models/{MODEL}/versions/1/predict", json.dumps(example).encode())
        wait_idle([server])
        worker = server.worker_pids()[0]
        rss_before = _rss_mb(worker)
        sampler = _RssSampler(worker)
        sampler.start()
        logger.info("streaming %d rows to %s (worker %d)", count * CHUNK_ROWS, MODEL, worker)
        started = time.perf_counter()
        sent = asyncio.run(_stream(server.url, header, texts, order, checker))
        seconds = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        rss_after = _rss_mb(worker)
    finally:
        if own:
            stop_server(server)
    summary = checker.summary()
    answered = int(summary.get("rows", 0))
    total = count * CHUNK_ROWS
    in_order = checker.problem is None and answered == total and summary.get("complete") is True
    rate = total / seconds
    rss_max = max(sampler.samples or [rss_after])
    ratio = rate / predict_rate
    targets = [
        TargetCheck(
            f"worker RSS grows ≤ {RSS_GROWTH_TARGET_MB:.0f} MB", rss_max - rss_before,
            RSS_GROWTH_TARGET_MB, "at_most", "MB",
        ),
        TargetCheck(
            f"≥ {THROUGHPUT_TARGET}× in-process predict", ratio, THROUGHPUT_TARGET, "at_least"
        ),
    ]  # fmt: skip
    logger.info(
        "stream: %d rows in %.1f s (%.0f rows/s, %.2f× predict), RSS %.0f -> max %.0f MB, %s",
        answered, seconds, rate, ratio, rss_before, rss_max,
        "in order" if in_order else f"NOT in order: {checker.problem or summary}",
    )  # fmt: skip
    return StreamResult(
        model=MODEL,
        rows=total,
        rows_answered=answered,
        in_order=in_order,
        problem=checker.problem,
        seconds=seconds,
        rows_per_s=rate,
        predict_rows_per_s=predict_rate,
        read_and_predict_rows_per_s=both_rate,
        server_chunk_rows=server_chunk_rows,
        ratio_to_predict=ratio,
        rss_before_mb=rss_before,
        rss_max_mb=rss_max,
        rss_after_mb=rss_after,
        rss_samples=len(sampler.samples),
        upload_mb=(sent + len(header)) / 1e6,
        reply_mb=checker.received / 1e6,
        targets=targets,
    )


def stream_table(result: StreamResult) -> list[str]:
    """The section of the markdown report."""
    checks = "; ".join(check.render() for check in result.targets)
    verdict = "every row answered, in order ✓" if result.in_order else f"✗ {result.problem}"
    return [
        f"### {result.rows:,} rows streamed to {result.model} in one request ({ISSUE})",
        "",
        f"`POST {PATH}`, CSV in and out, chunked upload read while the reply streams; "
        f"{result.upload_mb:,.0f} MB up, {result.reply_mb:,.0f} MB back; the server cuts the "
        f"stream into chunks of ~{result.server_chunk_rows:,} rows.",
        "",
        "| what | rows/s | × in-process predict |",
        "|---|---|---|",
        f"| in-process `predict`, chunks of {result.server_chunk_rows:,} rows | "
        f"{result.predict_rows_per_s:,.0f} | 1.00× |",
        f"| in-process pyarrow CSV read + `predict`, same chunks | "
        f"{result.read_and_predict_rows_per_s:,.0f} | "
        f"{result.read_and_predict_rows_per_s / result.predict_rows_per_s:.2f}× |",
        f"| **modelport stream over HTTP** ({result.seconds:.1f} s) | {result.rows_per_s:,.0f} | "
        f"{result.ratio_to_predict:.2f}× |",
        "",
        f"Worker RSS: {result.rss_before_mb:.0f} MB before, {result.rss_max_mb:.0f} MB at most "
        f"({result.rss_samples} samples), {result.rss_after_mb:.0f} MB after. {verdict} "
        f"({result.rows_answered:,} rows in the summary).",
        "",
        f"Targets ({ISSUE}): {checks}.",
        "",
    ]

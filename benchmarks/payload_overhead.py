"""`python -m benchmarks.payload_overhead`: what payload logging costs a request, in-process.

The data plane's share of one iris request (decode, validate, predict, encode: `DataPlane.infer`,
no HTTP), timed as process CPU time (every thread's, so the payload log's writer thread counts)
per request over many requests, in interleaved rounds:

  * rate 0 (the default): no payload log exists; the request path pays one `is None` test,
    timed on its own as well;
  * rate 1.0: every request's record queued, formatted and appended to a JSON-lines file.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import orjson

from app.codecs.json_rows import json_reply, json_request
from app.config import Settings
from app.main import create_app
from app.serving.dataplane import DataPlane
from app.serving.payload_log import payload_log_from
from app.training.examples import train_examples

BODY = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})


def cpu_per_request(dataplane: DataPlane, requests: int) -> float:
    """Process CPU microseconds per `DataPlane.infer` call (iris v1, one row)."""
    model = dataplane.model("iris", 1)

    async def many() -> None:
        for _ in range(requests):
            await dataplane.infer(model, json_request(BODY), json_reply, work=len(BODY))

    started = time.process_time()
    asyncio.run(many())
    if dataplane.payload_log is not None:
        dataplane.payload_log.close()  # the writer's work on these requests counts too
    return (time.process_time() - started) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.payload_overhead")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="modelport-payload-"))
    store = work / "models"
    train_examples(store, only=["iris"])
    # The app's own data plane: its registry's load hooks attach the backend and the batcher.
    off: DataPlane = create_app(Settings(model_dir=store, access_log=False)).state.dataplane
    off.registry.load()
    log = work / "payloads.jsonl"
    on = DataPlane(
        off.registry,
        payload_log=payload_log_from(
            Settings(model_dir=store, payload_log_rate=1.0, payload_log_path=log)
        ),
    )
    assert off.payload_log is None and on.payload_log is not None
    cpu_per_request(off, 1000)  # warm-up
    cpu_per_request(on, 1000)
    without, with_log = [], []
    for _ in range(args.rounds):
        without.append(cpu_per_request(off, args.requests))
        with_log.append(cpu_per_request(on, args.requests))
    test_ns = (
        min(timeit.repeat("d.payload_log is not None", globals={"d": off}, number=10**6, repeat=5))
        * 1e3
    )
    off_us, on_us = statistics.median(without), statistics.median(with_log)
    lines = len(log.read_bytes().splitlines())
    sys.stdout.write(
        f"DataPlane.infer, iris v1, one row; process CPU per request, median of {args.rounds} "
        f"rounds of {args.requests:,}:\n"
        f"  rate 0 (no payload log): {off_us:.1f} µs (rounds {min(without):.1f}–{max(without):.1f})\n"
        f"  rate 1.0 (JSON lines):   {on_us:.1f} µs (rounds {min(with_log):.1f}–{max(with_log):.1f}), "
        f"+{100 * (on_us / off_us - 1):.1f}%; {lines:,} records written\n"
        f"  the rate-0 path's one test: {test_ns:.1f} ns ({100 * test_ns / 1000 / off_us:.3f}% of a request)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""wrk, driven through post.lua: one run against one URL, parsed into a `LoadResult`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("post.lua")
_RESULT_MARKER = "BENCH_RESULT "


class LoadError(RuntimeError):
    """wrk could not run or printed no result."""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int  # connect, read and write errors and timeouts


def wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "absent"
    # `wrk -v` prints its version then its usage, and exits 1.
    probe = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first_line = (probe.stdout or probe.stderr).splitlines()[0]
    return first_line.split(" [", 1)[0].strip()  # "wrk debian/4.1.0-3+b2", without the copyright


def run_wrk(
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: int,
    cpu: int,
    cookie: str | None = None,
) -> LoadResult:
    """One wrk run with one thread pinned to `cpu`, POSTing `body_file` to `url`."""
    argv = [
        "taskset", "-c", str(cpu),
        "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
        # Long enough that a slow configuration's queue shows up as latency, not as timeouts.
        "--timeout", "10s",
        "--latency", "-s", str(LUA_SCRIPT), url,
    ]  # fmt: skip
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_COOKIE": cookie or ""}
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"wrk did not finish: {' '.join(argv)}") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        raise LoadError(
            f"wrk exited {done.returncode} without a result ({' '.join(argv)}):\n"
            f"{done.stdout}\n{done.stderr}"
        )
    raw = json.loads(lines[-1].removeprefix(_RESULT_MARKER))
    duration = raw["duration_us"] / 1e6
    return LoadResult(
        requests=raw["requests"],
        duration_s=duration,
        requests_per_s=raw["requests"] / duration if duration > 0 else 0.0,
        p50_ms=raw["latency_p50_us"] / 1000,
        p90_ms=raw["latency_p90_us"] / 1000,
        p99_ms=raw["latency_p99_us"] / 1000,
        mean_ms=raw["latency_mean_us"] / 1000,
        max_ms=raw["latency_max_us"] / 1000,
        non_2xx=raw["status_errors"],
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
    )

"""Overload (issue 18): the forest on one pinned worker, driven past what it can take.

1. Find the saturating concurrency: wrk at 1, 2, 4, ... 256 connections (single-row requests to
   the breast-cancer forest); the saturating concurrency C is the smallest that reaches KNEE of
   the highest throughput seen, where adding clients stops adding throughput. Every step is run:
   throughput is not monotonic at the low end (one client's call runs on the event loop, two
   clients' go to a thread and batch, which costs more until batches grow).
2. Measure at C with the client-side timer (overload.lua): the p99 at saturation.
3. Drive OVERLOAD_FACTOR × C connections, each request with `X-Request-Timeout` of
   TIMEOUT_OVER_P99 × that p99 (a client that will wait twice what saturation costs), each
   client waiting Retry-After seconds when refused, as the header asks. Every reply is timed on
   the client from its own send.
4. The same with clients that ignore Retry-After and send again at once (a retry storm).

The run with well-behaved clients is judged against issue 18's targets: admitted (200) p99 ≤ 2×
the p99 at saturation, no reply after its deadline, refusals' p99 ≤ 5 ms, no 5xx other than 504.
The storm is reported beside it, unjudged: closed-loop clients that retry at once keep
OVERLOAD_FACTOR × C requests in the server, and a refusal costs the event loop about as much as
the HTTP handling of a served request (the model's share of a batched request is small), so by
Little's law every reply, refusals included, waits about OVERLOAD_FACTOR × the saturation
latency, whatever the server does; it shows that nothing breaks (no 5xx, no late 200). The
server's own counts (refusals by reason, expired deadlines) are read from /metrics around each
run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from benchmarks.load import LoadError, run_wrk
from benchmarks.servers import (
    MODELPORT,
    ServerError,
    start_server,
    stop_server,
    wait_idle,
    wait_ready,
    wait_workers_settled,
)
from benchmarks.stats import TargetCheck
from benchmarks.throughput import default_scenarios

logger = logging.getLogger("benchmarks")

ISSUE = "issue 18"
LUA_SCRIPT = Path(__file__).with_name("overload.lua")
SCENARIO = "forest-64"  # its model and row: the breast-cancer forest, one row per request
KNEE = 0.9  # saturated: within 10% of the highest throughput of the ladder
OVERLOAD_FACTOR = 3
TIMEOUT_OVER_P99 = 2.0
_RESULT_MARKER = "OVERLOAD_RESULT "


@dataclass(frozen=True)
class Plan:
    ladder: tuple[int, ...]
    step_s: int
    run_s: int
    warmup_s: int


FULL = Plan(ladder=(1, 2, 4, 8, 16, 32, 64, 128, 256), step_s=3, run_s=10, warmup_s=2)
QUICK = Plan(ladder=(1, 4, 16, 64), step_s=1, run_s=2, warmup_s=0)


@dataclass(frozen=True)
class Step:
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx replies and socket errors


@dataclass(frozen=True)
class Latencies:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class ClientView:
    """One run as its clients saw it (overload.lua)."""

    connections: int
    timeout_s: float | None
    honours_retry_after: bool
    duration_s: float
    requests: int
    ok: Latencies
    refused: Latencies
    expired: Latencies
    other_5xx: int
    other: int  # 4xx other than 429 (none expected)
    unmatched: int  # replies without the echoed X-Request-ID (none expected)
    late: int  # replies (any status) received after the request's timeout
    socket_errors: int
    # The same replies as the server timed them (its access log: from the request reaching the
    # app to its reply), by status: what the client saw beyond these was the wait before the
    # server's event loop read the request and ran it.
    server_latency: dict[str, Latencies] = field(default_factory=dict)

    @property
    def ok_per_s(self) -> float:
        return self.ok.count / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class OverloadResult:
    model: str
    steps: list[Step]
    saturation_connections: int
    saturation: ClientView
    overload: ClientView  # clients honour Retry-After: judged
    storm: ClientView  # clients ignore it: reported
    # The server's counts during each overload run, from /metrics: refused by reason, expired.
    server: dict[str, float]
    storm_server: dict[str, float]
    targets: list[TargetCheck]
    load_average: list[float]  # at the start of the overload run


def run_overload(
    store: Path, *, work_dir: Path, quick: bool, server_cpu: int, client_cpu: int
) -> OverloadResult:
    plan = QUICK if quick else FULL
    scenario = next(s for s in default_scenarios() if s.key == SCENARIO)
    if not (store / scenario.model).is_dir():
        raise ServerError(f"{store} has no {scenario.model}: the overload scenario needs it")
    body_file = work_dir / "overload-body.json"
    body_file.write_bytes(scenario.body)
    access_log = work_dir / "overload-access.log"
    server = start_server(
        MODELPORT, store=store, cpu=server_cpu, log_dir=work_dir, access_log=access_log
    )
    try:
        wait_ready(server, scenario.path, scenario.body)
        wait_workers_settled(server, 1)
        target = f"{server.url}{scenario.path}"
        if plan.warmup_s:
            run_wrk(target, body_file, connections=16, duration_s=plan.warmup_s, cpu=client_cpu)
        steps, saturating = _ladder(target, body_file, plan, client_cpu)
        wait_idle([server])
        start = access_log.stat().st_size
        saturation = _client_run(target, body_file, saturating, None, True, plan.run_s, client_cpu)
        wait_idle([server])
        saturation = replace(saturation, server_latency=_server_latency(access_log, start))
        timeout = round(max(TIMEOUT_OVER_P99 * saturation.ok.p99_ms / 1000, 0.001), 4)
        load_average = _load_average()
        runs: list[tuple[ClientView, dict[str, float]]] = []
        for honour in (True, False):
            wait_idle([server])
            before = server_counts(server.url, scenario.model)
            start = access_log.stat().st_size
            view = _client_run(
                target,
                body_file,
                OVERLOAD_FACTOR * saturating,
                timeout,
                honour,
                plan.run_s,
                client_cpu,
            )
            wait_idle([server])
            view = replace(view, server_latency=_server_latency(access_log, start))
            after = server_counts(server.url, scenario.model)
            runs.append((view, {key: after[key] - before.get(key, 0.0) for key in after}))
    finally:
        stop_server(server)
    (overload, counts), (storm, storm_counts) = runs
    result = OverloadResult(
        model=scenario.model,
        steps=steps,
        saturation_connections=saturating,
        saturation=saturation,
        overload=overload,
        storm=storm,
        server=counts,
        storm_server=storm_counts,
        targets=_targets(saturation, overload),
        load_average=load_average,
    )
    logger.info("overload: %s", "; ".join(check.render() for check in result.targets))
    return result


def _ladder(url: str, body_file: Path, plan: Plan, cpu: int) -> tuple[list[Step], int]:
    steps: list[Step] = []
    for connections in plan.ladder:
        load = run_wrk(url, body_file, connections=connections, duration_s=plan.step_s, cpu=cpu)
        step = Step(
            connections,
            load.requests_per_s,
            load.p50_ms,
            load.p99_ms,
            load.non_2xx + load.socket_errors,
        )
        steps.append(step)
        logger.info(
            "overload ladder: %4d connections %8.0f req/s  p99 %7.2f ms  errors %d",
            connections,
            step.requests_per_s,
            step.p99_ms,
            step.errors,
        )
    peak = max(step.requests_per_s for step in steps)
    saturating = next(s.connections for s in steps if s.requests_per_s >= KNEE * peak)
    return steps, saturating


def _client_run(
    url: str,
    body_file: Path,
    connections: int,
    timeout: float | None,
    honour: bool,
    seconds: int,
    cpu: int,
) -> ClientView:
    argv = [
        "taskset", "-c", str(cpu),
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(LUA_SCRIPT), url,
    ]  # fmt: skip
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_TIMEOUT": "" if timeout is None else f"{timeout:.4f}",
        "BENCH_HONOUR_RETRY_AFTER": "1" if honour else "",
    }
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
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

    def latencies(kind: str) -> Latencies:
        part = raw[kind]
        return Latencies(
            part["count"], part["p50_us"] / 1000, part["p99_us"] / 1000, part["max_us"] / 1000
        )

    view = ClientView(
        connections=connections,
        timeout_s=timeout,
        honours_retry_after=honour,
        duration_s=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        ok=latencies("ok"),
        refused=latencies("refused"),
        expired=latencies("expired"),
        other_5xx=raw["other_5xx"],
        other=raw["other"],
        unmatched=raw["unmatched"],
        late=raw["late"],
        socket_errors=raw["socket_errors"],
    )
    logger.info(
        "overload run: %d connections, timeout %s, Retry-After %s: 200 %d (p99 %.2f ms), "
        "429 %d (p99 %.2f ms), 504 %d, other 5xx %d, late %d, socket errors %d",
        connections,
        "none" if timeout is None else f"{timeout:.4f} s",
        "honoured" if honour else "ignored",
        view.ok.count,
        view.ok.p99_ms,
        view.refused.count,
        view.refused.p99_ms,
        view.expired.count,
        view.other_5xx,
        view.late,
        view.socket_errors,
    )
    return view


def _server_latency(access_log: Path, start: int) -> dict[str, Latencies]:
    """Prediction replies' latency by status, from the access log lines written since `start`
    (a byte offset)."""
    with access_log.open("rb") as stream:
        stream.seek(start)
        lines = stream.read().splitlines()
    by_status: dict[str, list[float]] = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if str(entry.get("route", "")).endswith("/predict"):
            by_status.setdefault(str(entry["status"]), []).append(float(entry["latency_ms"]))
    return {status: _latencies(values) for status, values in sorted(by_status.items())}


def _latencies(values: list[float]) -> Latencies:
    ordered = sorted(values)

    def rank(p: float) -> float:  # nearest rank, as overload.lua takes it
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)]

    return Latencies(len(ordered), rank(50), rank(99), ordered[-1])


_COUNTERS = {
    "refused_queue_full": ("modelport_refused_total", 'reason="queue_full"'),
    "refused_deadline_unreachable": ("modelport_refused_total", 'reason="deadline_unreachable"'),
    "deadline_expired": ("modelport_deadline_expired_total", ""),
    "disconnected": ("modelport_disconnected_total", ""),
    "predicted": ("modelport_predictions_total", ""),
}


def server_counts(url: str, model: str) -> dict[str, float]:
    """The model's overload counters, summed over its versions, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    counts = {}
    for key, (name, label) in _COUNTERS.items():
        pattern = rf"^{name}{{([^}}]*)}} (\S+)$"
        counts[key] = sum(
            float(value)
            for labels, value in re.findall(pattern, text, re.MULTILINE)
            if f'model="{model}"' in labels and label in labels
        )
    return counts


def _targets(saturation: ClientView, overload: ClientView) -> list[TargetCheck]:
    baseline = saturation.ok.p99_ms
    return [
        TargetCheck(
            "admitted p99 ≤ 2× p99 at saturation",
            overload.ok.p99_ms / baseline if baseline > 0 else float("inf"),
            2.0,
            "at_most",
        ),
        TargetCheck("replies after their deadline", overload.late, 0, "at_most", "replies"),
        TargetCheck("refusals' p99 ≤ 5 ms", overload.refused.p99_ms, 5.0, "at_most", "ms"),
        TargetCheck("5xx other than 504", overload.other_5xx, 0, "at_most", "replies"),
    ]


def _load_average() -> list[float]:
    try:
        return [round(float(v), 2) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return [round(v, 2) for v in os.getloadavg()]

"""Single-row requests under load: every configuration driven by wrk, in interleaved rounds.

Each round runs every configuration once, in the same order (A B C D E, A B C D E, ...), so a
slow spell of the machine lands on all of them rather than on whichever ran then; ratios are
taken round by round for the same reason.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from sklearn.datasets import load_breast_cancer

from benchmarks.load import LoadResult, run_wrk
from benchmarks.servers import (
    BARE_ASGI,
    CONSTANT,
    FLASK,
    NAIVE,
    Configuration,
    RunningServer,
    ServerError,
    cpu_ticks,
    wait_idle,
)
from benchmarks.stats import Spread, TargetCheck, paired_ratios
from benchmarks.store import HIST_MODEL
from benchmarks.targets import THROUGHPUT_TARGETS

logger = logging.getLogger("benchmarks")

Metric = Literal["requests_per_s", "p50_ms"]

# Ratios are given against each of these, for every configuration.
REFERENCES: tuple[Configuration, ...] = (FLASK, NAIVE, CONSTANT, BARE_ASGI)
# The apps modelport replaces serve whatever estimator joblib gives them: one that cannot serve
# a scenario's model is left out of that scenario (with its answer as the reason), not fatal.
MAY_DECLINE = {FLASK.key, NAIVE.key}

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    model: str
    row: list[float]
    connections: int
    # The figure compared between configurations: throughput under load, or a lone client's
    # median latency.
    metric: Metric

    @property
    def path(self) -> str:
        return f"/models/{self.model}/predict"

    @property
    def body(self) -> bytes:
        return json.dumps({"instances": [self.row]}).encode()


def default_scenarios() -> list[Scenario]:
    cancer_row = [float(value) for value in load_breast_cancer().data[0]]
    forest = "breast-cancer (100-tree random forest)"
    boosted = f"{HIST_MODEL} (100-iteration hist gradient boosting)"
    return [
        Scenario("iris-64", "iris (logistic regression), single row, 64 connections", "iris",
                 IRIS_ROW, 64, "requests_per_s"),
        Scenario("forest-64", f"{forest}, single row, 64 connections", "breast-cancer",
                 cancer_row, 64, "requests_per_s"),
        Scenario("hist-64", f"{boosted}, single row, 64 connections", HIST_MODEL, cancer_row, 64,
                 "requests_per_s"),
        Scenario("iris-1", "iris, single row, 1 connection (latency)", "iris", IRIS_ROW, 1,
                 "p50_ms"),
        Scenario("forest-1", "breast-cancer forest, single row, 1 connection (latency)",
                 "breast-cancer", cancer_row, 1, "p50_ms"),
        Scenario("hist-1", f"{HIST_MODEL}, single row, 1 connection (latency)", HIST_MODEL,
                 cancer_row, 1, "p50_ms"),
    ]  # fmt: skip


@dataclass(frozen=True)
class ConfigurationResult:
    key: str
    label: str
    rounds: list[LoadResult]
    requests_per_s: Spread
    p50_ms: Spread
    p99_ms: Spread
    # Share of one core the server's processes used during each round's run. A saturated
    # single-worker server is near 1.0; much less under 64 connections means something else
    # held its core (this machine's noise), or the server waits on something besides CPU.
    server_cpu_shares: list[float]
    server_cpu_share: Spread
    non_2xx: int
    socket_errors: int
    # Reference key -> the scenario's metric divided by the reference's, round by round (None
    # when the reference completed no request in any round).
    ratios: dict[str, Spread | None]
    targets: list[TargetCheck]


@dataclass(frozen=True)
class ScenarioResult:
    key: str
    title: str
    model: str
    connections: int
    metric: Metric
    duration_s: int
    configurations: list[ConfigurationResult]
    # Configuration key -> why it was not measured in this scenario.
    left_out: dict[str, str]


def returning_client_cookie(server: RunningServer, scenario: Scenario) -> str | None:
    """A modelport session cookie that its canary split maps to v1 of `scenario.model`.

    The bundled iris sends 10% of unpinned traffic to v2. wrk sends this cookie, as any client
    that keeps cookies does after its first reply, so modelport serves the same version the
    other apps load (v1) and skips minting a cookie per request. The other apps ignore it.
    """
    for attempt in range(100):
        cookie = f"modelport_session=benchmark-client-{attempt:04d}"
        response = httpx.post(
            f"{server.url}{scenario.path}",
            content=scenario.body,
            headers={"Content-Type": "application/json", "Cookie": cookie},
            timeout=30,
        )
        if response.status_code == 200 and response.headers.get("X-Model-Version") == "1":
            return cookie
    logger.warning("no session cookie maps %s to v1; wrk sends none", scenario.model)
    return None


def _metric(result: LoadResult, metric: Metric) -> float:
    return result.requests_per_s if metric == "requests_per_s" else result.p50_ms


def summarise(
    scenario: Scenario,
    duration_s: int,
    configurations: Sequence[Configuration],
    runs: Mapping[str, list[LoadResult]],
    cpu_shares: Mapping[str, list[float]],
    left_out: Mapping[str, str] | None = None,
) -> ScenarioResult:
    results = []
    for configuration in configurations:
        rounds = runs[configuration.key]
        values = [_metric(result, scenario.metric) for result in rounds]
        ratios = {
            reference.key: paired_ratios(
                values, [_metric(result, scenario.metric) for result in runs[reference.key]]
            )
            for reference in REFERENCES
            if reference.key in runs
        }
        targets = []
        if configuration.key == "modelport":
            for spec in THROUGHPUT_TARGETS.get(scenario.key, []):
                ratio = ratios.get(spec.reference)
                if ratio is not None:
                    targets.append(
                        TargetCheck(spec.description, ratio.median, spec.bound, spec.direction)
                    )
        results.append(
            ConfigurationResult(
                key=configuration.key,
                label=configuration.label,
                rounds=rounds,
                requests_per_s=Spread.of([result.requests_per_s for result in rounds]),
                p50_ms=Spread.of([result.p50_ms for result in rounds]),
                p99_ms=Spread.of([result.p99_ms for result in rounds]),
                server_cpu_shares=cpu_shares[configuration.key],
                server_cpu_share=Spread.of(cpu_shares[configuration.key]),
                non_2xx=sum(result.non_2xx for result in rounds),
                socket_errors=sum(result.socket_errors for result in rounds),
                ratios=ratios,
                targets=targets,
            )
        )
    return ScenarioResult(
        key=scenario.key,
        title=scenario.title,
        model=scenario.model,
        connections=scenario.connections,
        metric=scenario.metric,
        duration_s=duration_s,
        configurations=results,
        left_out=dict(left_out or {}),
    )


def servers_that_serve(
    scenario: Scenario, servers: Sequence[RunningServer]
) -> tuple[list[RunningServer], dict[str, str]]:
    """One request to each server before any load: those that answer 200, and why the others
    (only ever the Flask prototype or the naive port) are left out. A dead server, or modelport
    or a ceiling answering wrongly, is the harness's failure."""
    serving: list[RunningServer] = []
    left_out: dict[str, str] = {}
    for server in servers:
        label = server.configuration.label
        if server.process.poll() is not None:
            raise ServerError(f"{label} exited with {server.process.returncode}")
        try:
            response = httpx.post(
                f"{server.url}{scenario.path}",
                content=scenario.body,
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            problem = (
                None
                if response.status_code == 200
                else f"answered {response.status_code}: {response.text[:200]}"
            )
        except httpx.TransportError as exc:
            problem = f"no answer: {exc!r}"
        if problem is None:
            serving.append(server)
        elif server.configuration.key in MAY_DECLINE:
            logger.warning("%s left out of %s: %s", label, scenario.key, problem)
            left_out[server.configuration.key] = f"cannot serve {scenario.model}: {problem}"
        else:
            raise ServerError(f"{label} cannot serve {scenario.path}: {problem}")
    return serving, left_out


def run_scenario(
    scenario: Scenario,
    servers: Sequence[RunningServer],
    *,
    rounds: int,
    duration_s: int,
    warmup_s: int,
    client_cpu: int,
    work_dir: Path,
    cookie: str | None,
) -> ScenarioResult:
    body_file = work_dir / f"{scenario.key}.json"
    body_file.write_bytes(scenario.body)
    servers, left_out = servers_that_serve(scenario, servers)

    def load(server: RunningServer, seconds: int) -> tuple[LoadResult, float]:
        """One wrk run, and the share of a core the server's processes used meanwhile."""
        wait_idle(servers)
        pids = [server.pid, *server.worker_pids()]
        before = sum(max(cpu_ticks(pid), 0) for pid in pids)
        result = run_wrk(
            f"{server.url}{scenario.path}",
            body_file,
            connections=scenario.connections,
            duration_s=seconds,
            cpu=client_cpu,
            cookie=cookie,
        )
        used = sum(max(cpu_ticks(pid), 0) for pid in pids) - before
        return result, used / TICKS_PER_SECOND / max(result.duration_s, 1e-9)

    # Warm-up: first requests pay for imports, caches and (for some) thread-pool start.
    if warmup_s > 0:
        for server in servers:
            load(server, warmup_s)
    runs: dict[str, list[LoadResult]] = {server.configuration.key: [] for server in servers}
    shares: dict[str, list[float]] = {server.configuration.key: [] for server in servers}
    for round_number in range(1, rounds + 1):
        for server in servers:
            result, share = load(server, duration_s)
            runs[server.configuration.key].append(result)
            shares[server.configuration.key].append(share)
            logger.info(
                "%s round %d/%d %-32s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d/%d  "
                "server CPU %3.0f%%",
                scenario.key,
                round_number,
                rounds,
                server.configuration.label,
                result.requests_per_s,
                result.p50_ms,
                result.p99_ms,
                result.non_2xx,
                result.socket_errors,
                share * 100,
            )
    configurations = [server.configuration for server in servers]
    return summarise(scenario, duration_s, configurations, runs, shares, left_out)

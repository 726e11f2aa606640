"""gRPC beside REST (issue 17): one modelport worker serving both, one client (h2load) driving
both, single-row requests from 64 connections, in interleaved rounds (REST, gRPC, REST, ...).

h2load sees a failed gRPC call as an HTTP 200 (the error travels in the trailers), so every
gRPC run is checked in the server's own counters: each call that succeeded made one
prediction, and a run whose predictions fall short of h2load's successes had failed calls.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
from sklearn.datasets import load_breast_cancer

from benchmarks.h2load import GRPC_INFER, grpc_infer_body, run_h2load
from benchmarks.load import LoadResult
from benchmarks.servers import (
    HOST,
    MODELPORT,
    RunningServer,
    ServerError,
    free_port,
    start_server,
    stop_server,
    wait_idle,
    wait_ready,
)
from benchmarks.stats import Spread, TargetCheck, paired_ratios
from benchmarks.targets import GRPC_TARGETS
from benchmarks.throughput import IRIS_ROW

logger = logging.getLogger("benchmarks")

CONNECTIONS = 64


@dataclass(frozen=True)
class GrpcScenario:
    key: str
    model: str
    row: list[float]


@dataclass(frozen=True)
class GrpcScenarioResult:
    key: str
    model: str
    connections: int
    duration_s: int
    rest: list[LoadResult]
    grpc: list[LoadResult]
    rest_per_s: Spread
    grpc_per_s: Spread
    # gRPC over REST, round by round.
    ratio: Spread | None
    # Calls h2load counted as answered but the server did not predict (failed gRPC calls).
    grpc_failed_calls: int
    targets: list[TargetCheck]


def grpc_scenarios() -> list[GrpcScenario]:
    cancer_row = [float(value) for value in load_breast_cancer().data[0]]
    return [
        GrpcScenario("iris-64", "iris", IRIS_ROW),
        GrpcScenario("forest-64", "breast-cancer", cancer_row),
    ]


def _predictions(server: RunningServer, model: str) -> float:
    """The server's count of prediction calls for `model`, summed over versions."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    pattern = re.compile(
        rf'^modelport_predictions_total\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$',
        re.MULTILINE,
    )
    return sum(float(value) for value in pattern.findall(text))


def run_grpc_section(
    store: Path,
    *,
    rounds: int,
    duration_s: int,
    warmup_s: int,
    server_cpu: int,
    client_cpu: int,
    work_dir: Path,
) -> list[GrpcScenarioResult]:
    grpc_port = free_port()
    server = start_server(
        MODELPORT,
        store=store,
        cpu=server_cpu,
        log_dir=work_dir,
        env={"MODELPORT_GRPC_PORT": str(grpc_port)},
    )
    results = []
    try:
        scenarios = [s for s in grpc_scenarios() if (store / s.model).is_dir()]
        if not scenarios:
            raise ServerError(f"{store} holds none of the gRPC section's models")
        for scenario in scenarios:
            rest_body = json.dumps({"instances": [scenario.row]}).encode()
            # The v1 of every bundled model: pinned, so REST's canary split plays no part.
            rest_path = f"/models/{scenario.model}/versions/1/predict"
            wait_ready(server, rest_path, rest_body)
            rest_file = work_dir / f"grpc-section-{scenario.key}.json"
            rest_file.write_bytes(rest_body)
            grpc_file = work_dir / f"grpc-section-{scenario.key}.grpc"
            grpc_file.write_bytes(grpc_infer_body(scenario.model, scenario.row, version="1"))
            results.append(
                _run_scenario(
                    scenario,
                    server,
                    rest_url=f"{server.url}{rest_path}",
                    grpc_url=f"http://{HOST}:{grpc_port}{GRPC_INFER}",
                    rest_file=rest_file,
                    grpc_file=grpc_file,
                    rounds=rounds,
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    client_cpu=client_cpu,
                )
            )
    finally:
        stop_server(server)
    return results


def _run_scenario(
    scenario: GrpcScenario,
    server: RunningServer,
    *,
    rest_url: str,
    grpc_url: str,
    rest_file: Path,
    grpc_file: Path,
    rounds: int,
    duration_s: int,
    warmup_s: int,
    client_cpu: int,
) -> GrpcScenarioResult:
    failed = 0

    def rest(seconds: int) -> LoadResult:
        wait_idle([server])
        return run_h2load(
            rest_url,
            rest_file,
            protocol="rest",
            connections=CONNECTIONS,
            duration_s=seconds,
            cpu=client_cpu,
        )

    def grpc(seconds: int) -> LoadResult:
        nonlocal failed
        wait_idle([server])
        before = _predictions(server, scenario.model)
        result = run_h2load(
            grpc_url,
            grpc_file,
            protocol="grpc",
            connections=CONNECTIONS,
            duration_s=seconds,
            cpu=client_cpu,
        )
        wait_idle([server])
        predicted = _predictions(server, scenario.model) - before
        failed += max(0, result.requests - int(predicted))
        return result

    if warmup_s > 0:
        rest(warmup_s)
        grpc(warmup_s)
        failed = 0
    rest_runs: list[LoadResult] = []
    grpc_runs: list[LoadResult] = []
    for round_number in range(1, rounds + 1):
        rest_runs.append(rest(duration_s))
        grpc_runs.append(grpc(duration_s))
        logger.info(
            "grpc %s round %d/%d  REST %8.0f req/s  gRPC %8.0f req/s",
            scenario.key,
            round_number,
            rounds,
            rest_runs[-1].requests_per_s,
            grpc_runs[-1].requests_per_s,
        )
    ratio = paired_ratios(
        [run.requests_per_s for run in grpc_runs], [run.requests_per_s for run in rest_runs]
    )
    targets = [
        TargetCheck(spec.description, ratio.median, spec.bound, spec.direction)
        for spec in GRPC_TARGETS.get(scenario.key, [])
        if ratio is not None
    ]
    if failed:
        logger.error("grpc %s: %d gRPC calls failed", scenario.key, failed)
    return GrpcScenarioResult(
        key=scenario.key,
        model=scenario.model,
        connections=CONNECTIONS,
        duration_s=duration_s,
        rest=rest_runs,
        grpc=grpc_runs,
        rest_per_s=Spread.of([run.requests_per_s for run in rest_runs]),
        grpc_per_s=Spread.of([run.requests_per_s for run in grpc_runs]),
        ratio=ratio,
        grpc_failed_calls=failed,
        targets=targets,
    )


def grpc_table(results: list[GrpcScenarioResult]) -> list[str]:
    lines = [
        "## gRPC beside REST (one worker, h2load, 64 connections, single row)",
        "",
        "| scenario | REST req/s | gRPC req/s | gRPC ÷ REST | failed gRPC calls | target |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        ratio = (
            "–"
            if result.ratio is None
            else f"{result.ratio.median:.2f}× ({result.ratio.min:.2f}–{result.ratio.max:.2f})"
        )
        targets = "; ".join(check.render() for check in result.targets) or "–"
        lines.append(
            f"| {result.key} | {_rate(result.rest_per_s)} | {_rate(result.grpc_per_s)} | {ratio} "
            f"| {result.grpc_failed_calls} | {targets} |"
        )
    return [*lines, ""]


def _rate(spread: Spread) -> str:
    return f"{spread.median:,.0f} ({spread.min:,.0f}–{spread.max:,.0f})"

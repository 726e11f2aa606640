"""Issue 19's two speed targets, over HTTP against `modelport serve` (one worker pinned to the
server core, wrk on the client core, as every other scenario):

  * explain: the 100-tree forest's single-row explanation p50 against its single-row prediction
    p50, from the same server, one connection, interleaved round by round (explain, predict,
    explain, predict, ...): explain ≤ 3× predict;
  * payload logging: iris throughput under 64 connections with MODELPORT_PAYLOAD_LOG_RATE=1.0
    (every request's record written to a JSON-lines file) against a server without it,
    interleaved round by round: the logging server keeps ≥ 0.9× the throughput.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from sklearn.datasets import load_breast_cancer

from benchmarks.load import LoadResult, run_wrk
from benchmarks.servers import (
    MODELPORT,
    RunningServer,
    start_server,
    stop_server,
    wait_idle,
    wait_ready,
)
from benchmarks.stats import Spread, TargetCheck, paired_ratios
from benchmarks.throughput import IRIS_ROW

logger = logging.getLogger("benchmarks")

FOREST = "breast-cancer"
EXPLAIN_BOUND = 3.0  # explain p50 ≤ 3× predict p50
LOGGING_BOUND = 0.9  # throughput with payload logging ≥ 0.9× without
LOGGING_CONNECTIONS = 64


@dataclass(frozen=True)
class ExplainResult:
    rounds: int
    duration_s: int
    explain: list[LoadResult]
    predict: list[LoadResult]
    # Explain p50 over predict p50, round by round.
    explain_ratio: Spread
    without_logging: list[LoadResult]
    with_logging: list[LoadResult]
    # Throughput with payload logging over without, round by round.
    logging_ratio: Spread
    logged_records: int  # lines the logging server wrote (it logs every request)
    targets: list[TargetCheck]


def run_explain(
    modelport: RunningServer,
    *,
    store: Path,
    rounds: int,
    duration_s: int,
    warmup_s: int,
    server_cpu: int,
    client_cpu: int,
    work_dir: Path,
    cookie: str | None,
) -> ExplainResult:
    """Both measurements: `modelport` (already serving `store`) is the server without payload
    logging; one more with it is started on the same core for the throughput rounds."""
    row = [float(value) for value in load_breast_cancer().data[0]]
    forest_body = work_dir / "explain-forest.json"
    forest_body.write_text(json.dumps({"instances": [row]}))
    iris_body = work_dir / "explain-iris.json"
    iris_body.write_text(json.dumps({"instances": [IRIS_ROW]}))
    log_file = work_dir / "payloads.jsonl"
    logging_server = start_server(
        MODELPORT,
        store=store,
        cpu=server_cpu,
        log_dir=work_dir,
        env={"MODELPORT_PAYLOAD_LOG_RATE": "1.0", "MODELPORT_PAYLOAD_LOG_PATH": str(log_file)},
    )
    servers = [modelport, logging_server]
    try:
        wait_ready(logging_server, "/models/iris/predict", iris_body.read_bytes())
        wait_ready(modelport, f"/models/{FOREST}/explain", forest_body.read_bytes())

        def load(url: str, body: Path, connections: int, seconds: int) -> LoadResult:
            wait_idle(servers)
            return run_wrk(
                url,
                body,
                connections=connections,
                duration_s=seconds,
                cpu=client_cpu,
                cookie=cookie,
            )

        latency = {
            "explain": f"{modelport.url}/models/{FOREST}/explain",
            "predict": f"{modelport.url}/models/{FOREST}/predict",
        }
        throughput = {
            "without": f"{modelport.url}/models/iris/predict",
            "with": f"{logging_server.url}/models/iris/predict",
        }
        if warmup_s > 0:
            for url in latency.values():
                load(url, forest_body, 1, warmup_s)
            for url in throughput.values():
                load(url, iris_body, LOGGING_CONNECTIONS, warmup_s)
        runs: dict[str, list[LoadResult]] = {key: [] for key in [*latency, *throughput]}
        for number in range(1, rounds + 1):
            for key, url in latency.items():
                runs[key].append(load(url, forest_body, 1, duration_s))
            for key, url in throughput.items():
                runs[key].append(load(url, iris_body, LOGGING_CONNECTIONS, duration_s))
            logger.info(
                "explain round %d/%d: forest explain p50 %.2f ms, predict p50 %.2f ms; iris "
                "%.0f req/s without payload logging, %.0f with",
                number,
                rounds,
                runs["explain"][-1].p50_ms,
                runs["predict"][-1].p50_ms,
                runs["without"][-1].requests_per_s,
                runs["with"][-1].requests_per_s,
            )
    finally:
        stop_server(logging_server)
    for key, results in runs.items():
        failed = sum(r.non_2xx + r.socket_errors for r in results)
        if failed:
            logger.warning("explain section, %s: %d failed requests", key, failed)
    explain_ratio = paired_ratios(
        [r.p50_ms for r in runs["explain"]], [r.p50_ms for r in runs["predict"]]
    )
    logging_ratio = paired_ratios(
        [r.requests_per_s for r in runs["with"]], [r.requests_per_s for r in runs["without"]]
    )
    assert explain_ratio is not None and logging_ratio is not None  # every run answered
    records = len(log_file.read_bytes().splitlines()) if log_file.exists() else 0
    return ExplainResult(
        rounds=rounds,
        duration_s=duration_s,
        explain=runs["explain"],
        predict=runs["predict"],
        explain_ratio=explain_ratio,
        without_logging=runs["without"],
        with_logging=runs["with"],
        logging_ratio=logging_ratio,
        logged_records=records,
        targets=[
            TargetCheck(
                "forest explain p50 ≤ 3× predict p50",
                explain_ratio.median,
                EXPLAIN_BOUND,
                "at_most",
            ),
            TargetCheck(
                "iris throughput with payload logging ≥ 0.9× without",
                logging_ratio.median,
                LOGGING_BOUND,
                "at_least",
            ),
        ],
    )


def explain_table(result: ExplainResult) -> list[str]:
    """The section's markdown: medians (min–max) over the rounds, and the targets."""

    def spread(values: list[float], digits: int) -> str:
        summary = Spread.of(values)
        return f"{summary.median:.{digits}f} ({summary.min:.{digits}f}–{summary.max:.{digits}f})"

    ratio = result.explain_ratio
    logging_ratio = result.logging_ratio
    return [
        f"### Explanations and payload logging (issue 19; {result.rounds} interleaved rounds of "
        f"{result.duration_s} s)",
        "",
        "| measurement | median (min–max) |",
        "|---|---|",
        f"| forest single-row explain p50, 1 connection (ms) | {spread([r.p50_ms for r in result.explain], 2)} |",
        f"| forest single-row predict p50, 1 connection (ms) | {spread([r.p50_ms for r in result.predict], 2)} |",
        f"| explain / predict p50, per round | {ratio.median:.2f}× ({ratio.min:.2f}–{ratio.max:.2f}) |",
        f"| iris req/s, {LOGGING_CONNECTIONS} connections, no payload log | {spread([r.requests_per_s for r in result.without_logging], 0)} |",
        f"| iris req/s, {LOGGING_CONNECTIONS} connections, payload log rate 1.0 | {spread([r.requests_per_s for r in result.with_logging], 0)} |",
        f"| with / without payload logging, per round | {logging_ratio.median:.2f}× ({logging_ratio.min:.2f}–{logging_ratio.max:.2f}) |",
        "",
        f"The logging server wrote {result.logged_records:,} records. Issue 19's targets (not "
        "counted among issue 16's above): "
        + "; ".join(check.render() for check in result.targets)
        + ".",
        "",
    ]

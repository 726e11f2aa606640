"""`python -m benchmarks`: run the benchmark, print the markdown table, write JSON, markdown and
a PNG chart. `make bench` runs the full benchmark (~21 minutes: six throughput scenarios of five
configurations, five rounds each, then bulk, memory and the overload scenario of
benchmarks/overload.py), `make bench-quick` the quick mode, which proves the harness
works end to end in about two minutes and writes to a temporary directory instead of
`benchmarks/results/`.

Missed targets are reported, never fatal: the exit status is 0 when every measurement ran, 1
when a server or wrk failed, 2 when the machine lacks what the harness needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bulk import BulkResult, run_bulk
from benchmarks.explain import ExplainResult, run_explain
from benchmarks.grpc_section import GrpcScenarioResult, run_grpc_section
from benchmarks.h2load import h2load_version
from benchmarks.load import LoadError, wrk_version
from benchmarks.memory import FULL_FOREST, QUICK_FOREST, ForestSpec, MemoryResult, run_memory
from benchmarks.overload import OverloadResult, run_overload
from benchmarks.report import BenchReport, to_markdown, write_report
from benchmarks.servers import (
    BARE_ASGI,
    CONSTANT,
    FLASK,
    MODELPORT,
    NAIVE,
    REPO,
    Configuration,
    RunningServer,
    ServerError,
    start_server,
    stop_server,
    wait_ready,
)
from benchmarks.store import MODELS, ModelBackend, build_store, read_backends
from benchmarks.streaming import FULL_ROWS, QUICK_ROWS, StreamResult, run_stream
from benchmarks.throughput import (
    ScenarioResult,
    default_scenarios,
    returning_client_cookie,
    run_scenario,
)

logger = logging.getLogger("benchmarks")

SECTIONS = ("throughput", "bulk", "stream", "memory", "grpc", "explain", "overload")
# The order each round runs them in.
CONFIGURATIONS: tuple[Configuration, ...] = (FLASK, NAIVE, CONSTANT, BARE_ASGI, MODELPORT)
BULK_CONFIGURATIONS: tuple[Configuration, ...] = (MODELPORT, NAIVE, FLASK)
DEFAULT_RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Plan:
    """What one run measures, and how long it spends on each measurement."""

    mode: str
    rounds: int
    duration_s: int
    warmup_s: int
    bulk_repeats: int
    stream_rows: int
    forest: ForestSpec
    sections: tuple[str, ...]
    server_cpu: int
    client_cpu: int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="modelport against the Flask prototype, a naive FastAPI port and two ceilings.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 round of 2 s per configuration and no warm-up, 2 bulk repetitions, a small "
        "forest; results go to a temporary directory unless --output-dir is given.",
    )
    parser.add_argument(
        "--rounds", type=int, help="Interleaved rounds, at least 3 (default 5; quick 1)."
    )
    parser.add_argument("--duration", type=int, help="Seconds per wrk run (default 6; quick 2).")
    parser.add_argument(
        "--warmup",
        type=int,
        help="Seconds of warm-up per server and scenario; 0 skips it (default 2; quick 0).",
    )
    parser.add_argument(
        "--bulk-repeats", type=int, help="Timed 10,000-row repetitions (default 7; quick 2)."
    )
    parser.add_argument(
        "--stream-rows",
        type=int,
        help=f"Rows streamed in the stream section (default {FULL_ROWS:,}; quick {QUICK_ROWS:,}).",
    )
    parser.add_argument(
        "--forest-trees",
        type=int,
        help=f"Trees in the memory section's forest (default {FULL_FOREST.trees}, ~150 MB; "
        f"quick {QUICK_FOREST.trees}).",
    )
    parser.add_argument(
        "--skip", action="append", choices=SECTIONS, default=[], help="Leave a section out."
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help=f"A store already holding {', '.join(MODELS)}; scenarios of a model it lacks are "
        "left out (default: train and import them into a temporary store).",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help=f"Where latest.json/.md/.png go (default {DEFAULT_RESULTS.relative_to(REPO)}; "
        "quick: a new temporary directory).",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "modelport-bench-cache",
        help="Where the memory section's forest is cached between runs (default: %(default)s).",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="Core for the servers.")
    parser.add_argument("--client-cpu", type=int, default=1, help="Core for wrk and the harness.")
    parser.add_argument(
        "--keep-work-dir", action="store_true", help="Keep the temporary store and server logs."
    )
    return parser


def _plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)

    def pick(value: int | None, full: int, fast: int, *, least: int = 1) -> int:
        chosen = value if value is not None else (fast if quick else full)
        if chosen < least:
            raise SystemExit(f"python -m benchmarks: values must be {least} or more, not {chosen}")
        return chosen

    trees = pick(args.forest_trees, FULL_FOREST.trees, QUICK_FOREST.trees)
    return Plan(
        mode="quick" if quick else "full",
        # Fewer than 3 rounds give no idea of the noise; quick mode only proves the harness runs.
        rounds=pick(args.rounds, 5, 1, least=1 if quick else 3),
        # Quick runs last 2 s: the slowest configuration (the naive port's forest under 64
        # connections) answers its first requests only after about a second.
        duration_s=pick(args.duration, 6, 2),
        warmup_s=pick(args.warmup, 2, 0, least=0),
        bulk_repeats=pick(args.bulk_repeats, 7, 2),
        stream_rows=pick(args.stream_rows, FULL_ROWS, QUICK_ROWS),
        forest=ForestSpec(trees=trees),
        sections=tuple(section for section in SECTIONS if section not in args.skip),
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
    )


def _machine_problems(plan: Plan) -> list[str]:
    tools = ["wrk", "taskset"] + (["h2load"] if "grpc" in plan.sections else [])
    problems = [f"`{tool}` is not installed" for tool in tools if not shutil.which(tool)]
    allowed = os.sched_getaffinity(0)
    for role, cpu in (("server", plan.server_cpu), ("client", plan.client_cpu)):
        if cpu not in allowed:
            problems.append(f"{role} core {cpu} is not available (cores: {sorted(allowed)})")
    return problems


def _git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{commit} with uncommitted changes" if git("status", "--porcelain") else commit


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, from /proc/loadavg where there is one."""
    try:
        return [float(field) for field in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return list(os.getloadavg())


def _rounds_dropped(plan: Plan, throughput: list[ScenarioResult]) -> dict[str, Any]:
    """Rounds run but not reported. The harness drops none (a slow round stays in, and shows in
    the min–max): counted from the results all the same, so a change that drops some says so."""
    planned = sum(plan.rounds * len(scenario.configurations) for scenario in throughput)
    kept = sum(len(result.rounds) for scenario in throughput for result in scenario.configurations)
    dropped = planned - kept
    why = (
        "the harness keeps every round, slow ones included"
        if dropped == 0
        else "rounds missing from the results"
    )
    return {"count": dropped, "why": why}


def _run_against_servers(
    plan: Plan, store: Path, work_dir: Path, meta: dict[str, Any]
) -> tuple[
    list[ScenarioResult],
    BulkResult | None,
    list[ModelBackend],
    StreamResult | None,
    ExplainResult | None,
]:
    """The throughput, bulk, stream and explain sections, which share one server per
    configuration."""
    wanted = set(plan.sections)
    if not wanted & {"throughput", "bulk", "explain"}:
        return [], None, [], None, None
    configurations: tuple[Configuration, ...] = (
        CONFIGURATIONS
        if "throughput" in wanted
        else BULK_CONFIGURATIONS
        if "bulk" in wanted
        else (MODELPORT,)
    )
    scenarios = []
    for scenario in default_scenarios():
        if (store / scenario.model).is_dir():
            scenarios.append(scenario)
        else:
            logger.warning("%s is not in %s: %s left out", scenario.model, store, scenario.key)
    if not scenarios:
        raise ServerError(f"{store} holds none of {', '.join(MODELS)}")
    servers: list[RunningServer] = []
    try:
        # Started together (they boot side by side on the server core), then waited for.
        for configuration in configurations:
            servers.append(
                start_server(configuration, store=store, cpu=plan.server_cpu, log_dir=work_dir)
            )
        for server in servers:
            wait_ready(server, scenarios[0].path, scenarios[0].body)
        by_key = {server.configuration.key: server for server in servers}
        models = [model for model in MODELS if (store / model).is_dir()]
        backends = read_backends(by_key["modelport"], models)
        logger.info("backends: %s", ", ".join(backend.render() for backend in backends))
        cookie = returning_client_cookie(by_key["modelport"], scenarios[0])
        meta["wrk_cookie"] = cookie
        throughput = []
        if "throughput" in wanted:
            for scenario in scenarios:
                throughput.append(
                    run_scenario(
                        scenario,
                        servers,
                        rounds=plan.rounds,
                        duration_s=plan.duration_s,
                        warmup_s=plan.warmup_s,
                        client_cpu=plan.client_cpu,
                        work_dir=work_dir,
                        cookie=cookie,
                    )
                )
        bulk = None
        if "bulk" in wanted:
            with httpx.Client(timeout=300) as client:
                bulk = run_bulk(store, by_key, repeats=plan.bulk_repeats, client=client)
        stream = None
        if "stream" in wanted:
            stream = run_stream(
                store,
                rows=plan.stream_rows,
                work_dir=work_dir,
                server_cpu=plan.server_cpu,
                server=by_key["modelport"],
            )
        explain = None
        if "explain" in wanted:
            explain = run_explain(
                by_key["modelport"],
                store=store,
                rounds=plan.rounds,
                duration_s=plan.duration_s,
                warmup_s=plan.warmup_s,
                server_cpu=plan.server_cpu,
                client_cpu=plan.client_cpu,
                work_dir=work_dir,
                cookie=cookie,
            )
        return throughput, bulk, backends, stream, explain
    finally:
        for server in servers:
            stop_server(server)


def run(plan: Plan, *, store: Path | None, work_dir: Path, cache_dir: Path) -> BenchReport:
    started = time.monotonic()
    meta: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": plan.mode,
        "commit": _git_commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "wrk": wrk_version(),
        "h2load": h2load_version(),
        "rounds": plan.rounds,
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "bulk_repeats": plan.bulk_repeats,
        "server_cpu": plan.server_cpu,
        "client_cpu": plan.client_cpu,
        "sections": list(plan.sections),
        # Other work on the machine is noise the min–max columns show; this says how much ran.
        "load_average_at_start": [round(value, 2) for value in _load_average()],
    }
    needs_store = {"throughput", "bulk", "stream", "grpc", "explain", "overload"}
    if store is None and needs_store & set(plan.sections):
        store = build_store(work_dir)
    throughput: list[ScenarioResult] = []
    bulk: BulkResult | None = None
    backends: list[ModelBackend] = []
    stream: StreamResult | None = None
    explain: ExplainResult | None = None
    if store is not None:
        throughput, bulk, backends, stream, explain = _run_against_servers(
            plan, store, work_dir, meta
        )
        if stream is None and "stream" in plan.sections:  # alone: a server of its own
            stream = run_stream(
                store, rows=plan.stream_rows, work_dir=work_dir, server_cpu=plan.server_cpu
            )
    meta["rounds_dropped"] = _rounds_dropped(plan, throughput)
    grpc: list[GrpcScenarioResult] = []
    if store is not None and "grpc" in plan.sections:
        grpc = run_grpc_section(
            store,
            rounds=plan.rounds,
            duration_s=plan.duration_s,
            warmup_s=plan.warmup_s,
            server_cpu=plan.server_cpu,
            client_cpu=plan.client_cpu,
            work_dir=work_dir,
        )
    memory: MemoryResult | None = None
    if "memory" in plan.sections:
        memory = run_memory(
            plan.forest, cache_dir=cache_dir, work_dir=work_dir, cpu=plan.server_cpu
        )
    overload: OverloadResult | None = None
    if "overload" in plan.sections and store is not None:
        overload = run_overload(
            store,
            work_dir=work_dir,
            quick=plan.mode == "quick",
            server_cpu=plan.server_cpu,
            client_cpu=plan.client_cpu,
        )
    meta["load_average_at_end"] = [round(value, 2) for value in _load_average()]
    meta["wall_s"] = round(time.monotonic() - started, 1)
    return BenchReport(
        meta=meta,
        throughput=throughput,
        bulk=bulk,
        memory=memory,
        backends=backends,
        stream=stream,
        grpc=grpc,
        explain=explain,
        overload=overload,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args = build_parser().parse_args(argv)
    plan = _plan(args)
    problems = _machine_problems(plan)
    if problems:
        logger.error("cannot benchmark: %s", "; ".join(problems))
        return 2
    if plan.server_cpu == plan.client_cpu:
        logger.warning("servers and load share core %d: figures will be low", plan.server_cpu)
    if args.output_dir is not None:
        output_dir: Path = args.output_dir
    elif plan.mode == "quick":
        output_dir = Path(tempfile.mkdtemp(prefix="modelport-bench-quick-"))
    else:
        output_dir = DEFAULT_RESULTS
    # The harness is the client: keep it (and the in-process predict it times) off the servers' core.
    os.sched_setaffinity(0, {plan.client_cpu})
    work_dir = Path(tempfile.mkdtemp(prefix="modelport-bench-"))
    try:
        report = run(plan, store=args.model_dir, work_dir=work_dir, cache_dir=args.cache_dir)
    except (ServerError, LoadError) as exc:
        logger.error("benchmark failed: %s", exc)
        return 1
    finally:
        if args.keep_work_dir:
            logger.info("work directory kept: %s", work_dir)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    paths = write_report(report, output_dir)
    sys.stdout.write(to_markdown(report))
    logger.info(
        "wrote %s in %.0f s", ", ".join(str(path) for path in paths.values()), report.meta["wall_s"]
    )
    return 0

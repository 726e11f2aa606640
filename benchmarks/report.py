"""The results as JSON, a markdown table and (through benchmarks.chart) a PNG chart."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bulk import BulkResult
from benchmarks.chart import CHART_LABELS, draw_chart, ms, rate
from benchmarks.explain import ExplainResult, explain_table
from benchmarks.grpc_section import GrpcScenarioResult, grpc_table
from benchmarks.memory import MemoryResult
from benchmarks.overload import OverloadResult
from benchmarks.overload_report import overload_markdown
from benchmarks.stats import Spread, TargetCheck
from benchmarks.store import ModelBackend
from benchmarks.streaming import StreamResult, stream_table
from benchmarks.targets import ISSUE
from benchmarks.throughput import REFERENCES, ConfigurationResult, ScenarioResult

REFERENCE_HEADINGS = {
    "flask": "Flask",
    "naive": "naive FastAPI",
    "constant": "constant route",
    "bare": "bare ASGI",
}
SUMMARY_KEYS = ("flask", "naive", "constant", "bare", "modelport")


@dataclass(frozen=True)
class BenchReport:
    meta: dict[str, Any]
    throughput: list[ScenarioResult]
    bulk: BulkResult | None
    memory: MemoryResult | None
    # The backend of each benchmarked model's default version, as modelport reported it.
    backends: list[ModelBackend] = dataclasses.field(default_factory=list)
    # Issue 18's overload scenario (its targets are its own, not among issue 16's).
    overload: OverloadResult | None = None
    # Issue 21's bulk stream (its targets are reported with it, not among issue 16's).
    stream: StreamResult | None = None
    # Issue 17's gRPC beside REST.
    grpc: list[GrpcScenarioResult] = dataclasses.field(default_factory=list)
    # Issue 19's explanations and payload logging.
    explain: ExplainResult | None = None


# -- JSON -----------------------------------------------------------------------------------------


# Properties written beside a dataclass's fields, so readers of the JSON need not recompute them.
_VERDICTS: dict[type, tuple[str, ...]] = {TargetCheck: ("met",), MemoryResult: ("reload_ok",)}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)] + list(_VERDICTS.get(type(value), ()))
        return {name: _jsonable(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def to_json(report: BenchReport) -> str:
    return json.dumps(_jsonable(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# -- markdown -------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _spread(spread: Spread, render: Callable[[float], str]) -> str:
    return f"{render(spread.median)} ({render(spread.min)}–{render(spread.max)})"


def _ratio(spread: Spread) -> str:
    return f"{spread.median:.2f}× ({spread.min:.2f}–{spread.max:.2f})"


def _targets(checks: Sequence[TargetCheck]) -> str:
    return "; ".join(check.render() for check in checks)


def _scenario_cell(result: ConfigurationResult | None, latency: bool) -> str:
    if result is None:
        return "—"
    return _spread(result.p50_ms, ms) if latency else _spread(result.requests_per_s, rate)


def _summary_table(report: BenchReport) -> list[str]:
    """One line per measurement: every configuration's median (min–max) beside modelport's
    verdicts on the targets; footnotes say why a cell is empty, and which backend served."""
    headings = [CHART_LABELS[key] for key in SUMMARY_KEYS]
    lines = [
        "### Summary",
        "",
        "| measurement | " + " | ".join(headings) + f" | modelport against {ISSUE}'s targets |",
        "|" + "---|" * (len(SUMMARY_KEYS) + 2),
    ]
    footnotes: list[str] = []
    for scenario in report.throughput:
        latency = scenario.metric == "p50_ms"
        by_key = {result.key: result for result in scenario.configurations}
        cells = []
        for key in SUMMARY_KEYS:
            if key in scenario.left_out:
                footnotes.append(f"{CHART_LABELS[key]}, {scenario.key}: {scenario.left_out[key]}")
                cells.append(f"[{len(footnotes)}]")
            else:
                cells.append(_scenario_cell(by_key.get(key), latency))
        unit = "p50 ms" if latency else "req/s"
        targets = _targets(by_key["modelport"].targets) if "modelport" in by_key else ""
        targets = targets or "none set"
        lines.append(f"| {scenario.title}: {unit} | " + " | ".join(cells) + f" | {targets} |")
    if report.bulk is not None:
        for timing in report.bulk.timings:
            if timing.target is not None:
                lines.append(
                    f"| {report.bulk.rows:,} rows, {timing.label.removeprefix('modelport: ')}: "
                    f"× in-process predict | | | | | {_ratio(timing.ratio_to_predict)} | "
                    f"{timing.target.render()} |"
                )
    if report.memory is not None:
        memory = report.memory
        reload_mark = "✓" if memory.reload_ok else "✗"
        lines.append(
            f"| {memory.forest.artifact_mb:.0f} MB forest: private MB each worker beyond the "
            f"first adds | | | | | {memory.added_private_mb_per_worker:.1f} | "
            f"{_targets(memory.targets)}; also checked: {memory.reload_check.render()}, serves "
            f"v2 after SIGHUP {reload_mark} |"
        )
    lines.append("")
    lines += [f"[{number}] {note}" for number, note in enumerate(footnotes, start=1)]
    if footnotes:
        lines.append("")
    if report.backends:
        backends = ", ".join(backend.render() for backend in report.backends)
        lines += [
            f"Backends (each model's default version, from `GET /models/{{name}}`): {backends}.",
            "",
        ]
    return lines


def _scenario_table(scenario: ScenarioResult) -> list[str]:
    latency = scenario.metric == "p50_ms"
    ratio_prefix = "p50 " if latency else ""
    headings = ["configuration"]
    headings += ["p50 ms", "p99 ms", "req/s"] if latency else ["req/s", "p50 ms", "p99 ms"]
    headings += ["server CPU", "non-2xx / socket errors"]
    headings += [f"{ratio_prefix}× {REFERENCE_HEADINGS[reference.key]}" for reference in REFERENCES]
    headings += ["target"]
    lines = [
        f"### {scenario.title}",
        "",
        (
            "Median p50 latency of a lone client (lower is better); ratios are p50 over the "
            "reference's p50."
            if latency
            else "Median requests per second (higher is better); ratios are req/s over the "
            "reference's req/s."
        )
        + " Server CPU: the share of one core the server's processes used during the runs.",
        "",
        "| " + " | ".join(headings) + " |",
        "|" + "---|" * len(headings),
    ]
    for result in scenario.configurations:
        rps = _spread(result.requests_per_s, rate)
        p50 = _spread(result.p50_ms, ms)
        p99 = _spread(result.p99_ms, ms)
        label = f"**{result.label}**" if result.key == "modelport" else result.label
        cells = [label, *([p50, p99, rps] if latency else [rps, p50, p99])]
        cells.append(_spread(result.server_cpu_share, _percent))
        cells.append(f"{result.non_2xx} / {result.socket_errors}")
        for reference in REFERENCES:
            ratio = result.ratios.get(reference.key)
            cells.append("—" if ratio is None or reference.key == result.key else _ratio(ratio))
        cells.append(_targets(result.targets))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key, why in scenario.left_out.items():
        lines += [f"Not measured: {CHART_LABELS[key]}, which {why}", ""]
    return lines


def _bulk_table(bulk: BulkResult) -> list[str]:
    lines = [
        f"### {bulk.rows:,} rows to {bulk.model}, one request at a time",
        "",
        f"Median of {bulk.repeats} (min–max), each repetition timing every item in turn; the "
        "ratio is to in-process `predict(X)` in the same repetition.",
        "",
        "| what | ms | × in-process predict | body | failures | target |",
        "|---|---|---|---|---|---|",
    ]
    for timing in bulk.timings:
        body = f"{timing.body_bytes / 2**20:.1f} MB" if timing.body_bytes else "—"
        target = timing.target.render() if timing.target else ""
        lines.append(
            f"| {timing.label} | {_spread(timing.milliseconds, ms)} | "
            f"{_ratio(timing.ratio_to_predict)} | {body} | {timing.failures} | {target} |"
        )
    return [*lines, ""]


def _memory_table(memory: MemoryResult) -> list[str]:
    forest = memory.forest
    source = "from cache" if forest.from_cache else f"built in {forest.build_s:.0f} s"
    lines = [
        "### Memory: modelport serving one large forest",
        "",
        f"A {forest.trees}-tree random forest, {forest.nodes / 1e6:.2f} M nodes, "
        f"{forest.artifact_mb:.0f} MB artifact ({source}). Read from `/proc/PID/smaps_rollup` "
        "after every worker answered requests; private = Private_Clean + Private_Dirty.",
        "",
        "| server | process | Rss MB | Pss MB | private MB | serves |",
        "|---|---|---|---|---|---|",
    ]
    for stage in memory.stages:
        version = f"v{stage.served_version}" if stage.served_version else "?"
        warmed = "" if stage.warmed else " (a worker got no requests)"
        for process in stage.processes:
            lines.append(
                f"| {stage.label}{warmed} | {process.role} {process.pid} | {process.rss_mb:.1f} | "
                f"{process.pss_mb:.1f} | {process.private_mb:.1f} | {version} |"
            )
        lines.append(
            f"| {stage.label} | **total** | | **{stage.total_pss_mb:.1f}** | "
            f"**{stage.total_private_mb:.1f}** | |"
        )
    reload_mark = "✓" if memory.reload_ok else "✗"
    served = f"v{memory.reload_served_version}" if memory.reload_served_version else "nothing new"
    lines += [
        "",
        f"- Each worker beyond the first adds **{memory.added_private_mb_per_worker:.1f} MB** "
        f"private (total Pss {memory.added_pss_mb_per_worker:+.1f} MB).",
        f"- After `kill -HUP` with v2 copied into the store: serves {served} "
        f"{memory.reload_s:.1f} s later {reload_mark} (the store then holds v1 and v2).",
        *(f"- Target ({ISSUE}): {check.render()}" for check in memory.targets),
        f"- Also checked (issue 6's bound, not among {ISSUE}'s targets): "
        f"{memory.reload_check.render()}",
        "",
    ]
    return lines


def _loads(averages: Any) -> str:
    return " / ".join(f"{value:.2f}" for value in averages) if averages else "?"


def _dropped(meta: dict[str, Any]) -> str:
    dropped = meta.get("rounds_dropped")
    if not dropped:
        return "rounds dropped: not recorded"
    count = dropped["count"]
    return f"{count} round{'' if count == 1 else 's'} dropped ({dropped['why']})"


def to_markdown(report: BenchReport) -> str:
    meta = report.meta
    warmup = f"after a {meta['warmup_s']} s warm-up" if meta["warmup_s"] else "no warm-up"
    lines = [
        f"## modelport benchmark: {meta['started']} ({meta['mode']} mode)",
        "",
        f"Load average at start {_loads(meta.get('load_average_at_start'))} (1, 5, 15 min, "
        f"/proc/loadavg) on {meta['cores']} cores; {_dropped(meta)}.",
        "",
        f"Commit {meta['commit']}; {meta['cpu']}; Python {meta['python']}; {meta['wrk']}. "
        f"Every server runs one worker pinned to core {meta['server_cpu']}; wrk "
        f"(`-t1 --timeout 10s`) and the harness run on core {meta['client_cpu']}. "
        f"{meta['rounds']} interleaved rounds of {meta['duration_s']} s per configuration, "
        f"{warmup}; medians with (min–max) over the rounds; ratios are taken round by round, "
        f"then their median (min–max). Load average at end "
        f"{_loads(meta.get('load_average_at_end'))}; wall time {meta.get('wall_s', '?')} s.",
        "",
    ]
    if meta.get("wrk_cookie"):
        lines += [
            f"wrk sends `Cookie: {meta['wrk_cookie']}`, as a client that keeps cookies does: "
            "modelport's iris canary split maps it to v1, the version the other apps load.",
            "",
        ]
    lines += _summary_table(report)
    for scenario in report.throughput:
        lines += _scenario_table(scenario)
    if report.bulk is not None:
        lines += _bulk_table(report.bulk)
    if report.stream is not None:
        lines += stream_table(report.stream)
    if report.memory is not None:
        lines += _memory_table(report.memory)
    if report.grpc:
        lines += grpc_table(report.grpc)
    if report.explain is not None:
        lines += explain_table(report.explain)
    checks = all_targets(report)
    if checks:
        met = sum(check.met for check in checks)
        lines += [f"**Targets met: {met} of {len(checks)}.**", ""]
    if report.overload is not None:  # after issue 16's count: its targets are issue 18's
        lines += overload_markdown(report.overload)
    return "\n".join(lines)


def labelled_targets(report: BenchReport) -> list[tuple[str, TargetCheck]]:
    """Every target checked, with the measurement it belongs to."""
    checks = [
        (scenario.key, check)
        for scenario in report.throughput
        for result in scenario.configurations
        for check in result.targets
    ]
    if report.bulk is not None:
        checks += [
            (f"{report.bulk.rows:,} rows, {timing.key.removeprefix('modelport_')}", timing.target)
            for timing in report.bulk.timings
            if timing.target is not None
        ]
    if report.memory is not None:
        checks += [("memory", check) for check in report.memory.targets]
    checks += [(f"gRPC {result.key}", check) for result in report.grpc for check in result.targets]
    return checks


def all_targets(report: BenchReport) -> list[TargetCheck]:
    return [check for _, check in labelled_targets(report)]


def write_report(report: BenchReport, output_dir: Path) -> dict[str, Path]:
    """`latest.json`, `latest.md` and `latest.png` in `output_dir`, each replaced atomically."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_dir / f"latest.{kind}" for kind in ("json", "md", "png")}
    for kind, text in (("json", to_json(report)), ("md", to_markdown(report))):
        staging = paths[kind].with_suffix(f".{kind}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, paths[kind])
    draw_chart(report, paths["png"], labelled_targets(report))
    return paths

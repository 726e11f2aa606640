"""The results as JSON, a markdown table and a PNG chart."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: draw straight to a file

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.axes import Axes  # noqa: E402

from benchmarks.bulk import BulkResult  # noqa: E402
from benchmarks.memory import ADDED_PRIVATE_TARGET_MB, MemoryResult  # noqa: E402
from benchmarks.stats import Spread, TargetCheck  # noqa: E402
from benchmarks.throughput import (  # noqa: E402
    REFERENCES,
    ConfigurationResult,
    ScenarioResult,
)

REFERENCE_HEADINGS = {
    "flask": "Flask",
    "naive": "naive FastAPI",
    "constant": "constant route",
    "bare": "bare ASGI",
}
MODELPORT_COLOUR = "#d95f02"
OTHER_COLOUR = "#7570b3"  # the apps modelport replaces
CEILING_COLOUR = "#b3b3b3"


@dataclass(frozen=True)
class BenchReport:
    meta: dict[str, Any]
    throughput: list[ScenarioResult]
    bulk: BulkResult | None
    memory: MemoryResult | None


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


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


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
    return _spread(result.p50_ms, _ms) if latency else _spread(result.requests_per_s, _rate)


def _summary_table(report: BenchReport) -> list[str]:
    """One line per measurement: every configuration's median (min–max) beside modelport's
    verdicts on the targets."""
    keys = ["flask", "naive", "constant", "bare", "modelport"]
    headings = [CHART_LABELS[key] for key in keys]
    lines = [
        "### Summary",
        "",
        "| measurement | " + " | ".join(headings) + " | modelport against the targets |",
        "|" + "---|" * (len(keys) + 2),
    ]
    for scenario in report.throughput:
        latency = scenario.metric == "p50_ms"
        by_key = {result.key: result for result in scenario.configurations}
        cells = [_scenario_cell(by_key.get(key), latency) for key in keys]
        unit = "p50 ms" if latency else "req/s"
        targets = _targets(by_key["modelport"].targets) if "modelport" in by_key else ""
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
            f"{_targets(memory.targets)}; serves v2 after SIGHUP {reload_mark} |"
        )
    return [*lines, ""]


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
        rate = _spread(result.requests_per_s, _rate)
        p50 = _spread(result.p50_ms, _ms)
        p99 = _spread(result.p99_ms, _ms)
        label = f"**{result.label}**" if result.key == "modelport" else result.label
        cells = [label, *([p50, p99, rate] if latency else [rate, p50, p99])]
        cells.append(_spread(result.server_cpu_share, _percent))
        cells.append(f"{result.non_2xx} / {result.socket_errors}")
        for reference in REFERENCES:
            ratio = result.ratios.get(reference.key)
            cells.append("—" if ratio is None or reference.key == result.key else _ratio(ratio))
        cells.append(_targets(result.targets))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


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
            f"| {timing.label} | {_spread(timing.milliseconds, _ms)} | "
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
        *(f"- Target: {check.render()}" for check in memory.targets),
        "",
    ]
    return lines


def _loads(averages: Any) -> str:
    return " / ".join(f"{value:.2f}" for value in averages) if averages else "?"


def to_markdown(report: BenchReport) -> str:
    meta = report.meta
    warmup = f"after a {meta['warmup_s']} s warm-up" if meta["warmup_s"] else "no warm-up"
    lines = [
        f"## modelport benchmark: {meta['started']} ({meta['mode']} mode)",
        "",
        f"Commit {meta['commit']}; {meta['cpu']}, {meta['cores']} cores; Python "
        f"{meta['python']}; {meta['wrk']}. Every server runs one worker pinned to core "
        f"{meta['server_cpu']}; wrk (`-t1 --timeout 10s`) and the harness run on core "
        f"{meta['client_cpu']}. {meta['rounds']} interleaved rounds of {meta['duration_s']} s "
        f"per configuration, {warmup}; medians with (min–max) over "
        "the rounds; ratios are taken round by round, then their median (min–max). Load "
        f"average (1, 5, 15 min) at start {_loads(meta.get('load_average_at_start'))}, at end "
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
    if report.memory is not None:
        lines += _memory_table(report.memory)
    checks = all_targets(report)
    if checks:
        met = sum(check.met for check in checks)
        lines += [f"**Targets met: {met} of {len(checks)}.**", ""]
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
    return checks


def all_targets(report: BenchReport) -> list[TargetCheck]:
    return [check for _, check in labelled_targets(report)]


# -- chart ----------------------------------------------------------------------------------------

CHART_LABELS = {
    "flask": "Flask prototype",
    "naive": "naive FastAPI",
    "constant": "constant route",
    "bare": "bare ASGI",
    "modelport": "modelport",
    "predict": "predict (in-process)",
    "predict_proba": "predict_proba (in-process)",
    "predict_both": "both (in-process)",
    "modelport_json": "modelport JSON arrays",
    "modelport_records": "modelport JSON records",
    "modelport_csv": "modelport CSV upload",
    "naive_json": "naive FastAPI JSON",
    "flask_json": "Flask JSON",
}


def _colour(key: str) -> str:
    if key.startswith("modelport"):
        return MODELPORT_COLOUR
    if key in ("constant", "bare") or key.startswith("predict"):
        return CEILING_COLOUR  # ceilings, and the in-process floor
    return OTHER_COLOUR


def _bars(
    axes: Axes,
    keys: Sequence[str],
    spreads: Sequence[Spread],
    *,
    title: str,
    unit: str,
    render: Callable[[float], str],
    log: bool = False,
) -> None:
    """Horizontal bars of medians, whiskers from min to max, the median written beside."""
    positions = list(range(len(keys)))[::-1]  # first key on top
    medians = [spread.median for spread in spreads]
    errors = [
        [spread.median - spread.min for spread in spreads],
        [spread.max - spread.median for spread in spreads],
    ]
    axes.barh(
        positions,
        medians,
        xerr=errors,
        color=[_colour(key) for key in keys],
        capsize=3,
        ecolor="#333333",
    )
    axes.set_yticks(positions, [CHART_LABELS.get(key, key) for key in keys])
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(unit)
    if log:
        # Throughputs span two orders of magnitude: on a log axis the slow ones stay visible.
        axes.set_xscale("log")
        axes.set_xlim(right=max(spread.max for spread in spreads) * 8)
    else:
        axes.set_xlim(right=max(spread.max for spread in spreads) * 1.3)
    for position, spread in zip(positions, spreads, strict=True):
        axes.text(spread.max, position, f"  {render(spread.median)}", va="center", fontsize=8)


def _memory_bars(axes: Axes, memory: MemoryResult) -> None:
    stages = memory.stages
    labels = ["1 worker", "2 workers", "2 workers,\nafter SIGHUP + v2"][: len(stages)]
    positions = list(range(len(stages)))
    width = 0.38
    series = (
        ("total Pss", [stage.total_pss_mb for stage in stages], OTHER_COLOUR, -width / 2),
        (
            "largest worker private",
            [stage.max_worker_private_mb for stage in stages],
            MODELPORT_COLOUR,
            width / 2,
        ),
    )
    for name, values, colour, offset in series:
        bars = axes.bar([p + offset for p in positions], values, width, label=name, color=colour)
        axes.bar_label(bars, [f"{value:.0f}" for value in values], fontsize=8)
    axes.axhline(ADDED_PRIVATE_TARGET_MB, color="#333333", linestyle=":", linewidth=1)
    axes.set_xticks(positions, labels)
    axes.set_ylabel("MB")
    axes.legend(fontsize=8, loc="upper left")
    axes.margins(y=0.15)
    axes.set_title(
        f"modelport memory, {memory.forest.trees}-tree forest ({memory.forest.artifact_mb:.0f} MB); "
        f"dotted: {ADDED_PRIVATE_TARGET_MB:.0f} MB",
        fontsize=10,
    )


def draw_chart(report: BenchReport, path: Path) -> None:
    figure, grid = plt.subplots(2, 3, figsize=(18, 9), layout="constrained")
    panels = list(grid.flat)
    for axes, scenario in zip(panels, report.throughput, strict=False):
        latency = scenario.metric == "p50_ms"
        results = scenario.configurations
        _bars(
            axes,
            [result.key for result in results],
            [result.p50_ms if latency else result.requests_per_s for result in results],
            title=scenario.title,
            unit="p50 latency, ms (lower is better)"
            if latency
            else "requests/s, log scale (higher is better)",
            render=_ms if latency else _rate,
            log=not latency,
        )
    if report.bulk is not None:
        timings = report.bulk.timings
        _bars(
            panels[3],
            [timing.key for timing in timings],
            [timing.milliseconds for timing in timings],
            title=f"{report.bulk.rows:,} rows to {report.bulk.model}, one request",
            unit="ms (lower is better)",
            render=_ms,
        )
    if report.memory is not None:
        _memory_bars(panels[4], report.memory)
    for axes in panels[len(report.throughput) : 3]:
        axes.axis("off")
    if report.bulk is None:
        panels[3].axis("off")
    if report.memory is None:
        panels[4].axis("off")
    summary = panels[5]
    summary.axis("off")
    lines = [
        textwrap.fill(f"{label}: {check.render()}", 64, subsequent_indent="    ")
        for label, check in labelled_targets(report)
    ]
    summary.text(
        0,
        1,
        "Targets (issue 6), modelport\n\n" + ("\n".join(lines) or "none checked"),
        va="top",
        fontsize=9,
        family="monospace",
    )
    figure.suptitle(
        "modelport vs the Flask prototype, a naive FastAPI port and two ceilings: one worker "
        f"on one core ({report.meta['started']}, {report.meta['mode']} mode; whiskers: min–max)",
        fontsize=12,
    )
    staging = path.with_suffix(".png.tmp")
    figure.savefig(staging, dpi=80, format="png")
    plt.close(figure)
    os.replace(staging, path)


def write_report(report: BenchReport, output_dir: Path) -> dict[str, Path]:
    """`latest.json`, `latest.md` and `latest.png` in `output_dir`, each replaced atomically."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_dir / f"latest.{kind}" for kind in ("json", "md", "png")}
    for kind, text in (("json", to_json(report)), ("md", to_markdown(report))):
        staging = paths[kind].with_suffix(f".{kind}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, paths[kind])
    draw_chart(report, paths["png"])
    return paths

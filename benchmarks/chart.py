"""The PNG chart: a panel per throughput scenario, the bulk timings, memory and the verdicts.

The labels and number formats live here and the markdown table borrows them, so the chart and the
table name and round things alike.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # no display: draw straight to a file

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.axes import Axes  # noqa: E402

from benchmarks.memory import MemoryResult  # noqa: E402
from benchmarks.stats import Spread, TargetCheck  # noqa: E402
from benchmarks.targets import ADDED_PRIVATE_TARGET_MB, ISSUE  # noqa: E402

if TYPE_CHECKING:
    from benchmarks.report import BenchReport

MODELPORT_COLOUR = "#d95f02"
OTHER_COLOUR = "#7570b3"  # the apps modelport replaces
CEILING_COLOUR = "#b3b3b3"
THROUGHPUT_PANELS = 6


def rate(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


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


def draw_chart(report: BenchReport, path: Path, targets: Sequence[tuple[str, TargetCheck]]) -> None:
    """Three rows: the throughput scenarios (64 connections, then 1), then bulk, memory and
    `targets`, each with the measurement it belongs to."""
    figure, grid = plt.subplots(3, 3, figsize=(18, 13), layout="constrained")
    panels = list(grid.flat)
    scenarios = report.throughput[:THROUGHPUT_PANELS]
    for axes, scenario in zip(panels, scenarios, strict=False):
        latency = scenario.metric == "p50_ms"
        results = scenario.configurations
        _bars(
            axes,
            [result.key for result in results],
            [result.p50_ms if latency else result.requests_per_s for result in results],
            title=textwrap.fill(scenario.title, 60),
            unit="p50 latency, ms (lower is better)"
            if latency
            else "requests/s, log scale (higher is better)",
            render=ms if latency else rate,
            log=not latency,
        )
    for axes in panels[len(scenarios) : THROUGHPUT_PANELS]:
        axes.axis("off")
    bulk_panel, memory_panel, summary = panels[THROUGHPUT_PANELS:]
    if report.bulk is not None:
        timings = report.bulk.timings
        _bars(
            bulk_panel,
            [timing.key for timing in timings],
            [timing.milliseconds for timing in timings],
            title=f"{report.bulk.rows:,} rows to {report.bulk.model}, one request",
            unit="ms (lower is better)",
            render=ms,
        )
    else:
        bulk_panel.axis("off")
    if report.memory is not None:
        _memory_bars(memory_panel, report.memory)
    else:
        memory_panel.axis("off")
    summary.axis("off")
    lines = [
        textwrap.fill(f"{label}: {check.render()}", 64, subsequent_indent="    ")
        for label, check in targets
    ]
    summary.text(
        0,
        1,
        f"Targets ({ISSUE}), modelport\n\n" + ("\n".join(lines) or "none checked"),
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

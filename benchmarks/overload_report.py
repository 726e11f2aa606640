"""The overload scenario's tables for latest.md (the measurement: benchmarks/overload.py)."""

from __future__ import annotations

from benchmarks.overload import ISSUE, KNEE, OVERLOAD_FACTOR, TIMEOUT_OVER_P99, OverloadResult


def overload_markdown(result: OverloadResult) -> list[str]:
    """The scenario's tables for latest.md."""
    loads = " / ".join(f"{value:.2f}" for value in result.load_average)
    lines = [
        f"### Overload: the {result.model} forest at {OVERLOAD_FACTOR}× its saturating "
        f"concurrency ({ISSUE})",
        "",
        "One worker, pinned; single-row requests. Throughput by concurrency (wrk); the "
        f"saturating concurrency is the smallest reaching {KNEE:.0%} of the highest:",
        "",
        "| connections | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|",
        *(
            f"| {s.connections} | {s.requests_per_s:.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | "
            f"{s.errors} |"
            for s in result.steps
        ),
        "",
        f"Saturating concurrency: **{result.saturation_connections}**. Then, timed per request "
        "on the client (benchmarks/overload.lua): that many connections without a timeout; "
        f"{OVERLOAD_FACTOR}× as many with `X-Request-Timeout` = {TIMEOUT_OVER_P99:g}× the p99 "
        "at saturation, first with clients that wait Retry-After when refused (judged), then "
        "with clients that send again at once (a retry storm, shown for what breaks: nothing "
        f"should). Load average at the start of the overload runs: {loads}.",
        "",
        "| run | connections | timeout | 200/s | 200 p50 / p99 ms | 429: count, p99 ms | "
        "504: count | other 5xx | late replies | socket errors | server: refused (deadline / "
        "queue full), expired |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = (
        ("saturation", result.saturation, None),
        ("× saturation, Retry-After honoured", result.overload, result.server),
        ("× saturation, retry storm", result.storm, result.storm_server),
    )
    for label, view, server in runs:
        if label.startswith("×"):
            label = f"{OVERLOAD_FACTOR}{label}"
        timeout = "—" if view.timeout_s is None else f"{view.timeout_s * 1000:.1f} ms"
        counts = "—"
        if server is not None:
            counts = (
                f"{server.get('refused_deadline_unreachable', 0):.0f} / "
                f"{server.get('refused_queue_full', 0):.0f}, "
                f"{server.get('deadline_expired', 0):.0f}"
            )
        lines.append(
            f"| {label} | {view.connections} | {timeout} | {view.ok_per_s:.0f} | "
            f"{view.ok.p50_ms:.2f} / {view.ok.p99_ms:.2f} | {view.refused.count}, "
            f"{view.refused.p99_ms:.2f} | {view.expired.count} | {view.other_5xx} | "
            f"{view.late} | {view.socket_errors} | {counts} |"
        )
    lines += [
        "",
        "The same replies as the server timed them (its access log: from the request reaching "
        "the app to its reply; the client also waited for the server's event loop to read and "
        "start the request), p50 / p99 / max ms (count):",
        "",
        "| run | 200 | 429 | 504 |",
        "|---|---|---|---|",
    ]
    for label, view, _ in runs:
        if label.startswith("×"):
            label = f"{OVERLOAD_FACTOR}{label}"
        cells = []
        for status in ("200", "429", "504"):
            seen = view.server_latency.get(status)
            cells.append(
                "—"
                if seen is None
                else f"{seen.p50_ms:.2f} / {seen.p99_ms:.2f} / {seen.max_ms:.2f} ({seen.count})"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        *(f"- Target ({ISSUE}): {check.render()}" for check in result.targets),
        "",
    ]
    return lines

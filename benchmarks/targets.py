"""Issue 16's targets for modelport, in one place: the sections measure, these judge.

Every throughput bound applies to the median of the per-round ratios (modelport over the
reference in the same round), never to a ratio of medians.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ISSUE = "issue 16"


@dataclass(frozen=True)
class TargetSpec:
    reference: str  # a configuration key
    bound: float
    direction: Literal["at_least", "at_most"]
    description: str


# Scenario key -> modelport's targets. A scenario absent here (hist-cancer) is reported without
# a verdict: the issue sets none for it.
THROUGHPUT_TARGETS: dict[str, list[TargetSpec]] = {
    "iris-64": [TargetSpec("constant", 0.9, "at_least", "≥ 0.9× constant route")],
    "forest-64": [
        TargetSpec("constant", 0.8, "at_least", "≥ 0.8× constant route"),
        TargetSpec("flask", 30, "at_least", "≥ 30× Flask"),
    ],
    "iris-1": [TargetSpec("constant", 1.5, "at_most", "p50 ≤ 1.5× constant route")],
    "forest-1": [TargetSpec("constant", 2.0, "at_most", "p50 ≤ 2× constant route")],
}

# Bulk item key -> (bound, description) on its time over in-process `predict` on the same rows.
BULK_TARGETS: dict[str, tuple[float, str]] = {
    "modelport_json": (1.3, "≤ 1.3× predict"),
    "modelport_csv": (1.2, "≤ 1.2× predict"),
}

# Private memory one more worker adds while serving the large forest.
ADDED_PRIVATE_TARGET_MB = 15.0
# Not one of issue 16's targets, so not counted among them: issue 6's bound on each worker after a
# SIGHUP reload, still checked and reported beside them.
RELOADED_WORKER_PRIVATE_MB = 25.0

# Issue 17: gRPC against REST on the same worker, same client, 64 connections (the gRPC section).
GRPC_TARGETS: dict[str, list[TargetSpec]] = {
    "iris-64": [TargetSpec("rest", 1.0, "at_least", "gRPC ≥ REST (issue 17)")],
}

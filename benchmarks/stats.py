"""Medians with their spread, and targets checked against them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Spread:
    """The median of some samples, with their min and max beside it (the machine's noise)."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples))


def paired_ratios(values: Sequence[float], references: Sequence[float]) -> Spread | None:
    """Ratios taken pair by pair (round by round), then summarised: a slow spell of the machine
    hits both sides of a pair, so these are steadier than a ratio of medians. Pairs whose
    reference is zero (a run that completed no request) have no ratio; None if none has one."""
    if len(values) != len(references):
        raise ValueError("ratios need paired samples")
    ratios = [
        value / reference
        for value, reference in zip(values, references, strict=True)
        if reference > 0
    ]
    return Spread.of(ratios) if ratios else None


@dataclass(frozen=True)
class TargetCheck:
    description: str  # e.g. "≥ 2.5× Flask prototype"
    value: float
    bound: float
    direction: Literal["at_least", "at_most"]
    unit: str = "×"

    @property
    def met(self) -> bool:
        if self.direction == "at_least":
            return self.value >= self.bound
        return self.value <= self.bound

    def render(self) -> str:
        mark = "✓" if self.met else "✗"
        value = f"{self.value:.2f}×" if self.unit == "×" else f"{self.value:.1f} {self.unit}"
        return f"{self.description}: {value} {mark}"

"""Metric updates gathered per event-loop turn (app.metrics.TurnMetrics): the same counts and
buckets as one update per event, written once per turn."""

import asyncio
import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from app.metrics import TurnMetrics, observe_all

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _histograms() -> tuple[Histogram, Histogram]:
    registry = CollectorRegistry()
    one = Histogram("one_by_one", "x", buckets=BUCKETS, registry=registry)
    gathered = Histogram("gathered", "x", buckets=BUCKETS, registry=registry)
    return one, gathered


def _buckets(histogram: Histogram) -> list[float]:
    return [s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_bucket")]


def _sum(histogram: Histogram) -> float:
    return next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_sum"))


def test_observe_all_fills_the_buckets_as_observe_does() -> None:
    one, gathered = _histograms()
    rng = random.Random(3)
    # Values on every bound exactly, just either side of them, and spread widely.
    values = [
        *BUCKETS,
        *(b * (1 + 1e-12) for b in BUCKETS),
        *(rng.expovariate(20) for _ in range(500)),
    ]
    values += [0.0, 11.0, 1e9]
    for value in values:
        one.observe(value)
    observe_all(gathered, values)
    assert _buckets(gathered) == _buckets(one)
    assert abs(_sum(gathered) - _sum(one)) <= 1e-9 * _sum(one)


def test_updates_on_a_loop_are_written_once_per_turn() -> None:
    counter = Counter("requests", "x", registry=CollectorRegistry())
    one, gathered = _histograms()
    metrics = TurnMetrics()

    async def scenario() -> tuple[float, float]:
        for index in range(10):
            metrics.inc(counter)
            metrics.observe(gathered, index / 100)
            one.observe(index / 100)
        before = counter._value.get()
        await asyncio.sleep(0)  # one turn
        return before, counter._value.get()

    before, after = asyncio.run(scenario())
    assert (before, after) == (0.0, 10.0)
    assert _buckets(gathered) == _buckets(one)


def test_updates_off_a_loop_are_written_at_once() -> None:
    counter = Counter("rows", "x", registry=CollectorRegistry())
    metrics = TurnMetrics()
    metrics.inc(counter, 5)
    assert counter._value.get() == 5.0

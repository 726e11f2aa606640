"""Deadlines, admission control and disconnects in the micro-batcher (app.serving.batching), on a
real fitted model whose estimator call the test holds open, so requests queue behind it without
any timing assumption. The model records every row it is asked to predict: a request whose rows
were dropped is one the estimator never saw."""

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from app.errors import ClientGone, DeadlineExceeded, Overloaded
from app.metrics import DEADLINE_EXPIRED, DISCONNECTED, QUEUE_WAIT, REFUSED, TURN_METRICS
from app.serving.admission import Throughput
from app.serving.batching import BatchPolicy, MicroBatcher
from app.serving.dataplane import DataPlane, Decoded
from app.serving.deadline import Deadline
from app.serving.model import LoadedModel, ModelOutput
from app.serving.registry import ModelRegistry, scan_store
from app.serving.schema import Rows
from schemas.cards import FeatureSpec
from tests.conftest import write_model

Result = TypeVar("Result")

ARMED = threading.Event()  # predict holds its thread only while armed (not at load)
ENTERED = threading.Event()
RELEASE = threading.Event()
SEEN: list[float] = []  # the first feature of every row predicted while armed


class HeldRegressor(LinearRegression):  # type: ignore[misc]  # sklearn is untyped
    """A real fitted regressor whose predict, while armed, records its rows and waits for the
    test to release it."""

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        if ARMED.is_set():
            SEEN.extend(float(value) for value in np.asarray(X, dtype=float)[:, 0])
            ENTERED.set()
            RELEASE.wait(timeout=30)
        result: np.ndarray[Any, Any] = super().predict(X)
        return result


@pytest.fixture
def held(tmp_path: Path) -> Iterator[LoadedModel]:
    xs = np.random.default_rng(5).uniform(-5, 5, size=(12, 2))
    write_model(
        tmp_path,
        HeldRegressor().fit(xs, 2 * xs[:, 0] - xs[:, 1]),
        name="held",
        task="regression",
        features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
    )
    model = scan_store(tmp_path, max_rows=100, trusted_types=[]).entries["held"].versions[1]
    for event in (ENTERED, RELEASE):
        event.clear()
    SEEN.clear()
    ARMED.set()
    yield model
    ARMED.clear()
    RELEASE.set()


def rows(first: float, count: int = 1) -> Rows:
    return [(first, 1.0)] * count


async def entered() -> None:
    """Until the held call has started in its thread."""
    assert await asyncio.to_thread(ENTERED.wait, 10), "the estimator call never started"


async def released(task: Awaitable[Result]) -> Result:
    RELEASE.set()
    return await asyncio.wait_for(task, timeout=20)


def count(metric: Any, **labels: str) -> float:
    """A counter's total or a histogram's count, once this turn's updates are written."""
    TURN_METRICS.flush()
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == labels and not sample.name.endswith("_created"):
                if sample.name.endswith(("_total", "_count")) or sample.name == family.name:
                    return float(sample.value)
    return 0.0


def labels(model: LoadedModel) -> dict[str, str]:
    return {"model": model.name, "version": str(model.version)}


def test_queued_rows_whose_deadline_passes_never_reach_the_estimator(held: LoadedModel) -> None:
    batcher = MicroBatcher(held, BatchPolicy())
    expired_before = count(DEADLINE_EXPIRED, **labels(held))

    async def scenario() -> tuple[Any, Any, Any]:
        running = asyncio.create_task(batcher.predict(rows(1.0)))
        await entered()
        short = asyncio.create_task(batcher.predict(rows(2.0), deadline=Deadline.after(0.05)))
        patient = asyncio.create_task(batcher.predict(rows(3.0), deadline=Deadline.after(60)))
        # Answered while the call it queued behind is still held: at its deadline, not after.
        with pytest.raises(DeadlineExceeded, match="before its rows reached the estimator"):
            await asyncio.wait_for(short, timeout=10)
        assert not RELEASE.is_set()
        assert batcher.queued_rows == 1  # only the patient request's row still counts
        return await released(asyncio.gather(running, patient)), short, patient

    (first, third), _, _ = asyncio.run(scenario())

    assert isinstance(first, ModelOutput) and isinstance(third, ModelOutput)
    assert SEEN == [1.0, 3.0]  # the expired request's row was never predicted
    assert batcher.queued_rows == 0
    # The data plane counts expiries; the batcher alone answers them.
    assert count(DEADLINE_EXPIRED, **labels(held)) == expired_before


def test_a_request_in_the_running_call_is_answered_at_its_deadline(held: LoadedModel) -> None:
    batcher = MicroBatcher(held, BatchPolicy())

    async def scenario() -> ModelOutput:
        call = asyncio.create_task(batcher.predict(rows(1.0), deadline=Deadline.after(0.05)))
        await entered()
        with pytest.raises(DeadlineExceeded, match="while the estimator ran"):
            await asyncio.wait_for(call, timeout=10)
        assert not RELEASE.is_set()  # the call is still running: the reply did not wait for it
        # The batcher stays busy until the call really ends: a newcomer queues behind it.
        later = asyncio.create_task(batcher.predict(rows(4.0)))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 1
        return await released(later)

    output = asyncio.run(scenario())

    assert isinstance(output, ModelOutput)
    assert SEEN == [1.0, 4.0]


def test_a_full_queue_refuses_at_once_and_a_large_request_still_enters_an_empty_one(
    held: LoadedModel,
) -> None:
    batcher = MicroBatcher(held, BatchPolicy(max_queue_rows=3))
    refused_before = count(REFUSED, **labels(held), reason="queue_full")

    async def scenario() -> list[Any]:
        running = asyncio.create_task(batcher.predict(rows(1.0)))
        await entered()
        # Larger than the bound, into an empty queue: admitted (it would never fit otherwise).
        large = asyncio.create_task(batcher.predict(rows(2.0, 5)))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 5
        with pytest.raises(Overloaded) as refusal:
            await batcher.predict(rows(3.0))
        assert refusal.value.reason == "queue_full"
        assert refusal.value.retry_after >= 1
        assert refusal.value.headers == {"Retry-After": str(refusal.value.retry_after)}
        with pytest.raises(Overloaded):  # before the body is read: no rows known yet
            batcher.admit(0, None)
        return list(await released(asyncio.gather(running, large)))

    results = asyncio.run(scenario())

    assert [len(result) for result in results] == [1, 5]
    assert SEEN == [1.0] + [2.0] * 5
    assert count(REFUSED, **labels(held), reason="queue_full") == refused_before + 2
    batcher.admit(0, None)  # idle again: admits everything


def test_a_streams_piece_is_never_refused_it_waits_behind_a_full_queue(
    held: LoadedModel,
) -> None:
    """A refusal would end a stream of millions of rows: its pieces (`refusable=False`) queue."""
    batcher = MicroBatcher(held, BatchPolicy(max_queue_rows=3))
    refused_before = count(REFUSED, **labels(held), reason="queue_full")

    async def scenario() -> list[Any]:
        running = asyncio.create_task(batcher.predict(rows(1.0)))
        await entered()
        queued = asyncio.create_task(batcher.predict(rows(2.0, 3)))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await batcher.predict(rows(3.0))
        piece = asyncio.create_task(batcher.predict(rows(4.0, 2), refusable=False))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 5
        return list(await released(asyncio.gather(running, queued, piece)))

    results = asyncio.run(scenario())

    assert [len(result) for result in results] == [1, 3, 2]
    assert SEEN == [1.0] + [2.0] * 3 + [4.0] * 2
    assert count(REFUSED, **labels(held), reason="queue_full") == refused_before + 1


def test_a_deadline_the_predicted_wait_would_outlast_is_refused_at_once(
    held: LoadedModel,
) -> None:
    batcher = MicroBatcher(held, BatchPolicy())
    # As measured for a slow estimator: one row per second.
    batcher.drain.record(rows=1, seconds=1.0)
    refused_before = count(REFUSED, **labels(held), reason="deadline_unreachable")

    async def scenario() -> list[Any]:
        running = asyncio.create_task(batcher.predict(rows(1.0)))
        await entered()
        queued = asyncio.create_task(batcher.predict(rows(2.0, 3)))  # 3 s ahead of newcomers
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refusal:
            batcher.admit(0, Deadline.after(1.0))
        assert refusal.value.reason == "deadline_unreachable"
        assert refusal.value.retry_after >= 3  # the queue ahead drains in about 3 s
        with pytest.raises(Overloaded):
            await batcher.predict(rows(3.0), deadline=Deadline.after(2.0))
        patient = asyncio.create_task(batcher.predict(rows(4.0), deadline=Deadline.after(60)))
        await asyncio.sleep(0)
        return list(await released(asyncio.gather(running, queued, patient)))

    results = asyncio.run(scenario())

    assert all(isinstance(result, ModelOutput) for result in results)
    assert 3.0 not in SEEN
    assert count(REFUSED, **labels(held), reason="deadline_unreachable") == refused_before + 2


def test_a_disconnected_clients_queued_rows_are_dropped(held: LoadedModel) -> None:
    batcher = MicroBatcher(held, BatchPolicy())
    gone = threading.Event()
    before = count(DISCONNECTED, **labels(held))

    async def scenario() -> tuple[Any, Any]:
        running = asyncio.create_task(batcher.predict(rows(1.0)))
        await entered()
        left = asyncio.create_task(batcher.predict(rows(2.0, 2), gone=gone.is_set))
        stayed = asyncio.create_task(batcher.predict(rows(3.0), gone=lambda: False))
        await asyncio.sleep(0)
        gone.set()  # the client hangs up while its rows wait
        await released(running)
        with pytest.raises(ClientGone):
            await asyncio.wait_for(left, timeout=10)
        return await asyncio.wait_for(stayed, timeout=10), left

    stayed, _ = asyncio.run(scenario())

    assert isinstance(stayed, ModelOutput)
    assert SEEN == [1.0, 3.0]
    assert count(DISCONNECTED, **labels(held)) == before + 1


def test_a_cancelled_waiter_stops_counting_and_the_batcher_serves_on_another_loop(
    held: LoadedModel,
) -> None:
    batcher = MicroBatcher(held, BatchPolicy())

    async def cancel_one() -> None:
        running = asyncio.create_task(batcher.predict(rows(1.0)))
        await entered()
        waiter = asyncio.create_task(batcher.predict(rows(2.0, 4), deadline=Deadline.after(60)))
        await asyncio.sleep(0)
        assert batcher.queued_rows == 4
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert batcher.queued_rows == 0
        await released(running)

    asyncio.run(cancel_one())

    # A new event loop, as in a test run or a forked worker: expiry still works there (no
    # timer of the first loop was left armed).
    for event in (ENTERED, RELEASE):
        event.clear()

    async def expire_one() -> None:
        running = asyncio.create_task(batcher.predict(rows(5.0)))
        await entered()
        short = asyncio.create_task(batcher.predict(rows(6.0), deadline=Deadline.after(0.05)))
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(short, timeout=10)
        await released(running)

    asyncio.run(expire_one())
    assert SEEN == [1.0, 5.0]


def test_every_request_through_the_batcher_observes_its_wait(held: LoadedModel) -> None:
    batcher = MicroBatcher(held, BatchPolicy())
    before = count(QUEUE_WAIT, **labels(held))

    async def scenario() -> None:
        running = asyncio.create_task(batcher.predict(rows(1.0)))  # found it idle: waited 0
        await entered()
        queued = [asyncio.create_task(batcher.predict(rows(float(i)))) for i in range(3)]
        await asyncio.sleep(0)
        await released(asyncio.gather(running, *queued))

    asyncio.run(scenario())

    assert count(QUEUE_WAIT, **labels(held)) == before + 4


def test_throughput_predicts_from_recent_calls() -> None:
    drain = Throughput()
    assert drain.seconds_for(100) == 0.0  # nothing measured: no prediction, no refusal
    drain.record(rows=100, seconds=0.5)
    assert drain.seconds_for(100) == pytest.approx(0.5)
    for _ in range(50):  # the recent calls outweigh the first
        drain.record(rows=100, seconds=0.1)
    assert drain.seconds_for(100) == pytest.approx(0.1, rel=1e-3)


def test_the_data_plane_counts_expired_requests_and_never_replies_late(store: Path) -> None:
    registry = ModelRegistry(store, max_rows=100, trusted_types=[])
    registry.load()
    dataplane = DataPlane(registry)
    model = dataplane.model("line")
    before = count(DEADLINE_EXPIRED, **labels(model))

    def decode(_: LoadedModel) -> Decoded[None]:
        return Decoded(rows(1.0), None)

    def tight_decode(_: LoadedModel) -> Decoded[None]:
        return Decoded(rows(1.0), None, timeout=1e-9)

    def encode(_: LoadedModel, output: ModelOutput, context: None) -> ModelOutput:
        return output

    async def scenario() -> None:
        # Already past by the time the rows are decoded: refused before the estimator runs.
        with pytest.raises(DeadlineExceeded, match="before its rows were predicted"):
            await dataplane.infer(model, decode, encode, work=0, deadline=Deadline.after(1e-9))
        # A body timeout tightens a generous deadline (the Open Inference Protocol's `timeout`).
        with pytest.raises(DeadlineExceeded):
            await dataplane.infer(model, tight_decode, encode, work=0, deadline=Deadline.after(60))

    asyncio.run(scenario())

    assert count(DEADLINE_EXPIRED, **labels(model)) == before + 2

"""Adaptive micro-batching (app.serving.batching) on real models from a real store: concurrent requests
share estimator calls, and every request gets exactly what it would have got on its own."""

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.errors import InferenceError, InvalidInput
from app.metrics import BATCH_SIZE, SHARED_BATCHES, TURN_METRICS
from app.serving.batching import BatchPolicy, MicroBatcher
from app.serving.model import LoadedModel, ModelOutput, run
from app.serving.registry import scan_store
from app.serving.schema import Rows
from tests.conftest import flower_data, flower_features, pet_rows, write_model
from tests.e2e.faulty_model import MAGIC, write_faulty_model


def loaded(store: Path, name: str, version: int = 1) -> LoadedModel:
    return scan_store(store, max_rows=10_000, trusted_types=[]).entries[name].versions[version]


def calls(model: LoadedModel) -> tuple[float, float]:
    """(estimator calls, rows) so far for this model version, from the batch-size histogram."""
    labels = {"model": model.name, "version": str(model.version)}
    count = sum_ = 0.0
    for metric in BATCH_SIZE.collect():
        for sample in metric.samples:
            if sample.labels == labels and sample.name.endswith("_count"):
                count = sample.value
            if sample.labels == labels and sample.name.endswith("_sum"):
                sum_ = sample.value
    return count, sum_


def counter_value(metric: Any, labels: dict[str, str]) -> float:
    """A counter's value for these labels (0 before its first increment)."""
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return float(sample.value)
    return 0.0


def same(left: ModelOutput, right: ModelOutput) -> None:
    np.testing.assert_array_equal(left.predictions, right.predictions)
    if right.probabilities is None:
        assert left.probabilities is None
    else:
        assert left.probabilities is not None
        np.testing.assert_allclose(left.probabilities, right.probabilities, rtol=1e-12, atol=0)


def flower_requests(model: LoadedModel, count: int) -> list[Rows]:
    """`count` requests of 1–5 rows each, some as validated matrices, some as tuples."""
    x, _ = flower_data()
    generator = np.random.default_rng(7)
    requests: list[Rows] = []
    for index in range(count):
        rows = np.abs(x[generator.integers(0, len(x), size=int(generator.integers(1, 6)))])
        requests.append(rows if index % 2 else [tuple(row) for row in rows.tolist()])
    return requests


async def gather(batcher: MicroBatcher, requests: Sequence[Any]) -> list[Any]:
    return await asyncio.gather(
        *(batcher.predict(rows) for rows in requests), return_exceptions=True
    )


@pytest.mark.parametrize("name", ["flowers", "line"])
def test_concurrent_requests_share_calls_and_get_their_own_answers(store: Path, name: str) -> None:
    model = loaded(store, name)
    requests: list[Any] = (
        flower_requests(model, 60) if name == "flowers" else [[(1.0, i)] for i in range(60)]
    )
    alone = [run(model, rows) for rows in requests]
    before_calls, before_rows = calls(model)

    results = asyncio.run(gather(MicroBatcher(model, BatchPolicy(max_rows=64)), requests))

    for result, expected in zip(results, alone, strict=True):
        assert isinstance(result, ModelOutput)
        same(result, expected)
    after_calls, after_rows = calls(model)
    assert after_rows - before_rows == sum(len(rows) for rows in requests)
    assert after_calls - before_calls < len(requests) / 2  # batched, not one call each


def test_no_batch_exceeds_max_rows_but_a_large_request_goes_whole(store: Path) -> None:
    model = loaded(store, "line")
    requests: list[Any] = [[(1.0, float(i))] * 3 for i in range(20)] + [[(2.0, 2.0)] * 11]
    before_calls, _ = calls(model)

    results = asyncio.run(gather(MicroBatcher(model, BatchPolicy(max_rows=8)), requests))

    assert all(isinstance(result, ModelOutput) for result in results)
    assert [len(result) for result in results] == [len(rows) for rows in requests]
    after_calls, _ = calls(model)
    assert after_calls - before_calls >= 1 + 60 / 8  # lone first call, then batches of <= 8 rows


def test_a_request_whose_rows_overflow_fails_alone(store: Path) -> None:
    model = loaded(store, "line")
    good: list[Any] = [[(1.0, float(i))] for i in range(10)]
    overflowing: Any = [(1.0, 2.0), (1e308, -1e308)]  # finite input, infinite prediction
    requests = good[:5] + [overflowing] + good[5:]

    results = asyncio.run(gather(MicroBatcher(model, BatchPolicy()), requests))

    assert isinstance(results[5], InvalidInput)
    detail: Any = results[5].detail
    assert [issue["loc"] for issue in detail] == [["instances", 1]]  # its own row 1
    for result, rows in zip(results[:5] + results[6:], good, strict=True):
        assert isinstance(result, ModelOutput)
        same(result, run(model, rows))


def test_a_model_error_fails_only_its_batch_and_the_batcher_keeps_serving(tmp_path: Path) -> None:
    write_faulty_model(tmp_path)
    model = loaded(tmp_path, "faulty")
    batcher = MicroBatcher(model, BatchPolicy(max_rows=4))

    async def scenario() -> tuple[list[Any], list[Any]]:
        # 1 lone call, then batches of 4 rows: the magic row sits in the second batch.
        first = await gather(batcher, [[(float(i), 1.0)] for i in range(1)])
        mixed = await gather(batcher, [[(float(i), 1.0)] for i in range(5)] + [[(MAGIC, 1.0)]])
        after = await gather(batcher, [[(3.0, 1.0)]])
        return first + after, mixed

    fine, mixed = asyncio.run(scenario())

    assert all(isinstance(result, ModelOutput) for result in fine)
    failed = [index for index, result in enumerate(mixed) if isinstance(result, InferenceError)]
    assert 5 in failed  # the request with the magic row
    assert 0 not in failed  # the first, alone while the others queued, was not in its batch
    assert all(isinstance(mixed[index], ModelOutput) for index in set(range(6)) - set(failed))


def test_a_lone_request_never_waits_for_the_batch_window(store: Path) -> None:
    model = loaded(store, "line")
    batcher = MicroBatcher(model, BatchPolicy(max_wait=60.0))

    async def lone() -> ModelOutput:
        # Far below the 60 s window: only a request that went straight through can finish.
        return await asyncio.wait_for(batcher.predict([(1.0, 2.0)]), timeout=20)

    same(asyncio.run(lone()), run(model, [(1.0, 2.0)]))


def test_a_cancelled_request_leaves_the_others_served(store: Path) -> None:
    model = loaded(store, "line")
    batcher = MicroBatcher(model, BatchPolicy())

    async def scenario() -> list[Any]:
        tasks = [asyncio.create_task(batcher.predict([(1.0, float(i))])) for i in range(8)]
        await asyncio.sleep(0)  # all queued (the first running)
        tasks[3].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())

    assert isinstance(results[3], asyncio.CancelledError)
    for index, result in enumerate(results):
        if index != 3:
            assert isinstance(result, ModelOutput)
            same(result, run(model, [(1.0, float(index))]))


def test_shared_calls_are_counted_by_the_protocols_they_served(store: Path) -> None:
    model = loaded(store, "line")
    batcher = MicroBatcher(model, BatchPolicy())

    def shared(protocols: str) -> float:
        labels = {"model": "line", "version": "1", "protocols": protocols}
        return counter_value(SHARED_BATCHES, labels)

    before = shared("grpc+http"), shared("http")

    async def scenario() -> list[ModelOutput]:
        # The first runs at once; the two queued behind it form one batch of both protocols.
        return list(
            await asyncio.gather(
                batcher.predict([(1.0, 0.0)], transport="http"),
                batcher.predict([(1.0, 1.0)], transport="http"),
                batcher.predict([(1.0, 2.0)], transport="grpc"),
            )
        )

    results = asyncio.run(scenario())
    TURN_METRICS.flush()

    for index, result in enumerate(results):
        same(result, run(model, [(1.0, float(index))]))
    assert (shared("grpc+http"), shared("http")) == (before[0] + 1, before[1])


def test_dataframe_models_batch_their_tuple_rows(store: Path) -> None:
    model = loaded(store, "pets")
    rows = [tuple(row) for row in pet_rows()]
    requests: list[Any] = [[row] for row in rows] + [rows]

    results = asyncio.run(gather(MicroBatcher(model, BatchPolicy()), requests))

    for result, request in zip(results, requests, strict=True):
        assert isinstance(result, ModelOutput)
        same(result, run(model, request))


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=15, random_state=0),
        ExtraTreesClassifier(n_estimators=15, random_state=0),
        make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)),
    ],
)
def test_trees_answer_labels_and_probabilities_from_one_pass_exactly(
    tmp_path: Path, estimator: Any
) -> None:
    x, y = flower_data()
    classes = ["setosa", "versicolor", "virginica"]
    fitted = estimator.fit(x, y)
    write_model(
        tmp_path,
        fitted,
        name="trees",
        task="classification",
        features=flower_features(),
        classes=classes,
        example=[5.1, 3.5, 1.4, 0.2],
    )
    model = loaded(tmp_path, "trees")
    grid = np.abs(np.random.default_rng(3).normal(4, 2.5, size=(5000, 4)))

    output = run(model, grid)

    assert model.labels_from_probabilities
    np.testing.assert_array_equal(output.predictions, fitted.predict(grid))
    assert output.probabilities is not None
    np.testing.assert_array_equal(output.probabilities, fitted.predict_proba(grid))


def test_other_classifiers_still_call_predict(store: Path) -> None:
    assert not loaded(store, "flowers").labels_from_probabilities  # logistic regression


def test_with_batching_off_each_request_gets_its_own_call(store: Path) -> None:
    model = loaded(store, "line")
    requests: list[Any] = [[(1.0, float(i))] for i in range(12)]
    before_calls, _ = calls(model)

    results = asyncio.run(gather(MicroBatcher(model, BatchPolicy(enabled=False)), requests))

    after_calls, _ = calls(model)
    assert after_calls - before_calls == len(requests)
    for result, rows in zip(results, requests, strict=True):
        assert isinstance(result, ModelOutput)
        same(result, run(model, rows))


def _ran_on_the_loop(
    batcher: MicroBatcher, rows: Rows, *, alone: bool = True
) -> tuple[bool, ModelOutput]:
    """Whether `predict` ran without yielding to the event loop (inline), and its output: a
    callback scheduled first runs only if the call awaited something (a thread)."""

    async def scenario() -> tuple[bool, ModelOutput]:
        others: list[str] = []
        asyncio.get_running_loop().call_soon(others.append, "other")
        output = await batcher.predict(rows, alone=alone)
        return not others, output

    return asyncio.run(scenario())


def test_an_idle_batcher_runs_calls_measured_cheap_on_the_event_loop(store: Path) -> None:
    model = loaded(store, "line")
    batcher = MicroBatcher(model, BatchPolicy())
    one_row: Rows = [(1.0, 2.0)]

    inline, output = _ran_on_the_loop(batcher, one_row)
    assert not inline  # nothing measured yet: the first call goes to a thread
    assert batcher.small_call_seconds < float("inf")  # and is timed
    same(output, run(model, one_row))

    batcher.small_call_seconds = 0.0  # as measured for a compiled backend's call
    inline, output = _ran_on_the_loop(batcher, one_row)
    assert inline
    same(output, run(model, one_row))

    batcher.small_call_seconds = 0.0
    many: Rows = [(float(i), 1.0) for i in range(17)]  # past INLINE_MAX_ROWS: a thread
    inline, output = _ran_on_the_loop(batcher, many)
    assert not inline
    same(output, run(model, many))

    batcher.small_call_seconds = 1.0  # as measured for an expensive call: a thread
    inline, _ = _ran_on_the_loop(batcher, one_row)
    assert not inline

    batcher.small_call_seconds = 0.0  # cheap, but other requests are in flight: a thread
    inline, output = _ran_on_the_loop(batcher, one_row, alone=False)
    assert not inline
    same(output, run(model, one_row))

"""Streams through the data plane (app.serving.streaming) with real models and the real
codec: answers in order whatever the chunking, at most a window of chunks in flight and the
body read no further ahead, bad rows and unanswerable rows in place, the stream's own failures
as a last record, and no work left running once the consumer goes away."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LinearRegression

from app.codecs.streams import open_stream
from app.config import Settings
from app.errors import PayloadTooLarge
from app.serving.dataplane import DataPlane
from app.serving.loading import registry_for
from app.serving.model import LoadedModel, ModelOutput
from app.serving.schema import Rows
from app.serving.streaming import STREAM_WINDOW, stream_answers
from schemas.cards import FeatureSpec
from tests.conftest import FLOWER_FEATURES, build_store, write_model


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory) -> DataPlane:
    store = build_store(tmp_path_factory.mktemp("store") / "models")
    x = np.random.default_rng(3).uniform(0, 10, size=(60, 2))
    steep = LinearRegression().fit(x, x[:, 0])
    steep.coef_ = np.array([1e300, 0.0])  # 1e10 * 1e300 overflows: no finite answer
    features = [FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")]
    write_model(store, steep, name="steep", task="regression", features=features)
    registry = registry_for(Settings(model_dir=store, max_rows=100))
    registry.load()
    return DataPlane(registry)


def flower_body(rows: int, seed: int = 0) -> tuple[bytes, np.ndarray[Any, Any]]:
    values = np.random.default_rng(seed).uniform(0.1, 8, size=(rows, 4)).round(2)
    lines = "".join(",".join(map(repr, row)) + "\n" for row in values.tolist())
    return (",".join(FLOWER_FEATURES) + "\n" + lines).encode(), values


async def pieces_of(
    body: bytes, size: int, pulled: list[int] | None = None
) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        if pulled is not None:
            pulled.append(start)
        yield body[start : start + size]
        await asyncio.sleep(0)


def collect(
    dataplane: DataPlane, name: str, body: AsyncIterator[bytes], **options: Any
) -> list[Any]:
    async def run() -> list[Any]:
        model = dataplane.model(name, 1)
        opened = await open_stream(
            model, body, source="csv", reply="ndjson", max_line_bytes=options.pop("limit", 1000)
        )
        return [
            orjson.loads(line)
            async for data in dataplane.stream(model, opened.pieces, opened.codec, **options)
            for line in data.splitlines()
        ]

    return asyncio.run(run())


@pytest.mark.parametrize("size", [7, 1000, 1 << 20])
def test_every_row_is_answered_in_order_whatever_the_pieces(
    dataplane: DataPlane, size: int
) -> None:
    body, values = flower_body(1500)
    records = collect(dataplane, "flowers", pieces_of(body, size))
    *answers, last = records
    model = dataplane.model("flowers", 1)
    expected = model.estimator.predict(values)
    assert [answer["label"] for answer in answers] == expected.tolist()
    assert last == {
        "summary": {
            "model_name": "flowers",
            "model_version": 1,
            "rows": 1500,
            "errors": 0,
            "complete": True,
        }
    }


def test_at_most_a_window_of_chunks_is_in_flight(dataplane: DataPlane) -> None:
    body, _ = flower_body(3000)
    in_flight = peak = 0
    pulled: list[int] = []

    async def predict(model: LoadedModel, rows: Rows) -> ModelOutput:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002)
        try:
            return await dataplane.predict_rows(model, rows)
        finally:
            in_flight -= 1

    async def run() -> tuple[int, int]:
        model = dataplane.model("flowers", 1)
        opened = await open_stream(
            model, pieces_of(body, 512, pulled), source="csv", reply="ndjson", max_line_bytes=99
        )
        answers = stream_answers(predict, model, opened.pieces, opened.codec)
        replies = answered = ahead = 0
        async for data in answers:
            replies += 1
            answered += data.count(b"\n")
            ahead = max(ahead, len(pulled) * 512 * 3000 // len(body) - answered)
        return replies, ahead

    replies, ahead = asyncio.run(run())
    assert replies > 30  # 100-row chunks (the row limit), one reply each
    assert peak <= STREAM_WINDOW
    # The body is read only as far as the window allows: the chunks in flight, the one being
    # cut, and a piece.
    assert ahead <= (STREAM_WINDOW + 2) * 100


def test_bad_rows_in_place_and_abort_stops_at_the_first(dataplane: DataPlane) -> None:
    body = b"a,b\n1,2\n1,x\n3,4\n1e10,1\n5,6\n"
    records = collect(dataplane, "steep", pieces_of(body, 5))
    assert [sorted(record) for record in records[:-1]] == [
        ["value"],
        ["error", "line"],
        ["value"],
        ["error", "line"],
        ["value"],
    ]
    assert records[1]["error"]["column"] == "b"
    assert records[3] == {
        "line": 5,
        "error": {
            "column": None,
            "message": records[3]["error"]["message"],
            "type": "non_finite_output",
        },
    }
    assert records[-1]["summary"]["errors"] == 2 and records[-1]["summary"]["complete"]
    stopped = collect(dataplane, "steep", pieces_of(body, 1000), abort=True)
    assert [sorted(record) for record in stopped[:-1]] == [["value"], ["error", "line"]]
    assert stopped[-1]["summary"] == {
        "model_name": "steep",
        "model_version": 1,
        "rows": 2,
        "errors": 1,
        "complete": False,
    }


def test_a_failure_while_reading_ends_the_stream_with_its_record(dataplane: DataPlane) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"a,b\n1,2\n3,4\n"
        await asyncio.sleep(0.1)  # the rows so far are answered meanwhile
        raise PayloadTooLarge("Request body is larger than 1024 bytes")

    records = collect(dataplane, "steep", body())
    assert [sorted(record) for record in records] == [
        ["value"],
        ["value"],
        ["error", "line"],
        ["summary"],
    ]
    assert records[2] == {
        "line": None,
        "error": {
            "column": None,
            "message": "Request body is larger than 1024 bytes",
            "type": "PayloadTooLarge",
        },
    }
    assert records[3]["summary"]["rows"] == 2 and not records[3]["summary"]["complete"]


def test_no_work_goes_on_once_the_consumer_leaves(dataplane: DataPlane) -> None:
    calls = 0
    closed = False

    async def endless() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            yield b"a,b\n"
            while True:
                yield b"1,2\n" * 50
                await asyncio.sleep(0)
        finally:
            closed = True

    async def predict(model: LoadedModel, rows: Rows) -> ModelOutput:
        nonlocal calls
        calls += 1
        return await dataplane.predict_rows(model, rows)

    async def run() -> tuple[int, int]:
        model = dataplane.model("steep", 1)
        opened = await open_stream(model, endless(), source="csv", reply="csv", max_line_bytes=99)
        answers = stream_answers(predict, model, opened.pieces, opened.codec)
        async for _ in answers:
            if calls >= 5:
                break
        await answers.aclose()
        at_close = calls
        await asyncio.sleep(0.2)
        return at_close, calls

    at_close, later = asyncio.run(run())
    assert later == at_close
    assert closed

"""A stream's answers as bytes (app.codecs.stream_reply): the CSV rows are the file route's,
byte for byte, plus the `error` cell; the NDJSON lines are the JSON envelope's items; bad rows
and the summary take their documented shapes, in place."""

import asyncio
import csv
import io
import json
from typing import Any

import numpy as np
import orjson
import pytest

from app import native
from app.codecs.csv_reply import csv_reply_lines
from app.codecs.stream_lines import LinePiece
from app.codecs.stream_reply import repr_column
from app.codecs.stream_rows import read_csv_header
from app.codecs.streams import TableStream
from app.codecs.tabular import read_csv
from app.serving.model import (
    LoadedModel,
    ModelOutput,
    prediction_document,
    prediction_response,
    run,
)
from app.serving.registry import scan_store
from app.serving.streaming import ChunkAnswer, StreamSummary, answer_chunk
from schemas.stream import StreamErrorLine, StreamSummaryLine
from tests.conftest import FLOWER_FEATURES, build_store, require_hot_path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    store = build_store(tmp_path_factory.mktemp("store") / "models")
    snapshot = scan_store(store, max_rows=500, trusted_types=[])
    return {name: entry.versions[1] for name, entry in snapshot.entries.items()}


@pytest.fixture(autouse=True, params=["compiled gather", "numpy gather"])
def gather(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "numpy gather":
        monkeypatch.setattr(native, "HOT_PATH", None)
    else:
        require_hot_path()


def test_repr_column_writes_each_float_as_repr_does() -> None:
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**63, size=20_000, dtype=np.int64).view(np.float64)
    scaled = rng.random(20_000) * 10.0 ** rng.integers(-12, 22, size=20_000)
    special = np.array([0.0, -0.0, 1e-4, 9.999e-5, 1e16, 9.999999999999998e15, 5e-324, 1.0, 0.1])
    values = np.concatenate([bits[np.isfinite(bits)], scaled, -scaled, special])
    column = repr_column(values)
    written = [
        column.text[s : s + n].decode() for s, n in zip(column.starts, column.lengths, strict=True)
    ]
    assert written == [repr(value) for value in values.tolist()]


def answered(model: LoadedModel, codec: TableStream, body: bytes, *, abort: bool = False) -> Any:
    async def predict(model: LoadedModel, rows: Any) -> ModelOutput:
        return run(model, rows)

    chunk = codec.decode(model, LinePiece(body, 2))
    return asyncio.run(answer_chunk(predict, model, chunk, abort=abort))


@pytest.mark.parametrize(
    ("name", "header", "rows"),
    [
        ("flowers", ",".join(FLOWER_FEATURES), ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "1,2,3,4"]),
        ("flowers", "petal_width,sepal_width,sepal_length,petal_length", [" 2,3,4,1", "0,1e1,1,1"]),
        ("pets", "weight,colour,age", ["3.5,ginger,4", '"4.25","white",12', "1.0,black,3"]),
        ("line", "b,a", ["1,2", "-1.5e3,2e-9", "0,0"]),
    ],
)
def test_csv_rows_are_the_file_routes_plus_an_empty_error_cell(
    models: dict[str, LoadedModel], name: str, header: str, rows: list[str]
) -> None:
    model = models[name]
    body = "".join(row + "\n" for row in rows).encode()
    parsed = read_csv_header(header.encode(), model.inputs)
    codec = TableStream(model, source="csv", reply="csv", header=parsed, max_line_bytes=1000)
    head = codec.start(model)
    assert head is not None
    ours = head + codec.encode(model, answered(model, codec, body))
    table = read_csv(io.BytesIO(header.encode() + b"\n" + body), model.inputs)
    classes = model.card.target.classes
    labels = [str(c) for c in classes] if classes else None
    output = run(model, table.rows)
    theirs = "".join(csv_reply_lines(table, prediction_response(model, output), labels))
    expected = [line + "," for line in theirs.split("\r\n")[:-1]]
    expected[0] += "error"
    assert ours.decode().split("\r\n")[:-1] == expected


def test_ndjson_lines_are_the_envelopes_items(models: dict[str, LoadedModel]) -> None:
    for name in ("flowers", "line", "pets"):
        model = models[name]
        codec = TableStream(
            model, source="ndjson", reply="ndjson", header=None, max_line_bytes=1000
        )
        example = model.inputs.example["instances"][0]
        lines = [orjson.dumps(example), orjson.dumps(list(example.values()))]
        answer = answered(model, codec, b"\n".join(lines))
        assert codec.start(model) is None
        items = prediction_document(model, answer.output)["predictions"]
        assert codec.encode(model, answer) == b"".join(orjson.dumps(i) + b"\n" for i in items)


def test_bad_rows_are_answered_in_place_in_both_formats(models: dict[str, LoadedModel]) -> None:
    model = models["flowers"]
    body = b"5.1,3.5,1.4,0.2\n5.1,x,1.4,0.2\n1,2\n6.7,3.0,5.2,2.3\n"
    parsed = read_csv_header(",".join(FLOWER_FEATURES).encode(), model.inputs)
    csv_codec = TableStream(model, source="csv", reply="csv", header=parsed, max_line_bytes=99)
    nd_codec = TableStream(model, source="csv", reply="ndjson", header=parsed, max_line_bytes=99)
    csv_lines = csv_codec.encode(model, answered(model, csv_codec, body)).decode()
    records = list(csv.reader(io.StringIO(csv_lines)))
    assert [len(record) for record in records] == [9] * 4
    assert records[0][:5] == ["5.1", "3.5", "1.4", "0.2", "setosa"] and records[0][-1] == ""
    assert records[1][:-1] == [""] * 8 and records[3][-1] == ""
    assert json.loads(records[1][-1]) == {
        "line": 3,
        "column": "sepal_width",
        "message": "Input should be a valid number, unable to parse string as a number",
        "type": "float_parsing",
    }
    assert json.loads(records[2][-1])["type"] == "row_length"
    nd_lines = nd_codec.encode(model, answered(model, nd_codec, body)).splitlines()
    assert len(nd_lines) == 4
    bad = StreamErrorLine.model_validate_json(nd_lines[1])
    assert (bad.line, bad.error.column, bad.error.type) == (3, "sepal_width", "float_parsing")
    assert json.loads(nd_lines[3])["label"] == "virginica"


def test_abort_answers_up_to_the_first_bad_row(models: dict[str, LoadedModel]) -> None:
    model = models["flowers"]
    parsed = read_csv_header(",".join(FLOWER_FEATURES).encode(), model.inputs)
    codec = TableStream(model, source="csv", reply="ndjson", header=parsed, max_line_bytes=99)
    answer: ChunkAnswer[Any] = answered(
        model, codec, b"5.1,3.5,1.4,0.2\n1,2\n6.7,3.0,5.2,2.3\n5.1,x,1.4,0.2\n", abort=True
    )
    assert (answer.answered, answer.stopped, list(answer.errors)) == (2, True, [1])
    lines = codec.encode(model, answer).splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["line"] == 3


def test_the_summary_closes_both_formats(models: dict[str, LoadedModel]) -> None:
    model = models["line"]
    summary = StreamSummary("line", 1, rows=10, errors=2, complete=False)
    parsed = read_csv_header(b"a,b", model.inputs)
    csv_codec = TableStream(model, source="csv", reply="csv", header=parsed, max_line_bytes=99)
    nd_codec = TableStream(model, source="csv", reply="ndjson", header=parsed, max_line_bytes=99)
    last = next(csv.reader(io.StringIO(csv_codec.finish(model, summary).decode())))
    assert last[:-1] == ["", "", ""]
    line = StreamSummaryLine.model_validate_json(last[-1])
    assert (line.summary.rows, line.summary.errors, line.summary.complete) == (10, 2, False)
    assert orjson.loads(nd_codec.finish(model, summary)) == summary.document()

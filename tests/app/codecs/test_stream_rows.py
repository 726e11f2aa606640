"""Chunks of a stream decoded (app.codecs.stream_rows): each row is judged as the file route
(CSV) or `/predict` (NDJSON) judges it alone, whether its chunk takes a fast reader or the
exact path; bad rows are named in place (line, column, message), good rows keep their values and
their order, and lines never merge into rows."""

import io
import itertools
import random
from typing import Any

import numpy as np
import orjson
import pytest

from app import native
from app.codecs.stream_lines import LinePiece
from app.codecs.stream_rows import (
    CsvHeader,
    decode_csv,
    decode_ndjson,
    read_csv_header,
    too_long_chunk,
)
from app.codecs.tabular import read_csv
from app.errors import InvalidInput, MalformedBody, ServiceError, UnreadableFile
from app.serving.model import LoadedModel
from app.serving.registry import scan_store
from app.serving.streaming import RowError, StreamChunk
from tests.conftest import FLOWER_FEATURES, build_store, require_hot_path

LIMIT = 200


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    store = build_store(tmp_path_factory.mktemp("store") / "models")
    snapshot = scan_store(store, max_rows=500, trusted_types=[])
    assert not snapshot.problems
    return {name: entry.versions[1] for name, entry in snapshot.entries.items()}


@pytest.fixture(params=["compiled reader", "without it"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every chunk is decoded twice: with the compiled CSV reader (app/native) and without."""
    if request.param == "without it":
        monkeypatch.setattr(native, "HOT_PATH", None)
    else:
        require_hot_path()
    return str(request.param)


def outcomes(chunk: StreamChunk[Any]) -> list[tuple[int, Any]]:
    """(line, values or the error) of each record, in order."""
    errors = dict(chunk.errors)
    rows = iter(chunk.rows.tolist() if isinstance(chunk.rows, np.ndarray) else chunk.rows)
    found = []
    for index in range(chunk.records):
        line = chunk.lines[index]
        found.append((line, errors[index] if index in errors else tuple(next(rows))))
    assert next(rows, None) is None
    return found


def csv_chunk(model: LoadedModel, header: str, lines: list[str], echo: bool = False) -> Any:
    parsed = read_csv_header(header.encode(), model.inputs)
    piece = LinePiece("".join(line + "\n" for line in lines).encode(), 2)
    return decode_csv(piece, parsed, model.inputs, echo=echo, max_line_bytes=LIMIT)


def file_route(model: LoadedModel, header: str, line: str) -> tuple[Any, str | None]:
    """What the file route makes of a CSV of this one row: its values, or its first error's
    message and column."""
    try:
        table = read_csv(io.BytesIO(f"{header}\n{line}\n".encode()), model.inputs)
    except InvalidInput as exc:
        assert isinstance(exc.detail, list)
        issue = exc.detail[0]
        column = issue["loc"][3] if len(issue["loc"]) > 3 else None
        return ("error", issue["msg"]), column
    except UnreadableFile as exc:
        return ("unreadable", str(exc.detail)), None
    first = table.rows[0]
    return tuple(first.tolist() if isinstance(first, np.ndarray) else first), None


CELLS = ["5.1", "0", "1e2", " 2.5", "-1", "abc", "", "NaN", "1e999", '"3.5"', "0x10", "7"]
PET_CELLS = ["ginger", "white", "blue", "3.5", "4", "4.0", "-2", "", "x"]


@pytest.mark.parametrize(
    ("name", "header", "cells"),
    [
        ("flowers", ",".join(FLOWER_FEATURES), CELLS),
        ("flowers", "petal_width,sepal_length,petal_length,sepal_width", CELLS),
        ("pets", "age,colour,weight", PET_CELLS),
    ],
)
def test_each_csv_row_is_judged_as_the_file_route_judges_it(
    models: dict[str, LoadedModel], reader: str, name: str, header: str, cells: list[str]
) -> None:
    model = models[name]
    width = len(header.split(","))
    rng = random.Random(7)
    lines = [",".join(rng.choice(cells) for _ in range(width)) for _ in range(300)]
    lines += ["1,2", ",".join(["5"] * (width + 1)), '"5.1,' + ",".join(["1"] * (width - 1))]
    chunk = csv_chunk(model, header, lines)
    for (line, outcome), text in zip(outcomes(chunk), lines, strict=True):
        expected, column = file_route(model, header, text)
        if not text.replace(",", "").strip():
            # Only empty cells: a blank row the file route skips; a stream answers every
            # non-blank line, so it is a bad row here.
            assert isinstance(outcome, RowError) and outcome.type == "float_parsing"
        elif isinstance(outcome, RowError):
            assert outcome.line == line
            if expected[0] == "error":
                assert (outcome.message, outcome.column) == (expected[1], column), text
            else:
                assert expected[0] == "unreadable" or outcome.type == "row_length", (text, expected)
        else:
            assert outcome == expected, text


def test_a_clean_csv_chunk_takes_a_fast_reader_and_echoes_its_lines(
    models: dict[str, LoadedModel], reader: str
) -> None:
    model = models["flowers"]
    rows = np.random.default_rng(0).uniform(0, 9, size=(400, 4)).round(4)
    lines = [",".join(map(repr, row)) for row in rows.tolist()]
    header = "petal_width,sepal_length,petal_length,sepal_width"
    chunk = csv_chunk(model, header, lines, echo=True)
    assert isinstance(chunk.rows, np.ndarray)
    order = [header.split(",").index(name) for name in FLOWER_FEATURES]
    assert np.array_equal(chunk.rows, rows[:, order])
    echo = chunk.context
    echoed = [echo.text[s : s + n] for s, n in zip(echo.starts, echo.lengths, strict=True)]
    assert echoed == [line.encode() for line in lines]
    assert list(chunk.lines) == list(range(2, 402))


def test_blank_lines_are_skipped_and_line_numbers_stay_the_files(
    models: dict[str, LoadedModel],
) -> None:
    model = models["flowers"]
    piece = LinePiece(b"1,2,3,4\r\n\r\n   \n1,2,3,x\n\n1,1,1,1", 2)
    parsed = read_csv_header(",".join(FLOWER_FEATURES).encode(), model.inputs)
    chunk = decode_csv(piece, parsed, model.inputs, echo=True, max_line_bytes=LIMIT)
    found = outcomes(chunk)
    assert [line for line, _ in found] == [2, 5, 7]
    assert found[0][1] == (1.0, 2.0, 3.0, 4.0) and found[2][1] == (1.0, 1.0, 1.0, 1.0)
    assert isinstance(found[1][1], RowError) and found[1][1].column == "petal_width"


def test_unreadable_lines_are_bad_rows_not_the_end_of_the_stream(
    models: dict[str, LoadedModel],
) -> None:
    model = models["flowers"]
    parsed = read_csv_header(",".join(FLOWER_FEATURES).encode(), model.inputs)
    body = b'1,2,3,4\n1,\xff,3,4\n1,2\x00,3,4\n1,"2,3,4\n' + b"9" * 300 + b"\n1,2,3,5\n"
    chunk = decode_csv(LinePiece(body, 2), parsed, model.inputs, echo=False, max_line_bytes=LIMIT)
    kinds = [o.type if isinstance(o, RowError) else "ok" for _, o in outcomes(chunk)]
    assert kinds == ["ok", "unicode_error", "nul_byte", "csv_error", "line_too_long", "ok"]
    assert too_long_chunk(LinePiece(b"", 9, too_long=True), LIMIT).errors[0][1].line == 9


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"sepal_length,sepal_width,petal_length", InvalidInput),
        (b"sepal_length,sepal_length,sepal_width,petal_length,petal_width", InvalidInput),
        (b"\xff\xfe", UnreadableFile),
        (b"", UnreadableFile),
        (b'"sepal_length,sepal_width', UnreadableFile),
    ],
)
def test_a_bad_header_is_refused_before_any_row(
    models: dict[str, LoadedModel], header: bytes, problem: type[ServiceError]
) -> None:
    with pytest.raises(problem):
        read_csv_header(header, models["flowers"].inputs)


def test_a_header_may_carry_a_bom_and_spaces(models: dict[str, LoadedModel]) -> None:
    header = "\ufeff" + " petal_width, sepal_length ,petal_length,sepal_width"
    parsed = read_csv_header(header.encode(), models["flowers"].inputs)
    assert parsed == CsvHeader(
        ["petal_width", "sepal_length", "petal_length", "sepal_width"], [1, 3, 2, 0]
    )


# -- NDJSON ---------------------------------------------------------------------------------


def predict_route(model: LoadedModel, line: bytes) -> Any:
    """What `/predict` makes of `{"instances": [line]}`."""
    try:
        rows = model.inputs.validate_json(b'{"instances":[' + line + b"]}")
    except InvalidInput as exc:
        assert isinstance(exc.detail, list)
        return ("error", exc.detail[0]["msg"])
    except MalformedBody:
        return ("malformed",)
    values = np.asarray(rows, dtype=object).tolist()
    return tuple(values[0]) if len(values) == 1 else ("rows", len(values))


JSON_VALUES = [5.1, 0, 2, -1, "1.5", True, None, 1e300, 3.5]


def _json_lines(model: LoadedModel, count: int) -> list[bytes]:
    rng = random.Random(3)
    names = model.inputs.feature_names
    lines = []
    for _ in range(count):
        values = [rng.choice(JSON_VALUES) for _ in names]
        if rng.random() < 0.5:
            lines.append(orjson.dumps(values))
        else:
            lines.append(orjson.dumps(dict(zip(names, values, strict=True))))
    return lines


ODD_LINES = [
    b"[1,2,3",
    b"4]",
    b"[1,2,3,4],[5,6,7,8]",
    b'{"sepal_length": 1, "sepal_length": 2, "sepal_width": 1, "petal_length": 1, "petal_width": 1}',
    b"NaN",
    b"[1,2,3,4]]}",
    b"[[1,2,3,4]]",
    b"{}",
    b'"text"',
]


@pytest.mark.parametrize("clean", [True, False])
def test_each_ndjson_row_is_judged_as_predict_judges_it(
    models: dict[str, LoadedModel], clean: bool
) -> None:
    model = models["flowers"]
    if clean:
        numbers = np.random.default_rng(1).uniform(0, 9, size=(300, 4)).round(3)
        lines = [orjson.dumps(row) for row in numbers.tolist()]
    else:
        lines = _json_lines(model, 300) + ODD_LINES
    chunk = decode_ndjson(
        LinePiece(b"\n".join(lines) + b"\n", 1), model.inputs, echo=False, max_line_bytes=LIMIT
    )
    for (line, outcome), text in zip(outcomes(chunk), lines, strict=True):
        expected = predict_route(model, text)
        if isinstance(outcome, RowError):
            assert line == outcome.line
            assert expected[0] in {"error", "malformed", "rows"}, (text, outcome)
            if expected[0] == "error":
                assert outcome.message == expected[1]
        else:
            assert outcome == expected, text


def test_lines_never_merge_into_one_row(models: dict[str, LoadedModel]) -> None:
    """Two lines that would make valid rows if joined (`[1,2` + `3,4],[5,6,7,8]`) are each a
    bad row: nothing shifts."""
    model = models["flowers"]
    body = b"[1,2\n3,4],[5,6,7,8]\n[1,1,1,1]\n"
    chunk = decode_ndjson(LinePiece(body, 1), model.inputs, echo=False, max_line_bytes=LIMIT)
    found = outcomes(chunk)
    assert [type(outcome) for _, outcome in found] == [RowError, RowError, tuple]
    assert found[2] == (3, (1.0, 1.0, 1.0, 1.0))


def test_ndjson_rows_are_echoed_in_feature_order_for_a_csv_reply(
    models: dict[str, LoadedModel],
) -> None:
    model = models["pets"]
    body = b'{"age": 4, "colour": "ginger", "weight": 3.5}\n["white", 1.25, 7]\n["blue", 1, 1]\n'
    chunk = decode_ndjson(LinePiece(body, 1), model.inputs, echo=True, max_line_bytes=LIMIT)
    echo = chunk.context
    assert echo is not None
    echoed = [echo.text[s : s + n] for s, n in zip(echo.starts, echo.lengths, strict=True)]
    assert echoed == [b"ginger,3.5,4", b"white,1.25,7", b""]


@pytest.mark.parametrize("lines", list(itertools.permutations(ODD_LINES[:4], 3)))
def test_odd_lines_in_any_order_keep_every_row_in_place(
    models: dict[str, LoadedModel], lines: tuple[bytes, ...]
) -> None:
    model = models["flowers"]
    body = b"\n".join([b"[1,1,1,1]", *lines, b"[2,2,2,2]"])
    chunk = decode_ndjson(LinePiece(body, 1), model.inputs, echo=False, max_line_bytes=LIMIT)
    found = outcomes(chunk)
    assert found[0] == (1, (1.0, 1.0, 1.0, 1.0)) and found[-1] == (5, (2.0, 2.0, 2.0, 2.0))
    assert chunk.records == 5

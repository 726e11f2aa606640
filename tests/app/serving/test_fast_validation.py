"""The vectorised paths for all-numeric rows (JSON array bodies, CSV uploads) must accept exactly
what the cell-by-cell pydantic path accepts, with the same values: checked on thousands of generated bodies built from
the tokens that tell them apart (bounds, integrality, 2**53, float32's range, booleans, strings,
nulls, nesting, ragged rows, odd JSON)."""

import io
import json
import random
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

import app.codecs.tabular as tabular
from app import native
from app.codecs.tabular import read_csv
from app.errors import ServiceError
from app.serving.schema import FLOAT32_MAX, InputSchema, Rows
from schemas.cards import FeatureSpec, ModelCard
from tests.conftest import require_hot_path

FEATURES = [
    FeatureSpec(name="free", dtype="float"),
    FeatureSpec(name="bounded", dtype="float", minimum=0.0, maximum=10.0),
    FeatureSpec(name="count", dtype="int", minimum=-5, maximum=100),
    FeatureSpec(name="id", dtype="int"),
]


# Every feature a float: the CSV reader's simdjson path (integer columns take pandas').
FLOAT_FEATURES = [
    FeatureSpec(name="free", dtype="float"),
    FeatureSpec(name="bounded", dtype="float", minimum=0.0, maximum=10.0),
    FeatureSpec(name="count", dtype="float", minimum=-5, maximum=100),
    FeatureSpec(name="id", dtype="float"),
]


def schema(max_rows: int = 5, features: list[FeatureSpec] = FEATURES) -> InputSchema:
    card = ModelCard(
        name="mixed",
        version=1,
        task="regression",
        features=features,
        sklearn_version="1.9.1",
        created_at=datetime.now(UTC),
        sha256="0" * 64,
    )
    return InputSchema(card, max_rows=max_rows)


CELLS = [
    "0", "1", "-1", "3.0", "3.5", "-5", "-6", "100", "101", "10", "10.0", "10.000001", "-0.0",
    "1e2", "1E2", "1e-300", "1e308", "1e999", "-1e999", "3.4028234663852886e38", "3.5e38",
    "9007199254740992", "9007199254740993", "-9007199254740992", "18446744073709551616",
    "true", "false", "null", '"1"', '""', "[]", "[1]", "{}", "NaN", "Infinity", "0x10", "01",
    ".5", "5.", "+1", "1_0", "2.5", "7", "18446744073709551615", "-9223372036854775809",
    "100000000000000000000000", "1E+2", "1e-2", "-0", "0.0e0", "4.9e-324", "1e-400", " 5 ",
    "[[1]]", "[1, 2]",
]  # fmt: skip


def outcome(run: Any, body: bytes) -> tuple[str, Any]:
    try:
        rows: Rows = run(body)
    except ServiceError as exc:
        return ("refused", type(exc).__name__)
    return ("accepted", np.asarray(rows, dtype=np.float64).tolist())


def bodies(seed: int, count: int) -> list[bytes]:
    generator = random.Random(seed)
    made = []
    for _ in range(count):
        rows = []
        for _ in range(generator.choice([1, 1, 2, 3, 6])):
            width = generator.choice([4, 4, 4, 4, 4, 4, 3, 5])
            # Mostly valid cells, so that many bodies are accepted and values compared.
            cells = [
                generator.choice(CELLS) if generator.random() < 0.08 else valid_cell(generator, i)
                for i in range(width)
            ]
            rows.append("[" + ",".join(cells) + "]")
        text = '{"instances": [' + ",".join(rows) + "]}"
        twist = generator.random()
        if twist < 0.03:
            text = text.replace('"instances"', '"instances", "extra": 1', 1)
        elif twist < 0.06:
            text = text.replace("[[", "[", 1)  # a flat row, or broken nesting
        elif twist < 0.08:
            text = " \n" + text + "\t"
        elif twist < 0.10:
            text = text[: generator.randrange(len(text))]  # truncated
        elif twist < 0.12:
            text = text.replace(
                '"instances"', generator.choice(['"eeinstances"', '"instancEs"', '"inst ances"'])
            )
        elif twist < 0.14:
            text = text.replace("]]}", "], 7]}")  # a number among the rows
        made.append(text.encode())
    return made


def valid_cell(generator: random.Random, index: int) -> str:
    if index == 0:
        return repr(generator.uniform(-1e6, 1e6))
    if index == 1:
        return repr(round(generator.uniform(0, 10), 3))
    if index == 2:
        return str(generator.randint(-5, 100)) + generator.choice(["", ".0"])
    return str(generator.randint(-(2**40), 2**40))


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_agrees_with_the_exact_path(seed: int) -> None:
    inputs = schema()
    accepted = vectorised = 0
    for body in bodies(seed, 1500):
        fast = outcome(inputs.validate_json, body)
        exact = outcome(inputs.validate_json_exactly, body)
        assert fast == exact, body
        accepted += fast[0] == "accepted"
        vectorised += isinstance(inputs._numeric_array_body(body), np.ndarray)
    # The comparison covered accepted bodies, most of them through the vectorised path.
    assert accepted > 300
    assert vectorised > 0.9 * accepted


def test_the_fast_path_takes_plain_numeric_bodies() -> None:
    inputs = schema()
    rows = inputs.validate_json(b'{"instances": [[1.5, 2, 3, 4], [0, 10, -5, 9007199254740991]]}')

    assert isinstance(rows, np.ndarray)
    assert rows.tolist() == [[1.5, 2.0, 3.0, 4.0], [0.0, 10.0, -5.0, 9007199254740991.0]]
    assert rows.flags.writeable  # a pipeline's own step may change its input in place


@pytest.mark.parametrize(
    "instances",
    [
        [[1, 2, 3.5, 4]],  # int feature given a fraction
        [[1, 11, 3, 4]],  # above the bound
        [[FLOAT32_MAX * 2, 1, 3, 4]],  # beyond float32
        [[1, 2, 3]],  # short row
        [[1, 2, 3, 4]] * 6,  # over max_rows
    ],
)
def test_a_matrix_outside_the_schema_is_left_to_the_exact_path(instances: list[Any]) -> None:
    inputs = schema()
    matrix = np.array(instances, dtype=np.float64)

    assert inputs.validate_matrix(matrix) is None
    with pytest.raises(ServiceError):
        inputs.validate_json(json.dumps({"instances": instances}).encode())


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[[1], 2, 3, 4]]}',  # a nested array as a cell
        b'{"instances": [[1, 2, 3], [4, 5, 6, 7, 8]]}',  # ragged rows, as many cells as 2 x 4
        b'{"instances": [[1, 2, 3, 4], 5]}',  # a number among the rows
        b'{"eeinstances": [[1, 2, 3, 4]]}',  # a key that differs only in deleted bytes
        b'{"instances": [[1, 2, 3, 18446744073709551616]]}',  # beyond 64-bit integers
        b'{"instances": [[1, 2, 3, 4]]} [',  # trailing garbage
    ],
)
def test_bodies_the_vectorised_parser_leaves_to_the_exact_path(body: bytes) -> None:
    inputs = schema()

    assert inputs._numeric_array_body(body) is None
    assert outcome(inputs.validate_json, body) == outcome(inputs.validate_json_exactly, body)


# One feature: each row's skeleton is "[]" whether it holds a number or nothing, so only the
# parsed count tells an empty row from a full one.
ONE_FEATURE = [FeatureSpec(name="x", dtype="float")]


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1.5], []]}',
        b'{"instances": [[], [2.5]]}',
        b'{"instances": [[]]}',
        b'{"instances": [[1.5], [2.5]]}',
    ],
)
def test_one_feature_rows_hold_one_number_each(body: bytes) -> None:
    inputs = schema(features=ONE_FEATURE)

    assert outcome(inputs.validate_json, body) == outcome(inputs.validate_json_exactly, body)


# -- CSV uploads --------------------------------------------------------------------------------
CSV_CELLS = [
    "0", "1", "-1", "+1", "3.0", "3.5", "-5", "-6", "100", "101", "007", "10", "10.0", "1e2",
    "1E2", ".5", "5.", "1e400", "-0", "", " ", " 7", "7 ", "nan", "NaN", "inf", "-inf", "1_0",
    "1,5", "0x10", "1e", "+-1", "1.2.3", "e5", "9007199254740993", "3.4e38", "3.5e38", "١",
    "-0.0", "1e-0", " -0", "-0 ", "\t4", "4\r5", "\r5", "5\r", "18446744073709551616", "-1e-400",
    "[1]",
]  # fmt: skip


@pytest.fixture(params=["compiled", "simdjson"])
def float_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every all-float CSV test runs twice: with the compiled reader (app/native) first, and
    with simdjson alone, as where no C compiler built it."""
    if request.param == "simdjson":
        monkeypatch.setattr(native, "HOT_PATH", None)
    else:
        require_hot_path()
    return str(request.param)


def csv_bodies(seed: int, count: int) -> list[bytes]:
    generator = random.Random(seed)
    names = [feature.name for feature in FEATURES]
    made = []
    for _ in range(count):
        order = generator.sample(range(4), 4)  # columns in any order
        lines = [",".join(names[i] for i in order)]
        for _ in range(generator.choice([1, 1, 2, 3, 6])):
            row = [
                generator.choice(CSV_CELLS)
                if generator.random() < 0.08
                else valid_cell(generator, i).removesuffix(".0")  # ints as a CSV writes them
                for i in range(4)
            ]
            if generator.random() < 0.02:
                row.append("1")  # a row too long
            cells = [row[i] for i in order] + row[4:]
            if generator.random() < 0.05:
                cells = [f'"{cell}"' for cell in cells]  # quoted cells
            lines.append(",".join(cells))
            if generator.random() < 0.03:
                lines.append(generator.choice(["", " ", ",,,"]))  # blank-looking rows
        text = ("\r\n" if generator.random() < 0.2 else "\n").join(lines)
        twist = generator.random()
        if twist < 0.05:
            text += generator.choice(["\n", "\r\n", "\n\n", "\r"])  # how files end
        elif twist < 0.07:
            text = "\ufeff" + text  # a byte-order mark
        elif twist < 0.09:
            text = text.replace(",", " ,", 1)  # a header name with a space
        made.append(text.encode())
    return made


def csv_outcome(inputs: InputSchema, body: bytes, *, keep_cells: bool) -> tuple[str, Any]:
    try:
        table = read_csv(io.BytesIO(body), inputs, keep_cells=keep_cells)
    except ServiceError as exc:
        return ("refused", type(exc).__name__)
    values = np.array(table.rows, dtype=np.float64)
    # repr tells -0.0 from 0.0 (equal as floats) for float features; an integer has one zero.
    values[:, [feature.dtype == "int" for feature in inputs.card.features]] += 0.0
    return ("accepted", repr(values.tolist()))


@pytest.mark.parametrize("features", [FEATURES, FLOAT_FEATURES], ids=["int columns", "floats"])
@pytest.mark.parametrize("seed", range(4))
def test_csv_fast_paths_agree_with_the_exact_path(
    seed: int, features: list[FeatureSpec], float_reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectorised readers: the one that keeps cells to echo (csv module, then numpy) and
    the ones for JSON replies (the compiled reader or simdjson when every feature is a float,
    else pandas' C parser). Values are compared with the sign of zero."""
    inputs = schema(max_rows=5, features=features)
    bodies_ = csv_bodies(seed, 800)
    echoing = [csv_outcome(inputs, body, keep_cells=True) for body in bodies_]
    fast = [csv_outcome(inputs, body, keep_cells=False) for body in bodies_]
    accepted = [
        body for body, (kind, _) in zip(bodies_, echoing, strict=True) if kind == "accepted"
    ]
    vectorised = {
        keep: sum(isinstance(table_rows(inputs, body, keep), np.ndarray) for body in accepted)
        for keep in (True, False)
    }
    by_float_reader = sum(tabular._read_float_table(body, inputs) is not None for body in accepted)
    by_compiled = sum(
        native.HOT_PATH is not None
        and native.HOT_PATH.read_float_rows(body, body.find(b"\n") + 1, len(features)) is not None
        for body in accepted
    )
    monkeypatch.setattr(tabular, "numeric_matrix", lambda *args: None)
    monkeypatch.setattr(tabular, "_read_numeric_table", lambda *args: None)
    exact = [csv_outcome(inputs, body, keep_cells=True) for body in bodies_]

    for body, by_cells, by_fast, by_pydantic in zip(bodies_, echoing, fast, exact, strict=True):
        assert by_cells == by_pydantic, body
        assert by_fast == by_pydantic, body
    # Most accepted files took the vectorised paths (the twists send some to the exact path).
    assert len(accepted) > 150
    assert vectorised[True] > 0.8 * len(accepted)
    assert vectorised[False] > 0.8 * len(accepted)
    if features is FLOAT_FEATURES:
        assert by_float_reader > 0.7 * len(accepted)
        # The compiled reader leaves long mantissas (2**53 + 1 ...) and spaces to simdjson.
        assert by_compiled > 0.3 * len(accepted) if float_reader == "compiled" else not by_compiled
    else:
        assert by_float_reader == 0


def table_rows(inputs: InputSchema, body: bytes, keep_cells: bool) -> Rows:
    return read_csv(io.BytesIO(body), inputs, keep_cells=keep_cells).rows


@pytest.mark.parametrize(
    ("text", "by_float_reader"),
    [
        (b"x\n1.5\n2.5\n", True),
        (b"x\n1.5\n2.5", True),  # no line ending after the last row
        (b"x\r\n1.5\r\n2.5", True),
        (b"x\n1.5\n\n2.5\n", False),  # a blank line: the exact path skips it
        (b"x\n1.5\n2.5\n\n", False),
        (b"x\n\n", False),
    ],
)
def test_one_feature_csv_rows(text: bytes, by_float_reader: bool, float_reader: str) -> None:
    inputs = schema(features=ONE_FEATURE)

    assert (tabular._read_float_table(text, inputs) is not None) is by_float_reader
    assert csv_outcome(inputs, text, keep_cells=False) == csv_outcome(inputs, text, keep_cells=True)

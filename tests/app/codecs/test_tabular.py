"""CSV uploads (app.codecs.tabular, app.codecs.csv_reply) through the real input schemas of models fitted in-process: parsing,
physical line numbers in errors, limits, and the CSV reply compared with `predict`."""

import csv
import io
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

import app.codecs.csv_reply as csv_reply
import app.codecs.tabular as tabular
from app.codecs.csv_reply import csv_reply_lines
from app.codecs.tabular import CsvTable, read_csv
from app.errors import InvalidInput, ServiceError, UnreadableFile
from app.serving.model import LoadedModel, predict
from app.serving.registry import scan_store
from schemas.cards import FeatureSpec
from schemas.predict import ClassPrediction, ValuePrediction
from tests.conftest import FLOWER_FEATURES, build_store, write_model

FLOWERS_HEADER = ",".join(FLOWER_FEATURES)
# Feature names that need CSV quoting, to check the reply's quoting round-trips.
ODD_FEATURES = ["width, cm", 'say "hi"']


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    store = build_store(tmp_path_factory.mktemp("store") / "models")
    xs = np.random.default_rng(3).uniform(0, 5, size=(12, 2))
    write_model(
        store,
        LinearRegression().fit(xs, xs @ np.array([1.5, 0.5])),
        name="odd",
        task="regression",
        features=[FeatureSpec(name=name, dtype="float") for name in ODD_FEATURES],
    )
    snapshot = scan_store(store, max_rows=50, trusted_types=[])
    assert not snapshot.problems
    return {name: entry.versions[1] for name, entry in snapshot.entries.items()}


def read(model: LoadedModel, content: bytes | str, **kwargs: Any) -> CsvTable:
    data = content.encode() if isinstance(content, str) else content
    return read_csv(io.BytesIO(data), model.inputs, **kwargs)


def refusal(model: LoadedModel, content: bytes | str, **kwargs: Any) -> Any:
    """The detail of the ServiceError that reading `content` raises."""
    with pytest.raises(ServiceError) as caught:
        read(model, content, **kwargs)
    return caught.value.detail


def invalid(model: LoadedModel, content: bytes | str) -> list[dict[str, Any]]:
    with pytest.raises(InvalidInput) as caught:
        read(model, content)
    assert isinstance(caught.value.detail, list)
    return caught.value.detail


def unreadable(model: LoadedModel, content: bytes | str) -> str:
    with pytest.raises(UnreadableFile) as caught:
        read(model, content)
    assert isinstance(caught.value.detail, str)
    return caught.value.detail


def locs(errors: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in errors]


# -- reading ------------------------------------------------------------------------------------
def test_columns_in_any_order_give_rows_in_feature_order(models: dict[str, LoadedModel]) -> None:
    table = read(models["pets"], "age,weight,colour\n4,3.5,ginger\n12, 5.25 ,white\n")
    assert table.columns == ["age", "weight", "colour"]
    assert table.cells == [["4", "3.5", "ginger"], ["12", " 5.25 ", "white"]]
    assert table.rows == [("ginger", 3.5, 4), ("white", 5.25, 12)]


def test_header_names_are_stripped(models: dict[str, LoadedModel]) -> None:
    table = read(models["line"], " b , a\n1,2\n")
    assert table.columns == ["b", "a"]
    assert np.asarray(table.rows).tolist() == [[2.0, 1.0]]


@pytest.mark.parametrize(
    "content",
    [
        b"a,b\n1,2\n3,4\n",
        b"a,b\r\n1,2\r\n3,4\r\n",
        b"a,b\r1,2\r3,4",
        b"\xef\xbb\xbfa,b\r\n1,2\r\n3,4",
        b'"a","b"\n"1","2"\n"3",4\n',
    ],
    ids=["lf", "crlf", "cr", "bom-crlf", "quoted"],
)
def test_encodings_line_endings_and_quoting(models: dict[str, LoadedModel], content: bytes) -> None:
    table = read(models["line"], content)
    assert table.columns == ["a", "b"]
    assert np.asarray(table.rows).tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_the_callers_stream_stays_open(models: dict[str, LoadedModel]) -> None:
    stream = io.BytesIO(b"a,b\n1,2\n")
    read_csv(stream, models["line"].inputs)
    assert not stream.closed


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(
    models: dict[str, LoadedModel],
) -> None:
    content = "\n a , b \r\n\r\n1,2\n,\n  \n3,x\n\n"
    assert invalid(models["line"], content) == [
        {
            "loc": ["file", "line", 7, "b"],
            "msg": "Input should be a valid number, unable to parse string as a number",
            "type": "float_parsing",
        }
    ]


def test_quoted_commas_and_newlines_stay_in_one_cell(models: dict[str, LoadedModel]) -> None:
    # Line 3 opens a quoted cell that ends on line 4; the next row starts on line 5.
    content = 'colour,weight,age\nginger,3.5,4\n"white,\nstriped",3.5,4\n"black, tabby",2,x\n'
    errors = invalid(models["pets"], content)
    assert locs(errors) == [
        ("file", "line", 3, "colour"),
        ("file", "line", 5, "colour"),
        ("file", "line", 5, "age"),
    ]
    assert {error["type"] for error in errors[:2]} == {"literal_error"}


@pytest.mark.parametrize(
    ("cell", "kind"),
    [
        ("", "float_parsing"),
        ("   ", "float_parsing"),
        ("nan", "finite_number"),
        ("NaN", "finite_number"),
        ("inf", "finite_number"),
        ("-Infinity", "finite_number"),
        ("1e999", "finite_number"),
        ("true", "float_parsing"),
        ("-0.1", "greater_than_equal"),
    ],
)
def test_bad_cells_are_refused_at_their_line_and_column(
    models: dict[str, LoadedModel], cell: str, kind: str
) -> None:
    content = f"{FLOWERS_HEADER}\n5.1,3.5,1.4,0.2\n\n5.1,{cell},1.4,0.2\n"
    errors = invalid(models["flowers"], content)
    assert [(error["loc"], error["type"]) for error in errors] == [
        (["file", "line", 4, "sepal_width"], kind)
    ]


def test_every_bad_row_is_reported_in_line_order(models: dict[str, LoadedModel]) -> None:
    content = "a,b\n1,x\n1,2,3\n\n1\ny,2\n"
    errors = invalid(models["line"], content)
    assert [(error["loc"], error["type"]) for error in errors] == [
        (["file", "line", 2, "b"], "float_parsing"),
        (["file", "line", 3], "row_length"),
        (["file", "line", 5], "row_length"),
        (["file", "line", 6, "a"], "float_parsing"),
    ]
    assert errors[1]["msg"] == "Expected 2 cells (one per header column), got 3"
    assert errors[2]["msg"] == "Expected 2 cells (one per header column), got 1"


def test_missing_and_unknown_columns_are_named_together(models: dict[str, LoadedModel]) -> None:
    errors = invalid(models["pets"], "weight,colour,size,\n1,ginger,3,\n")
    assert [(error["loc"], error["type"]) for error in errors] == [
        (["file", "header"], "missing_columns"),
        (["file", "header"], "unknown_columns"),
    ]
    assert "'age'" in errors[0]["msg"]
    assert "Line 1" in errors[0]["msg"]
    assert "'size'" in errors[1]["msg"]
    assert "unnamed column" in errors[1]["msg"]


def test_duplicate_columns_are_refused(models: dict[str, LoadedModel]) -> None:
    errors = invalid(models["line"], "a,b, a\n1,2,3\n")
    assert [(error["loc"], error["type"]) for error in errors] == [
        (["file", "header"], "duplicate_columns")
    ]
    assert "'a'" in errors[0]["msg"]


@pytest.mark.parametrize(
    "content",
    [b"", b"\xef\xbb\xbf", b"  \r\n\n\t\n", b",,\n"],
    ids=["0-bytes", "bom", "ws", "commas"],
)
def test_an_empty_file_is_unreadable(models: dict[str, LoadedModel], content: bytes) -> None:
    assert unreadable(models["line"], content).startswith("The file is empty")


def test_a_header_without_rows_is_invalid(models: dict[str, LoadedModel]) -> None:
    assert invalid(models["line"], "a,b\r\n\r\n") == [
        {"loc": ["file"], "msg": "The file has a header row but no data rows", "type": "no_rows"}
    ]


@pytest.mark.parametrize(
    "content",
    [
        "a,b\n1,2\ncaf\u00e9,2\n".encode("latin-1"),
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00",
        b"\xff\xfea\x00,\x00b\x00",  # UTF-16
    ],
    ids=["latin-1", "png", "utf-16"],
)
def test_non_utf8_files_are_unreadable(models: dict[str, LoadedModel], content: bytes) -> None:
    assert "not UTF-8 text" in unreadable(models["line"], content)


def test_a_nul_byte_is_unreadable(models: dict[str, LoadedModel]) -> None:
    message = unreadable(models["line"], b"a,b\n1,2\n3\x00,4\n")
    assert "line 3" in message
    assert "NUL" in message


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ('a,b\n1,2\n"3,4\n5,6\n', 3),  # unterminated: names the line the quote opened on
        ('a,b\n1,2\n\n"3"x,4\n', 4),  # text after a closing quote
    ],
)
def test_bad_quoting_is_unreadable(models: dict[str, LoadedModel], content: str, line: int) -> None:
    message = unreadable(models["line"], content)
    assert message.startswith(f"Not a valid CSV file: line {line}:")


def test_a_quote_inside_an_unquoted_cell_is_kept_and_then_refused(
    models: dict[str, LoadedModel],
) -> None:
    # Python's csv keeps it literally even in strict mode; it is never a number or a category.
    assert locs(invalid(models["line"], 'a,b\n1,2"\n')) == [("file", "line", 2, "b")]


def test_a_huge_cell_is_unreadable(models: dict[str, LoadedModel]) -> None:
    padding = " " * (tabular.MAX_CELL_CHARS + 1)
    message = unreadable(models["line"], f"a,b\n1,2\n3,4{padding}\n")
    assert "line 3" in message
    assert "over 65536 characters" in message


def test_a_cell_past_the_csv_modules_own_limit_is_unreadable(
    models: dict[str, LoadedModel],
) -> None:
    padding = " " * (csv.field_size_limit() + 1)
    assert unreadable(models["line"], f'a,b\n1,2\n3,"4{padding}"\n').startswith(
        "Not a valid CSV file: line 3:"
    )


# -- the row limit ------------------------------------------------------------------------------
def flower_csv(count: int, *, pad: int = 0) -> bytes:
    space = " " * pad
    return (FLOWERS_HEADER + "\n" + f"5.1,3.5,1.4,0.2{space}\n" * count).encode()


def test_exactly_max_rows_is_accepted(models: dict[str, LoadedModel]) -> None:
    assert len(read(models["flowers"], flower_csv(50)).rows) == 50


def test_one_row_over_the_limit_is_invalid_and_named(models: dict[str, LoadedModel]) -> None:
    detail = refusal(models["flowers"], flower_csv(51))
    # Header on line 1, so the 51st data row is line 52.
    assert detail == [
        {
            "loc": ["file", "line", 52],
            "msg": "Too many rows: at most 50 per request",
            "type": "too_long",
        }
    ]


def test_blank_lines_do_not_count_towards_the_limit(models: dict[str, LoadedModel]) -> None:
    content = FLOWERS_HEADER + "\n" + "5.1,3.5,1.4,0.2\n\n" * 50
    assert len(read(models["flowers"], content).rows) == 50


def test_a_lower_max_rows_argument_wins(models: dict[str, LoadedModel]) -> None:
    assert len(read(models["flowers"], flower_csv(3), max_rows=3).rows) == 3
    assert refusal(models["flowers"], flower_csv(4), max_rows=3)[0]["msg"] == (
        "Too many rows: at most 3 per request"
    )


def test_a_higher_max_rows_argument_cannot_loosen_the_schema(
    models: dict[str, LoadedModel],
) -> None:
    assert refusal(models["flowers"], flower_csv(51), max_rows=100)[0]["msg"] == (
        "Too many rows: at most 50 per request"
    )


def test_the_limit_stops_reading_before_the_rest_of_the_file(
    models: dict[str, LoadedModel],
) -> None:
    # Rows padded with (stripped) spaces, so the bytes past row 51 lie beyond the decoder's
    # first chunks: reading the whole file would hit the invalid UTF-8 at the end.
    content = flower_csv(1000, pad=100) + b"\xff\xfe\x00 not text"
    stream = io.BytesIO(content)
    with pytest.raises(InvalidInput, match="InvalidInput") as caught:
        read_csv(stream, models["flowers"].inputs)
    assert isinstance(caught.value.detail, list)
    assert caught.value.detail[0]["msg"] == "Too many rows: at most 50 per request"
    assert stream.tell() < len(content) // 4


# -- the CSV reply ------------------------------------------------------------------------------
def reply(model: LoadedModel, table: CsvTable) -> tuple[list[str], list[list[str]], Any]:
    response = predict(model, table.rows)
    classes = model.card.target.classes
    chunks = list(
        csv_reply_lines(table, response, None if classes is None else list(map(str, classes)))
    )
    text = "".join(chunks)
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    header, *lines = csv.reader(io.StringIO(text, newline=""), strict=True)
    return header, lines, response


def test_classification_reply_has_labels_and_probabilities(
    models: dict[str, LoadedModel],
) -> None:
    content = (
        "petal_width,sepal_length,sepal_width,petal_length\n0.2,5.1,3.5,1.4\n2.0,6.6,3.0,5.5\n"
    )
    table = read(models["flowers"], content)
    header, lines, response = reply(models["flowers"], table)
    classes = ["setosa", "versicolor", "virginica"]
    assert header == [*table.columns, "prediction", *(f"probability_{c}" for c in classes)]
    assert [line[:4] for line in lines] == table.cells
    for line, item in zip(lines, response.predictions, strict=True):
        assert isinstance(item, ClassPrediction)
        assert item.probabilities is not None
        assert line[4] == item.label
        assert [float(p) for p in line[5:]] == [item.probabilities[c] for c in classes]
    assert [line[4] for line in lines] == ["setosa", "virginica"]


def test_pipeline_reply_echoes_cells_as_uploaded(models: dict[str, LoadedModel]) -> None:
    content = 'weight,colour,age\n" 5.5 ",ginger,4\n2.5,"white",12\n'
    table = read(models["pets"], content)
    header, lines, response = reply(models["pets"], table)
    assert header == ["weight", "colour", "age", "prediction", "probability_cat", "probability_dog"]
    assert [line[:3] for line in lines] == [[" 5.5 ", "ginger", "4"], ["2.5", "white", "12"]]
    expected = [item.model_dump() for item in response.predictions]
    got = [
        {"label": line[3], "probabilities": {"cat": float(line[4]), "dog": float(line[5])}}
        for line in lines
    ]
    assert got == expected


def test_regression_reply_values_round_trip(models: dict[str, LoadedModel]) -> None:
    table = read(models["line"], "a,b\n0.1,0.2\n-3,1e-7\n1234567.891,2\n")
    header, lines, response = reply(models["line"], table)
    assert header == ["a", "b", "prediction"]
    values = [item.value for item in response.predictions if isinstance(item, ValuePrediction)]
    assert [float(line[2]) for line in lines] == values
    assert len(values) == 3


def test_reply_quoting_round_trips(models: dict[str, LoadedModel]) -> None:
    content = '"say ""hi""","width, cm"\n1,2\n 3 ,"4"\n'
    table = read(models["odd"], content)
    assert table.columns == ['say "hi"', "width, cm"]
    assert np.asarray(table.rows).tolist() == [[2.0, 1.0], [4.0, 3.0]]
    header, lines, _ = reply(models["odd"], table)
    assert header == ['say "hi"', "width, cm", "prediction"]
    assert [line[:2] for line in lines] == [["1", "2"], [" 3 ", "4"]]


def test_reply_is_chunked_and_complete(
    models: dict[str, LoadedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csv_reply, "REPLY_CHUNK_ROWS", 7)
    table = read(models["line"], "a,b\n" + "".join(f"{i},{i / 3}\n" for i in range(50)))
    response = predict(models["line"], table.rows)
    chunks = list(csv_reply_lines(table, response, None))
    assert len(chunks) == 8  # ceil(50 / 7); the header rides with the first
    header, *lines = csv.reader(io.StringIO("".join(chunks), newline=""))
    assert header == ["a", "b", "prediction"]
    assert [line[:2] for line in lines] == table.cells

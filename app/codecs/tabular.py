"""CSV uploads for tabular models: read an uploaded file into validated rows, and write the CSV
reply (the uploaded columns followed by the prediction columns). Free of FastAPI.

Line numbers in errors are physical lines of the file (the header is line 1 when nothing
precedes it), so blank lines and quoted cells spanning several lines keep them right.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from app import native
from app.errors import InvalidInput, UnreadableFile
from app.serving.schema import (
    NUMBER_TEXT_BYTES,
    InputSchema,
    Matrix,
    Row,
    Rows,
    number_rows,
    too_many_rows,
)

# Checked per cell here rather than with `csv.field_size_limit`, which is process-global and
# would change every other csv user in the worker. Cells past csv's own default limit (128 KiB)
# fail inside the reader and are refused just the same.
MAX_CELL_CHARS = 64 * 1024


@dataclass(frozen=True)
class CsvTable:
    columns: list[str]  # header as uploaded (stripped names, original order)
    cells: list[list[str]]  # raw text cells per data row, in uploaded column order (for echoing;
    # empty when read with keep_cells=False)
    rows: Rows  # validated rows in the model's feature order


def read_csv(
    stream: BinaryIO, inputs: InputSchema, *, max_rows: int | None = None, keep_cells: bool = True
) -> CsvTable:
    """Read a UTF-8 CSV with a header row naming the model's features (in any order).

    Reads incrementally and stops as soon as the row limit is passed. Raises `UnreadableFile`
    (not UTF-8, NUL bytes, bad quoting, empty), `InvalidInput` (header, row lengths, cell
    values, and too many rows; locations `["file", "line", N, feature]`).
    `max_rows` can only tighten the schema's own limit, which the validator enforces anyway.
    """
    limit = inputs.max_rows if max_rows is None else min(max_rows, inputs.max_rows)
    if not keep_cells and inputs.numeric:
        start = stream.tell()
        table = _read_numeric_table(stream, inputs, limit)
        if table is not None:
            return table
        stream.seek(start)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        return _read(_checked_lines(text), inputs, limit)
    finally:
        text.detach()  # the caller owns `stream`: don't close it with the wrapper


def _read_numeric_table(stream: BinaryIO, inputs: InputSchema, limit: int) -> CsvTable | None:
    """The fast paths for an all-numeric model's CSV when no cells need echoing, straight to a
    float64 matrix and the vectorised check: the compiled reader or simdjson when every feature
    is a float, else pandas' C parser. None on any doubt (a header, cell, row or encoding they
    do not plainly accept): the exact reader then accepts the file or names every problem, so
    every path accepts the same files with the same values (tested)."""
    data = stream.read()
    read = _read_float_table(data, inputs) or _read_with_pandas(data, inputs)
    if read is None:
        return None
    columns, matrix = read
    if not 1 <= len(matrix) <= limit:
        return None
    checked = inputs.validate_matrix(matrix)
    return None if checked is None else CsvTable(columns=columns, cells=[], rows=checked)


def _read_float_table(data: bytes, inputs: InputSchema) -> tuple[list[str], Matrix] | None:
    """Every feature a float: the header, then the data lines by the compiled reader when it is
    built and sure of every cell (app/native), else by simdjson."""
    if any(feature.dtype != "float" for feature in inputs.card.features):
        return None  # integer cells must be written as integers: pandas reads them as text
    header_end = data.find(b"\n")
    if header_end < 0:
        return None
    try:
        header = data[:header_end].removesuffix(b"\r").decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    columns = header.split(",")
    names = inputs.feature_names
    if sorted(columns) != sorted(names):
        return None  # includes names with spaces around them: the exact path strips those
    hot_path = native.HOT_PATH
    matrix = (
        None if hot_path is None else hot_path.read_float_rows(data, header_end + 1, len(names))
    )
    if matrix is None:
        matrix = read_float_lines(data[header_end + 1 :], len(names))
    if matrix is None:
        return None
    if columns != names:
        matrix = matrix[:, [columns.index(name) for name in names]]
    return columns, matrix


def read_float_lines(lines: bytes, width: int) -> Matrix | None:
    """The data lines, which may hold only numbers, commas and whitespace, become one JSON
    array of rows (`1,2\n3,4` -> `[[1,2],[3,4]]`) for `number_rows`. JSON's number grammar is a
    subset of what the exact path's float parsing accepts, and both round correctly, so a file
    read here reads the same there."""
    if (
        not lines
        or lines.translate(None, NUMBER_TEXT_BYTES)
        # A lone carriage return ends a line for the csv module, but is blank space to JSON.
        or (b"\r" in lines and lines.count(b"\r") != lines.count(b"\r\n") + lines.endswith(b"\r"))
        or _has_negative_integer_zero(lines)
    ):
        return None
    # One line ending after the last row is usual; any other blank line makes an empty row,
    # which `number_rows` refuses.
    last = -3 if lines.endswith(b"\n") else None
    text = b"".join((b"[[", lines.replace(b"\n", b"],[")[:last], b"]]"))
    return number_rows(text, width=width)


def _has_negative_integer_zero(lines: bytes) -> bool:
    """Whether a cell is "-0": -0.0 as text, but the integer 0 to JSON."""
    # A file without a minus sign (most data) skips the pattern: one `memchr` (~0.03 ms for
    # 2 MB) instead of the pattern's scan (~0.6 ms).
    return b"-" in lines and any(
        match.start() == 0 or lines[match.start() - 1] not in b"eE"
        for match in _MINUS_ZERO.finditer(lines)
    )


def _read_with_pandas(data: bytes, inputs: InputSchema) -> tuple[list[str], Matrix] | None:
    """pandas' C parser straight to float64, integer columns as text."""
    if not _one_field_per_feature_on_every_line(data, len(inputs.feature_names)):
        return None
    features = inputs.card.features
    # Integer columns are read as text, to accept only integers as written ("12", not "1e1" or
    # "12.0", which the exact path judges); float columns straight to float64.
    dtypes = {f.name: str if f.dtype == "int" else np.float64 for f in features}
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            encoding="utf-8-sig",
            dtype=dtypes,
            engine="c",  # its float parser rounds correctly (the tests compare with float())
            skip_blank_lines=True,
        )
        columns = [str(name) for name in frame.columns]
        if sorted(columns) != sorted(dtypes):
            return None  # includes names with spaces around them: the exact path strips those
        for feature in features:
            if feature.dtype == "int":
                text = frame[feature.name].tolist()
                if "".join(text).translate(_NOT_INT_TEXT) or "" in text:
                    return None
                frame[feature.name] = frame[feature.name].astype(np.float64)
        matrix = frame[inputs.feature_names].to_numpy(dtype=np.float64)
    except (ValueError, TypeError, UnicodeDecodeError, pd.errors.ParserError):
        return None  # EmptyDataError is a ValueError; TypeError: a missing (NaN) integer cell
    return columns, matrix


def _one_field_per_feature_on_every_line(data: bytes, width: int) -> bool:
    """No quoting, and every non-empty line has exactly `width` fields: what lets pandas read
    the file the way the csv module would (pandas treats a row with one field too many as
    naming the index, and fills a short row with NaN)."""
    if b'"' in data:
        return False
    text = np.frombuffer(data, dtype=np.uint8)
    ends = np.append(np.flatnonzero(text == ord("\n")), len(text))
    starts = np.insert(ends[:-1] + 1, 0, 0)
    commas = np.flatnonzero(text == ord(","))
    per_line = np.searchsorted(commas, ends) - np.searchsorted(commas, starts)
    lengths = ends - starts
    carriage = np.zeros(len(ends), dtype=bool)
    carriage[lengths > 0] = text[ends[lengths > 0] - 1] == ord("\r")
    empty = lengths - carriage == 0
    return bool((per_line[~empty] == width - 1).all())


def _checked_lines(text: Iterable[str]) -> Iterator[str]:
    number = 0
    try:
        for number, line in enumerate(text, start=1):
            if "\x00" in line:
                raise UnreadableFile(
                    f"The file is not a text CSV file: line {number} contains a NUL byte"
                )
            yield line
    except UnicodeDecodeError as exc:
        where = f" (invalid bytes after line {number})" if number else ""
        raise UnreadableFile(
            f"The file is not UTF-8 text{where}: upload a CSV file saved as UTF-8"
        ) from exc


def _read(lines: Iterator[str], inputs: InputSchema, limit: int) -> CsvTable:
    rows = _numbered_rows(lines)
    header_line, header = next(rows, (0, []))
    if not header:
        raise UnreadableFile("The file is empty: expected a header row naming the features")
    columns = [name.strip() for name in header]
    check_header(columns, inputs.feature_names, header_line)
    cells: list[list[str]] = []
    numbers: list[int] = []
    for number, row in rows:
        if len(cells) == limit:
            raise too_many_rows(limit, ["file", "line", number])
        cells.append(row)
        numbers.append(number)
    if not cells:
        raise InvalidInput(
            [
                {
                    "loc": ["file"],
                    "msg": "The file has a header row but no data rows",
                    "type": "no_rows",
                }
            ]
        )
    return CsvTable(columns=columns, cells=cells, rows=_validate(columns, cells, numbers, inputs))


def _numbered_rows(lines: Iterator[str]) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on; blank rows (no cells, or only empty or
    whitespace cells) are skipped."""
    reader = csv.reader(lines, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise UnreadableFile(f"Not a valid CSV file: line {start}: {exc}") from exc
        joined = "".join(row)  # one string per row: cheaper than looking at each cell
        if len(joined) > MAX_CELL_CHARS and max(map(len, row)) > MAX_CELL_CHARS:
            raise UnreadableFile(
                f"Not a valid CSV file: line {start} has a cell over {MAX_CELL_CHARS} characters"
            )
        if joined and not joined.isspace():
            yield start, row


def check_header(columns: list[str], features: list[str], line: int, *, loc: str = "file") -> None:
    """The header must name each feature once: InvalidInput naming what is duplicated, missing
    or unknown, at `[loc, "header"]`."""
    errors: list[dict[str, Any]] = []
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    missing = [name for name in features if name not in columns]
    unknown = [name for name in dict.fromkeys(columns) if name not in features]
    if duplicates:
        errors.append(
            _header_error(line, "Duplicate columns", duplicates, "duplicate_columns", loc)
        )
    if missing:
        errors.append(_header_error(line, "Missing columns", missing, "missing_columns", loc))
    if unknown:
        errors.append(_header_error(line, "Unknown columns", unknown, "unknown_columns", loc))
    if errors:
        raise InvalidInput(errors)


def _header_error(line: int, problem: str, names: list[str], kind: str, loc: str) -> dict[str, Any]:
    listed = ", ".join(repr(name) if name else "(an unnamed column)" for name in names)
    return {
        "loc": [loc, "header"],
        "msg": f"Line {line}: {problem}: {listed}. The header must name each feature once.",
        "type": kind,
    }


# Characters a numeric cell may hold for the vectorised path; anything else (spaces, NaN,
# "1_000", a decimal comma, an empty cell) goes to the exact path, which accepts or names it.
_NOT_FLOAT_TEXT = str.maketrans("", "", "0123456789.eE+-")
_NOT_INT_TEXT = str.maketrans("", "", "0123456789+-")
# "-0" not followed by more of a number ("-0.5", "-0e1", "-01"). A literal start keeps the
# search fast; a lookbehind for exponents ("1e-0") would make it scan byte by byte.
_MINUS_ZERO = re.compile(rb"-0(?![0-9.eE])")


def numeric_matrix(
    columns: list[str], cells: list[list[str]], inputs: InputSchema
) -> Matrix | None:
    """All rows of an all-numeric model's CSV as one checked float64 matrix in feature order, or
    None when any cell is not plainly a number in range (then the exact path decides)."""
    width = len(columns)
    if not inputs.numeric or any(len(row) != width for row in cells):
        return None
    if "".join(chain.from_iterable(cells)).translate(_NOT_FLOAT_TEXT):
        return None
    for feature in inputs.card.features:
        if feature.dtype == "int":  # integers are written as integers ("3", never "3.0")
            position = columns.index(feature.name)
            if "".join(row[position] for row in cells).translate(_NOT_INT_TEXT):
                return None
    try:
        matrix = np.array(cells, dtype=np.float64)
    except ValueError:  # "1e", "+-1", "": not a number after all
        return None
    order = [columns.index(name) for name in inputs.feature_names]
    return inputs.validate_matrix(matrix[:, order])


def _validate(
    columns: list[str], cells: list[list[str]], numbers: list[int], inputs: InputSchema
) -> Rows:
    """Validate all rows in one batch, then report errors at physical line numbers."""
    matrix = numeric_matrix(columns, cells, inputs)
    if matrix is not None:
        return matrix
    return _validate_exactly(columns, cells, numbers, inputs)


def _validate_exactly(
    columns: list[str], cells: list[list[str]], numbers: list[int], inputs: InputSchema
) -> list[Row]:
    """Cell by cell with pydantic: the path that names every offending cell."""
    errors: list[dict[str, Any]] = []
    records: list[dict[str, str]] = []
    record_lines: list[int] = []
    width = len(columns)
    for number, row in zip(numbers, cells, strict=True):
        if len(row) != width:
            errors.append(
                {
                    "loc": ["file", "line", number],
                    "msg": f"Expected {width} cells (one per header column), got {len(row)}",
                    "type": "row_length",
                }
            )
        else:
            records.append(dict(zip(columns, map(str.strip, row), strict=True)))
            record_lines.append(number)
    rows: list[Row] = []
    try:
        rows = inputs.validate_text_records(records, loc=("file", "line")) if records else []
    except InvalidInput as exc:
        assert isinstance(exc.detail, list)
        for issue in exc.detail:
            issue["loc"][2] = record_lines[issue["loc"][2]]  # row index -> line number
        errors.extend(exc.detail)
    if errors:
        errors.sort(key=lambda issue: issue["loc"][2])  # stable: keeps column order within a line
        raise InvalidInput(errors)
    return rows

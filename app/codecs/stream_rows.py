"""Pieces of a streamed body to chunks of validated rows: CSV (a header row naming the features
in any order, then one row per line) and NDJSON (one object keyed by feature name, or one array
in feature order, per line), for tabular models.

A chunk is validated at once when it can be: numbers straight into a float64 matrix (the
compiled CSV reader, or simdjson) and the vectorised check, else pydantic over all its records
together. Only a chunk holding a bad row is looked at row by row, so each bad row is answered in
its place with the error the file route (CSV) or `/predict` (JSON) would give it. Blank lines
are skipped; line numbers count every line of the body, the CSV header being line 1.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app import native
from app.codecs.stream_lines import LinePiece, Lines, Positions, split_lines
from app.codecs.tabular import check_header, numeric_matrix, read_float_lines
from app.errors import InvalidInput, MalformedBody, UnreadableFile
from app.serving.schema import InputSchema, Matrix, Row, Rows, number_rows
from app.serving.streaming import RowError, StreamChunk

# The bytes of numbers, commas and blank space within a line: deleted from NDJSON lines of
# number arrays they leave exactly "[]" per line.
_NUMBER_BYTES = b"0123456789.eE+-, \t\r"
_ONE_ROW = (
    "Each line must hold one row: an object keyed by feature name or an array in feature order"
)


@dataclass(frozen=True)
class Echo:
    """The cells a CSV reply echoes, already written as CSV: record i's are
    `text[starts[i] : starts[i] + lengths[i]]` (empty for a bad record)."""

    text: bytes
    starts: Positions
    lengths: Positions


@dataclass(frozen=True)
class CsvHeader:
    columns: list[str]  # as sent (names stripped), in the body's order
    positions: list[int]  # each feature's column, in feature order

    @property
    def in_feature_order(self) -> bool:
        return self.positions == list(range(len(self.positions)))


def read_csv_header(line: bytes, inputs: InputSchema) -> CsvHeader:
    """Line 1 of a CSV stream: it must name each feature once (any order)."""
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile("The body is not UTF-8 text: send CSV saved as UTF-8") from exc
    if "\x00" in text:
        raise UnreadableFile("The body is not CSV text: line 1 contains a NUL byte")
    try:
        row = next(csv.reader([text], strict=True), [])
    except csv.Error as exc:
        raise UnreadableFile(f"Not a valid CSV header: line 1: {exc}") from exc
    columns = [name.strip() for name in row]
    if not "".join(columns):
        raise UnreadableFile("Line 1 is empty: expected a header row naming the features")
    check_header(columns, inputs.feature_names, 1, loc="body")
    return CsvHeader(columns, [columns.index(name) for name in inputs.feature_names])


def too_long_chunk(piece: LinePiece, max_line_bytes: int) -> StreamChunk[Echo | None]:
    """The one over-long line a `too_long` piece stands for, answered with its error."""
    error = _too_long(piece.first_line, max_line_bytes)
    return StreamChunk([], 1, [(0, error)], [piece.first_line], _empty_echo(1))


def _too_long(line: int, limit: int) -> RowError:
    return RowError(line, None, f"Line is longer than {limit} bytes", "line_too_long")


def _empty_echo(records: int) -> Echo:
    zeros = np.zeros(records, dtype=np.int64)
    return Echo(b"", zeros, zeros.copy())


# -- CSV ------------------------------------------------------------------------------------


def decode_csv(
    piece: LinePiece, header: CsvHeader, inputs: InputSchema, *, echo: bool, max_line_bytes: int
) -> StreamChunk[Echo | None]:
    if piece.too_long:
        return too_long_chunk(piece, max_line_bytes)
    lines = split_lines(piece, max_line_bytes)
    if not len(lines):
        return StreamChunk([], 0, [], [], _empty_echo(0) if echo else None)
    matrix = _float_rows(lines, header, inputs) if lines.whole else None
    if matrix is not None:
        # Lines the fast readers take are plain numbers: echoed as sent, which is how the csv
        # module would write those cells.
        context = Echo(lines.data, lines.starts, lines.lengths) if echo else None
        return StreamChunk(matrix, len(lines), [], lines.numbers, context)
    return _decode_csv_exactly(lines, header, inputs, echo=echo, max_line_bytes=max_line_bytes)


def _float_rows(lines: Lines, header: CsvHeader, inputs: InputSchema) -> Matrix | None:
    """Every feature a float and every line plainly numbers: the compiled reader (or simdjson)
    straight into a matrix, then the vectorised check. None on any doubt."""
    if not inputs.numeric or any(f.dtype != "float" for f in inputs.card.features):
        return None  # integers must be written as integers: the exact path judges them
    width = len(header.columns)
    hot_path = native.HOT_PATH
    matrix = None if hot_path is None else hot_path.read_float_rows(lines.data, 0, width)
    if matrix is None:
        matrix = read_float_lines(lines.data, width)
    if matrix is None or len(matrix) != len(lines):
        return None
    if not header.in_feature_order:
        matrix = matrix[:, header.positions]
    return inputs.validate_matrix(matrix)


def _decode_csv_exactly(
    lines: Lines, header: CsvHeader, inputs: InputSchema, *, echo: bool, max_line_bytes: int
) -> StreamChunk[Echo | None]:
    """Line by line: the csv module's reading and pydantic's checks, each bad row named."""
    records = len(lines)
    errors: dict[int, RowError] = {}
    texts: dict[int, str] = {}
    for index in range(records):
        number = int(lines.numbers[index])
        if lines.too_long[index]:
            errors[index] = _too_long(number, max_line_bytes)
            continue
        try:
            text = lines.line(index).decode("utf-8")
        except UnicodeDecodeError:
            errors[index] = RowError(number, None, "Line is not UTF-8 text", "unicode_error")
            continue
        if "\x00" in text:
            errors[index] = RowError(number, None, "Line contains a NUL byte", "nul_byte")
            continue
        texts[index] = text
    width = len(header.columns)
    cells: dict[int, list[str]] = {}
    for index, parsed in _parse_csv_lines(texts).items():
        number = int(lines.numbers[index])
        if isinstance(parsed, str):
            errors[index] = RowError(number, None, f"Not valid CSV: {parsed}", "csv_error")
        elif len(parsed) != width:
            message = f"Expected {width} cells (one per header column), got {len(parsed)}"
            errors[index] = RowError(number, None, message, "row_length")
        else:
            cells[index] = parsed
    rows, invalid = _validate_cells(header.columns, cells, inputs, lines.numbers)
    errors.update(invalid)
    context = None
    if echo:
        context = _echo_cells(records, [(index, cells[index]) for index in sorted(cells)])
    return StreamChunk(rows, records, sorted(errors.items()), lines.numbers, context)


def _parse_csv_lines(texts: dict[int, str]) -> dict[int, list[str] | str]:
    """Each line's cells, or why it is not CSV. One reader over all of them; where a quote is
    left open (the reader would run on into the next line) or the reader fails, line by line."""
    order = list(texts)
    reader = csv.reader((texts[index] for index in order), strict=True)
    parsed: dict[int, list[str] | str] = {}
    try:
        for position, row in enumerate(reader):
            if reader.line_num != position + 1:
                break
            parsed[order[position]] = row
        else:
            return parsed
    except csv.Error:
        pass
    parsed = {}
    for index in order:
        try:
            parsed[index] = next(csv.reader([texts[index]], strict=True), [])
        except csv.Error as exc:
            parsed[index] = str(exc)
    return parsed


def _validate_cells(
    columns: list[str], cells: dict[int, list[str]], inputs: InputSchema, numbers: Positions
) -> tuple[Rows, dict[int, RowError]]:
    """The rows of the records whose cells all pass (in record order), and the others' errors.
    Bad records are dropped from `cells`."""
    order = sorted(cells)
    if not order:
        return [], {}
    matrix = numeric_matrix(columns, [cells[index] for index in order], inputs)
    if matrix is not None:
        return matrix, {}
    records = [dict(zip(columns, map(str.strip, cells[index]), strict=True)) for index in order]
    rows, failed = _validate_text(inputs, records)
    errors = {}
    for position, issue in failed.items():
        index = order[position]
        errors[index] = _row_error(int(numbers[index]), issue, inputs)
        del cells[index]
    return rows, errors


def _validate_text(
    inputs: InputSchema, records: list[dict[str, str]]
) -> tuple[list[Row], dict[int, dict[str, Any]]]:
    """pydantic over all records at once; when some fail, their first issue each, and the rows
    of the others."""
    try:
        return inputs.validate_text_records(records, loc=("line",)), {}
    except InvalidInput as exc:
        assert isinstance(exc.detail, list)
        failed: dict[int, dict[str, Any]] = {}
        for issue in exc.detail:
            failed.setdefault(issue["loc"][1], {**issue, "loc": issue["loc"][2:]})
    good = [record for position, record in enumerate(records) if position not in failed]
    return (inputs.validate_text_records(good, loc=("line",)) if good else []), failed


def _echo_cells(records: int, good: Sequence[tuple[int, list[str]]]) -> Echo:
    """The good records' cells written as the csv module writes them (the file route's way)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(cells for _, cells in good)
    return _echo_lines(records, [index for index, _ in good], buffer.getvalue().encode())


def _echo_lines(records: int, indices: list[int], text: bytes) -> Echo:
    """An Echo from `text`, one "\\n"-ended line per index of `indices` (in order)."""
    starts = np.zeros(records, dtype=np.int64)
    lengths = np.zeros(records, dtype=np.int64)
    if indices:
        ends = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == ord("\n"))
        begins = np.concatenate(([0], ends[:-1] + 1))
        starts[indices] = begins
        lengths[indices] = ends - begins
    return Echo(text, starts, lengths)


def _row_error(line: int, issue: dict[str, Any], inputs: InputSchema) -> RowError:
    """A pydantic issue (its `loc` from inside the row: a feature name, or "record"/"row" and
    then a name or index) as the row's error."""
    column = None
    for part in issue["loc"]:
        if isinstance(part, int) and 0 <= part < len(inputs.feature_names):
            column = inputs.feature_names[part]
        elif isinstance(part, str) and part not in {"record", "row"}:
            column = part
    return RowError(line, column, str(issue["msg"]), str(issue["type"]))


# -- NDJSON ---------------------------------------------------------------------------------


def decode_ndjson(
    piece: LinePiece, inputs: InputSchema, *, echo: bool, max_line_bytes: int
) -> StreamChunk[Echo | None]:
    if piece.too_long:
        return too_long_chunk(piece, max_line_bytes)
    lines = split_lines(piece, max_line_bytes)
    records = len(lines)
    errors: dict[int, RowError] = {}
    rows: Rows | None = _number_arrays(lines, inputs) if lines.whole and records else None
    if rows is None:
        rows, errors = _decode_json_lines(lines, inputs, max_line_bytes)
    context = None
    if echo:
        good = [index for index in range(records) if index not in errors]
        context = _echo_values(records, good, rows, inputs)
    return StreamChunk(rows, records, sorted(errors.items()), lines.numbers, context)


def _number_arrays(lines: Lines, inputs: InputSchema) -> Matrix | None:
    """Lines that are each one flat array of numbers (each line's skeleton, once numbers,
    commas and blank space are deleted, exactly "[]"), parsed as one JSON array by simdjson,
    as `/predict` parses its rows, then the vectorised check."""
    if not inputs.numeric:
        return None
    data = lines.data
    body = data.removesuffix(b"\n")
    if body.translate(None, _NUMBER_BYTES) != b"\n".join([b"[]"] * len(lines)):
        return None
    matrix = number_rows(
        b"[" + body.replace(b"\n", b",") + b"]", width=len(inputs.feature_names), rows=len(lines)
    )
    return None if matrix is None else inputs.validate_matrix(matrix)


def _decode_json_lines(
    lines: Lines, inputs: InputSchema, max_line_bytes: int
) -> tuple[Rows, dict[int, RowError]]:
    """Each line as one instance of `/predict`'s body, under its rules. When every line parses
    on its own as one JSON value (so no line can merge with its neighbours into a row), they are
    validated together; if that fails, line by line, each bad one with its error."""
    errors = {
        index: _too_long(int(lines.numbers[index]), max_line_bytes)
        for index in np.flatnonzero(lines.too_long).tolist()
    }
    indices = [index for index in range(len(lines)) if index not in errors]
    if all(_one_value(lines.line(index)) for index in indices):
        rows, failed = _validate_joined(lines, indices, inputs)
        if not failed:
            return rows, errors
    found: list[Row] = []
    for index in indices:
        row, error = _alone(lines, index, inputs)
        if error is not None:
            errors[index] = error
        elif row is not None:
            found.append(row)
    return found, errors


def _one_value(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _validate_joined(lines: Lines, indices: list[int], inputs: InputSchema) -> tuple[Rows, bool]:
    """The rows of these lines validated as one body, or whether any of them failed."""
    if not indices:
        return [], False
    body = b'{"instances":[' + b",".join(lines.line(index) for index in indices) + b"]}"
    try:
        rows = inputs.validate_json(body)
    except (InvalidInput, MalformedBody):
        return [], True
    return rows, len(rows) != len(indices)


def _names_an_instance(issue: dict[str, Any]) -> bool:
    loc = issue.get("loc", [])
    return len(loc) >= 2 and loc[0] == "instances" and isinstance(loc[1], int)


def _alone(lines: Lines, index: int, inputs: InputSchema) -> tuple[Row | None, RowError | None]:
    """One line as `/predict` would judge `{"instances": [line]}`."""
    number = int(lines.numbers[index])
    try:
        rows = inputs.validate_json(b'{"instances":[' + lines.line(index) + b"]}")
    except InvalidInput as exc:
        assert isinstance(exc.detail, list)
        issue = exc.detail[0]
        inside = issue["loc"][2:] if _names_an_instance(issue) else issue["loc"]
        return None, _row_error(number, {**issue, "loc": inside}, inputs)
    except MalformedBody as exc:
        message = str(exc.detail).replace("Request body is", "Line is", 1)
        return None, RowError(number, None, message, "json_invalid")
    if len(rows) != 1:
        return None, RowError(number, None, _ONE_ROW, "line_rows")
    return (rows[0] if isinstance(rows, list) else tuple(rows[0].tolist())), None


def _echo_values(records: int, good: list[int], rows: Rows, inputs: InputSchema) -> Echo:
    """NDJSON rows echoed in a CSV reply: their values in feature order, as the csv module
    writes them (floats as `repr`, integers without a decimal point)."""
    kinds = [feature.dtype for feature in inputs.card.features]
    values: Iterable[Sequence[Any]] = rows.tolist() if isinstance(rows, np.ndarray) else rows
    cells = [[_cell(value, kind) for value, kind in zip(row, kinds, strict=True)] for row in values]
    return _echo_cells(records, list(zip(good, cells, strict=True)))


def _cell(value: Any, kind: str) -> str:
    if kind == "int":
        return str(int(value))
    return repr(float(value)) if kind == "float" else str(value)

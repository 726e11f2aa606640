"""CSV uploads for tabular models: read an uploaded file into validated rows, and write the CSV
reply (the uploaded columns followed by the prediction columns). Free of FastAPI.

Line numbers in errors are physical lines of the file (the header is line 1 when nothing
precedes it), so blank lines and quoted cells spanning several lines keep them right.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from app.errors import InvalidInput, PayloadTooLarge, UnreadableFile
from app.inference import InputSchema, Row
from schemas.predict import ClassPrediction, PredictionResponse, ValuePrediction

# Checked per cell here rather than with `csv.field_size_limit`, which is process-global and
# would change every other csv user in the worker. Cells past csv's own default limit (128 KiB)
# fail inside the reader and are refused just the same.
MAX_CELL_CHARS = 64 * 1024
# Rows per string yielded by `csv_reply_lines`: few, large writes keep a 10,000-row reply fast.
REPLY_CHUNK_ROWS = 500


@dataclass(frozen=True)
class CsvTable:
    columns: list[str]  # header as uploaded (stripped names, original order)
    cells: list[list[str]]  # raw text cells per data row, in uploaded column order (for echoing)
    rows: list[Row]  # validated rows in the model's feature order


def read_csv(stream: BinaryIO, inputs: InputSchema, *, max_rows: int | None = None) -> CsvTable:
    """Read a UTF-8 CSV with a header row naming the model's features (in any order).

    Reads incrementally and stops as soon as the row limit is passed. Raises `UnreadableFile`
    (not UTF-8, NUL bytes, bad quoting, empty), `InvalidInput` (header, row lengths, cell
    values; locations `["file", "line", N, feature]`) or `PayloadTooLarge` (too many rows).
    `max_rows` can only tighten the schema's own limit, which the validator enforces anyway.
    """
    limit = inputs.max_rows if max_rows is None else min(max_rows, inputs.max_rows)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        return _read(_checked_lines(text), inputs, limit)
    finally:
        text.detach()  # the caller owns `stream`: don't close it with the wrapper


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
    _check_header(columns, inputs.feature_names, header_line)
    cells: list[list[str]] = []
    numbers: list[int] = []
    for number, row in rows:
        if len(cells) == limit:
            raise PayloadTooLarge(f"Too many rows: at most {limit} per request")
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


def _check_header(columns: list[str], features: list[str], line: int) -> None:
    errors: list[dict[str, Any]] = []
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    missing = [name for name in features if name not in columns]
    unknown = [name for name in dict.fromkeys(columns) if name not in features]
    if duplicates:
        errors.append(_header_error(line, "Duplicate columns", duplicates, "duplicate_columns"))
    if missing:
        errors.append(_header_error(line, "Missing columns", missing, "missing_columns"))
    if unknown:
        errors.append(_header_error(line, "Unknown columns", unknown, "unknown_columns"))
    if errors:
        raise InvalidInput(errors)


def _header_error(line: int, problem: str, names: list[str], kind: str) -> dict[str, Any]:
    listed = ", ".join(repr(name) if name else "(an unnamed column)" for name in names)
    return {
        "loc": ["file", "header"],
        "msg": f"Line {line}: {problem}: {listed}. The header must name each feature once.",
        "type": kind,
    }


def _validate(
    columns: list[str], cells: list[list[str]], numbers: list[int], inputs: InputSchema
) -> list[Row]:
    """Validate all rows in one batch, then report errors at physical line numbers."""
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


def csv_reply_lines(
    table: CsvTable, response: PredictionResponse, classes: list[str] | None
) -> Iterator[str]:
    """The CSV reply in chunks of lines (`\\r\\n` endings, RFC 4180 quoting): the uploaded
    columns and cells, then `prediction` and, for classifiers with probabilities, one
    `probability_<label>` column per class (`classes` order; else the model's order).

    Echoed cells passed validation, so each is a number or one of the card's category values:
    no spreadsheet formula can be echoed back, and no escaping is needed.
    """
    labels = _probability_labels(response, classes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([*table.columns, "prediction", *(f"probability_{c}" for c in labels)])
    predictions: Sequence[ClassPrediction | ValuePrediction] = response.predictions
    for start in range(0, len(table.cells), REPLY_CHUNK_ROWS):
        stop = start + REPLY_CHUNK_ROWS
        writer.writerows(
            [*cells, *_prediction_cells(item, labels)]
            for cells, item in zip(table.cells[start:stop], predictions[start:stop], strict=True)
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if not table.cells:
        yield buffer.getvalue()


def _probability_labels(response: PredictionResponse, classes: list[str] | None) -> list[str]:
    first = response.predictions[0] if response.predictions else None
    if not isinstance(first, ClassPrediction) or first.probabilities is None:
        return []
    return list(first.probabilities) if classes is None else classes


def _prediction_cells(item: ClassPrediction | ValuePrediction, labels: list[str]) -> list[str]:
    if isinstance(item, ValuePrediction):
        return [repr(item.value)]
    probabilities = item.probabilities or {}
    return [_text(item.label), *(repr(probabilities[label]) for label in labels)]


def _text(label: Any) -> str:
    # As the JSON reply writes it: 1.0 stays "1.0", True is "true", strings are bare.
    return label if isinstance(label, str) else json.dumps(label)

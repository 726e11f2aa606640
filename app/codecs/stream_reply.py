"""A stream's answers as bytes: CSV or NDJSON, one record per row of the body, in its order.

CSV: the file route's columns (the input columns, `prediction`, one `probability_<label>` per
class), written as it writes them, plus a last column `error`: empty for a predicted row; for a
bad row (its input and prediction cells empty, so nothing unvalidated is echoed) a JSON object
`{"line", "column", "message", "type"}`. The last row of the reply has only an `error` cell:
`{"summary": {...}}`. So any CSV reader reads the whole reply; a client takes the last row as
the summary, and a reply whose last row is not one was cut.

NDJSON: a predicted row is its prediction item, as in the JSON envelope (`{"label",
"probabilities"}` or `{"value"}`); a bad row `{"line", "error": {"column", "message", "type"}}`;
the last line `{"summary": {...}}`.

Rows that need no error are laid out in one gather, as the large JSON replies are
(app.codecs.replies); the prediction cells are written column by column.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import orjson

from app.codecs.replies import Column, item_lines, lay_out
from app.codecs.stream_rows import Echo
from app.serving.model import LoadedModel, ModelOutput
from app.serving.streaming import ChunkAnswer, RowError, StreamSummary

_COMMA = ord(",")


def _csv_line(cells: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue().encode()


def _csv_cell(text: str) -> bytes:
    """One cell as the csv module writes it (quoted when it holds a comma, quote or newline)."""
    return _csv_line([text])[:-2] if text else b""


def _label_text(label: Any) -> str:
    # As the JSON reply writes it: 1.0 stays "1.0", True is "true", strings are bare.
    return label if isinstance(label, str) else json.dumps(label)


def repr_column(values: np.ndarray[Any, Any]) -> Column:
    """Floats as `repr` writes each (the file route's CSV cells), without a Python string per
    row: orjson writes the column at once, and writes every number `repr` writes in fixed
    notation (0, and magnitudes from 1e-4 up to 1e16) exactly as `repr` does (both write the
    shortest text that reads back the same float; tested). The others (`repr` writes `1e-05`,
    orjson `0.00001`) are written by `repr` itself, one by one."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    text = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    commas = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == _COMMA)
    starts = np.concatenate(([0], commas + 1)).astype(np.int64)
    lengths = np.concatenate((commas, [len(text)])).astype(np.int64) - starts
    magnitude = np.abs(values)
    odd = np.flatnonzero(((magnitude < 1e-4) | (magnitude >= 1e16)) & (magnitude != 0))
    if len(odd):
        written = [repr(value).encode() for value in values[odd].tolist()]
        sizes = np.array([len(item) for item in written], dtype=np.int64)
        starts[odd] = len(text) + np.cumsum(sizes) - sizes
        lengths[odd] = sizes
        text += b"".join(written)
    return Column(text, starts, lengths)


def _label_column(output: ModelOutput) -> Column:
    """Each row's label as a CSV cell: each distinct label written once, then looked up."""
    if output.classes is not None and output.class_indices is not None:
        distinct, codes = output.classes.tolist(), output.class_indices
    else:
        try:
            found, codes = np.unique(output.predictions, return_inverse=True)
            distinct = found.tolist()
        except TypeError:  # labels of mixed types: one by one
            distinct, codes = output.predictions.tolist(), np.arange(len(output))
    texts = [_csv_cell(_label_text(label)) for label in distinct]
    lengths = np.array([len(text) for text in texts], dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return Column(b"".join(texts), offsets[codes], lengths[codes])


def _row_bytes(columns: list[bytes | Column], rows: int) -> list[bytes]:
    """The rows laid out, one byte string each."""
    if not rows:
        return []
    text = lay_out(columns, rows)
    lengths = np.zeros(rows, dtype=np.int64)
    for column in columns:
        lengths += len(column) if isinstance(column, bytes) else column.lengths
    ends = np.cumsum(lengths).tolist()
    return [text[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def _interleave(answer: ChunkAnswer[Any], good: list[bytes], error: Any) -> bytes:
    """The answered records in order: the next good row's bytes, or `error(RowError)`."""
    parts = []
    rows = iter(good)
    for index in range(answer.answered):
        found = answer.errors.get(index)
        parts.append(error(found) if found is not None else next(rows))
    return b"".join(parts)


class CsvReply:
    """The CSV reply of one model version, with these input columns."""

    def __init__(self, model: LoadedModel, input_columns: list[str]) -> None:
        self.classification = model.card.task == "classification"
        self.labels: list[str] = []
        if model.has_probabilities:
            classes = model.card.target.classes
            self.labels = [str(c) for c in classes] if classes else list(model.class_keys)
        self._probability_index = [model.class_keys.index(label) for label in self.labels]
        names = [*input_columns, "prediction", *(f"probability_{c}" for c in self.labels)]
        self.header = _csv_line([*names, "error"])
        self._blank = b"," * len(names)  # the cells before `error`, all empty

    def _prediction_columns(self, output: ModelOutput) -> list[bytes | Column]:
        if not self.classification:
            return [repr_column(output.predictions.astype(np.float64))]
        columns: list[bytes | Column] = [_label_column(output)]
        if output.probabilities is not None:
            for index in self._probability_index:
                columns += [b",", repr_column(output.probabilities[:, index])]
        return columns

    def rows(self, answer: ChunkAnswer[Echo | None]) -> bytes:
        echo = answer.chunk.context
        assert echo is not None
        output = answer.output
        good = answer.good_records()
        columns: list[bytes | Column] = [
            Column(echo.text, echo.starts[good], echo.lengths[good]),
            b",",
        ]
        if output is not None and len(output):
            columns += self._prediction_columns(output)
        columns.append(b",\r\n")  # the empty `error` cell
        if not answer.errors:
            return lay_out(columns, len(good)) if len(good) else b""
        return _interleave(answer, _row_bytes(columns, len(good)), self.error)

    def error(self, error: RowError) -> bytes:
        document = {"line": error.line, **error.document()}
        return self._blank + _csv_cell(orjson.dumps(document).decode()) + b"\r\n"

    def summary(self, summary: StreamSummary) -> bytes:
        return self._blank + _csv_cell(orjson.dumps(summary.document()).decode()) + b"\r\n"


class NdjsonReply:
    """The NDJSON reply: one line per row."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def rows(self, answer: ChunkAnswer[Any]) -> bytes:
        output = answer.output
        text = b"" if output is None else item_lines(self.model, output, b"\n")
        if not answer.errors:
            return text
        lines = [line + b"\n" for line in text.split(b"\n")[:-1]]  # JSON holds no raw "\n"
        return _interleave(answer, lines, self.error)

    @staticmethod
    def error(error: RowError) -> bytes:
        return orjson.dumps({"line": error.line, "error": error.document()}) + b"\n"

    @staticmethod
    def summary(summary: StreamSummary) -> bytes:
        return orjson.dumps(summary.document()) + b"\n"

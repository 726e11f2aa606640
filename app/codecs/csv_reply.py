"""The CSV reply of the file route: the uploaded columns followed by the prediction columns."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

from app.codecs.tabular import CsvTable
from schemas.predict import ClassPrediction, PredictionResponse, ValuePrediction

# Rows per string yielded by `csv_reply_lines`: few, large writes keep a 10,000-row reply fast.
REPLY_CHUNK_ROWS = 500


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

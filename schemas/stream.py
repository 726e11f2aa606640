"""The records of a streamed reply (POST .../predict/stream), for the docs: the encoder
(app.codecs.stream_reply) writes them straight to bytes, one per line."""

from typing import Any

from pydantic import BaseModel, Field


class StreamRowError(BaseModel):
    column: str | None = Field(description="The feature at fault; null for the row as a whole.")
    message: str
    type: str = Field(
        description="pydantic's error type (e.g. `float_parsing`, `finite_number`), or "
        "`row_length`, `json_invalid`, `line_too_long`, `non_finite_output`, `PayloadTooLarge`."
    )


class StreamErrorLine(BaseModel):
    """A bad row, answered in its place (NDJSON reply; in a CSV reply the same fields, flat,
    are the `error` cell's JSON)."""

    line: int | None = Field(
        description="The row's line in the body (the CSV header is line 1); null for what "
        "ended the stream as a whole (a body over its byte limit, a model failure)."
    )
    error: StreamRowError


class StreamTotals(BaseModel):
    model_name: str
    model_version: int
    rows: int = Field(description="Rows answered: predicted or with their error.")
    errors: int = Field(description="Of those, rows answered with an error.")
    complete: bool = Field(
        description="The whole body was read and every row answered. False after "
        "`on_error=abort` stopped at a bad row, or when the stream was ended early."
    )


class StreamSummaryLine(BaseModel):
    """The last record of every reply: a reply without it was cut."""

    summary: StreamTotals


_REPLY_DESCRIPTION = (
    "One record per non-blank row of the body, in its order, then a summary, streamed while "
    "the body still arrives. As `Accept` asks (else in the body's own format):\n\n"
    "- `application/x-ndjson`: a predicted row is its prediction item, as in the JSON "
    'envelope (`{"label", "probabilities"}` or `{"value"}`); a bad row '
    '`{"line", "error": {"column", "message", "type"}}`; the last line '
    '`{"summary": {"model_name", "model_version", "rows", "errors", "complete"}}`.\n'
    "- `text/csv`: the file route's columns (the input columns, `prediction`, "
    "`probability_<label>` per class) plus `error`: empty for a predicted row; for a bad row "
    '(its other cells empty) the JSON `{"line", "column", "message", "type"}`. The '
    'last row has only an `error` cell: `{"summary": {...}}`.'
)

STREAM_REPLIES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": _REPLY_DESCRIPTION,
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}

STREAM_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Rows, of any number, sent with a length or chunked.",
        "content": {
            "text/csv": {
                "schema": {
                    "type": "string",
                    "description": "A header row naming the features (any order), then one row per line.",
                }
            },
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "description": "One row per line: an object keyed by feature name, or an array in feature order.",
                }
            },
        },
    }
}

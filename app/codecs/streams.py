"""The stream codec of tabular models: a body of CSV or NDJSON rows in, CSV or NDJSON out.

`open_stream` reads what must be known before the reply starts (a CSV's header: a bad one is a
4xx in the surface's envelope, like any request's), and returns the codec and the body's pieces
for `DataPlane.stream` (app.serving.streaming), which the HTTP route and `modelport score` both
run. Free of FastAPI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from app.codecs.stream_lines import LinePiece, LineReader
from app.codecs.stream_reply import CsvReply, NdjsonReply
from app.codecs.stream_rows import CsvHeader, Echo, decode_csv, decode_ndjson, read_csv_header
from app.errors import UnreadableFile, UnsupportedMediaType
from app.serving.model import LoadedModel
from app.serving.streaming import ChunkAnswer, RowError, StreamChunk, StreamSummary

Format = Literal["csv", "ndjson"]
MEDIA_TYPES: dict[Format, str] = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
# What each format may be sent as (the first is the one documented).
_ACCEPTED: dict[str, Format] = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/x-jsonlines": "ndjson",
    "application/jsonlines": "ndjson",
}


def input_format(content_type: str | None) -> Format:
    """The body's format from its Content-Type; 415 for anything else (it is not guessed)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    found = _ACCEPTED.get(media)
    if found is None:
        sent = f"not {media!r}" if media else "and a Content-Type"
        raise UnsupportedMediaType(
            f"Send rows as CSV with a header row (Content-Type: text/csv) or one JSON row per "
            f"line (Content-Type: application/x-ndjson), {sent}"
        )
    return found


def reply_format(accept: str | None, default: Format) -> Format:
    """The reply's format: the one `Accept` names, else the body's own."""
    wanted = (accept or "").lower()
    named = [fmt for media, fmt in _ACCEPTED.items() if media in wanted]
    return named[0] if len(set(named)) == 1 else default


class TableStream:
    """Decodes a tabular model's streamed rows and encodes their answers (a `StreamCodec`)."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        source: Format,
        reply: Format,
        header: CsvHeader | None,
        max_line_bytes: int,
    ) -> None:
        self.source = source
        self.reply = reply
        self.header = header
        self.max_line_bytes = max_line_bytes
        columns = header.columns if header is not None else model.inputs.feature_names
        self._csv = CsvReply(model, columns) if reply == "csv" else None
        self._ndjson = NdjsonReply(model)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.reply]

    def start(self, model: LoadedModel) -> bytes | None:
        return self._csv.header if self._csv is not None else None

    def work(self, piece: LinePiece) -> int:
        return len(piece.data)

    def decode(self, model: LoadedModel, piece: LinePiece) -> StreamChunk[Echo | None]:
        echo = self._csv is not None
        if self.header is not None:
            return decode_csv(
                piece, self.header, model.inputs, echo=echo, max_line_bytes=self.max_line_bytes
            )
        return decode_ndjson(piece, model.inputs, echo=echo, max_line_bytes=self.max_line_bytes)

    def encode(self, model: LoadedModel, answer: ChunkAnswer[Echo | None]) -> bytes:
        if self._csv is not None:
            return self._csv.rows(answer)
        return self._ndjson.rows(answer)

    def failure(self, model: LoadedModel, error: RowError) -> bytes:
        return (self._csv or self._ndjson).error(error)

    def finish(self, model: LoadedModel, summary: StreamSummary) -> bytes:
        return (self._csv or self._ndjson).summary(summary)


@dataclass(frozen=True)
class OpenedStream:
    codec: TableStream
    pieces: AsyncIterator[LinePiece]


async def open_stream(
    model: LoadedModel,
    body: AsyncIterator[bytes],
    *,
    source: Format,
    reply: Format,
    max_line_bytes: int,
) -> OpenedStream:
    """Start reading a streamed body: for CSV its header, which must name each feature once
    (UnreadableFile, InvalidInput or PayloadTooLarge otherwise, before anything is answered)."""
    if model.card.input_kind != "tabular":
        raise UnsupportedMediaType(
            f"{model.name} is an image model: streams carry rows of tabular models"
        )
    reader = LineReader(body, max_line_bytes=max_line_bytes, max_rows=model.inputs.max_rows)
    header = None
    if source == "csv":
        line = await reader.first_line()
        if line is None:
            raise UnreadableFile("The body is empty: expected a header row naming the features")
        header = read_csv_header(line, model.inputs)
    else:
        await reader.prime()
    codec = TableStream(
        model, source=source, reply=reply, header=header, max_line_bytes=max_line_bytes
    )
    return OpenedStream(codec, reader.pieces())

"""Streams of rows through the data plane: pieces of a body in, answered chunks out, in order.

A stream is a body of any length (a CSV or NDJSON upload, a file scored by the CLI) read in
pieces. Each piece is decoded into a chunk of rows by the surface's codec, and the chunk's valid
rows go through `DataPlane.predict_rows` like any request's, so they batch with the other
traffic through the version's micro-batcher. Bad rows are not refused as a request would be:
each is answered in its place with its error (or, in abort mode, the stream stops at the first).

At most `window` chunks are in flight (decoding, predicting or encoding) while the next piece
is read, so memory stays flat whatever the length, and the first answers go out while the body
still arrives. The reply ends with a summary (rows, errors, the version, complete or not) so a
client can tell a complete answer from a cut one. Free of FastAPI: a surface supplies the pieces
and the codec.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from app.errors import InvalidInput, ServiceError
from app.serving.model import LoadedModel, ModelOutput
from app.serving.offload import REPLY_BYTES_PER_ROW, offload
from app.serving.schema import Rows

Piece = TypeVar("Piece")
Context = TypeVar("Context")
Reply = TypeVar("Reply")
PieceContra = TypeVar("PieceContra", contravariant=True)
ReplyCo = TypeVar("ReplyCo", covariant=True)
LineNumbers = Sequence[int] | np.ndarray[Any, np.dtype[np.int64]]

# Chunks decoded, predicted or encoded at once: one predicting while the next is decoded (and
# the one before is written out) keeps the estimator busy; more would only hold more memory.
STREAM_WINDOW = 2

Predict = Callable[[LoadedModel, Rows], Awaitable[ModelOutput]]


@dataclass(frozen=True)
class RowError:
    """Why one row got no prediction: its line in the body (None for what concerns the whole
    stream, e.g. a body over its byte limit), the column at fault (None for the row as a whole),
    the message and pydantic's error type (or our own: `row_length`, `line_too_long`, ...)."""

    line: int | None
    column: str | None
    message: str
    type: str

    def document(self) -> dict[str, Any]:
        return {"column": self.column, "message": self.message, "type": self.type}


@dataclass(frozen=True)
class StreamChunk(Generic[Context]):
    """A decoded piece: `records` rows of input, of which the good ones' validated `rows` (in
    order) and the bad ones' errors (by record index, ascending). `lines[i]` is record i's line
    in the body. `context` is what the codec's encoder needs (e.g. the cells to echo)."""

    rows: Rows
    records: int
    errors: Sequence[tuple[int, RowError]]
    lines: LineNumbers
    context: Context


@dataclass(frozen=True)
class ChunkAnswer(Generic[Context]):
    """A chunk answered: the first `answered` records (every one, or in abort mode up to and
    including the first bad one), each either predicted (`output`, in record order) or in
    `errors`."""

    chunk: StreamChunk[Context]
    output: ModelOutput | None
    errors: dict[int, RowError]
    answered: int
    stopped: bool = False  # the stream ends here: a bad row in abort mode

    def good_records(self) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Indices of the answered records that were predicted, ascending."""
        indices = np.arange(self.answered, dtype=np.int64)
        if not self.errors:
            return indices
        return np.setdiff1d(indices, np.fromiter(self.errors, dtype=np.int64), assume_unique=True)


@dataclass(frozen=True)
class StreamSummary:
    """The last record of every stream: rows answered (predicted or not), how many of them
    were errors, the version that answered, and whether the whole body was read and answered."""

    model_name: str
    model_version: int
    rows: int
    errors: int
    complete: bool

    def document(self) -> dict[str, Any]:
        return {
            "summary": {
                "model_name": self.model_name,
                "model_version": self.model_version,
                "rows": self.rows,
                "errors": self.errors,
                "complete": self.complete,
            }
        }


class StreamCodec(Protocol[PieceContra, Context, ReplyCo]):
    """A surface's wire format for streams: decodes its pieces and encodes the answers."""

    def start(self, model: LoadedModel) -> ReplyCo | None:
        """What the reply begins with (a CSV header), if anything."""

    def work(self, piece: PieceContra) -> int:
        """The piece's size in bytes: where it is decoded (app.serving.offload)."""

    def decode(self, model: LoadedModel, piece: PieceContra) -> StreamChunk[Context]: ...

    def encode(self, model: LoadedModel, answer: ChunkAnswer[Context]) -> ReplyCo: ...

    def failure(self, model: LoadedModel, error: RowError) -> ReplyCo:
        """The record of what ended the stream early (a body over its limit, a model failure)."""

    def finish(self, model: LoadedModel, summary: StreamSummary) -> ReplyCo: ...


def _subset(rows: Rows, keep: np.ndarray[Any, np.dtype[np.int64]]) -> Rows:
    if isinstance(rows, np.ndarray):
        matrix: np.ndarray[Any, np.dtype[np.float64]] = rows[keep]
        return matrix
    return [rows[index] for index in keep.tolist()]


def _unanswerable(exc: InvalidInput) -> list[int] | None:
    """The rows (indices into the request) a `check_output` refusal names, or None when the
    refusal is anything else."""
    if not isinstance(exc.detail, list) or not exc.detail:
        return None
    found = []
    for issue in exc.detail:
        loc = issue.get("loc", [])
        if issue.get("type") != "non_finite_output" or len(loc) != 2 or not isinstance(loc[1], int):
            return None
        found.append(loc[1])
    return sorted(set(found))


async def predict_answerable(
    predict: Predict, model: LoadedModel, rows: Rows
) -> tuple[ModelOutput | None, list[int], str]:
    """The output for the rows the model answers finitely, the indices of those it cannot (a
    request would be refused for them, naming the first ten), and the refusal's message."""
    keep = np.arange(len(rows), dtype=np.int64)
    failed: list[int] = []
    message = ""
    while len(keep):
        try:
            return await predict(model, _subset(rows, keep)), sorted(failed), message
        except InvalidInput as exc:
            named = _unanswerable(exc)
            if named is None:
                raise
            assert isinstance(exc.detail, list)
            message = str(exc.detail[0]["msg"])
            failed += keep[named].tolist()
            keep = np.delete(keep, named)
    return None, sorted(failed), message


async def answer_chunk(
    predict: Predict, model: LoadedModel, chunk: StreamChunk[Context], *, abort: bool
) -> ChunkAnswer[Context]:
    """Predict a chunk's good rows (in abort mode, only those before its first bad row); rows
    the model cannot answer finitely become errors in their place."""
    errors = dict(chunk.errors)
    answered = chunk.records
    good = np.arange(chunk.records, dtype=np.int64)
    if errors:
        good = np.setdiff1d(good, np.fromiter(errors, dtype=np.int64), assume_unique=True)
    rows = chunk.rows
    if abort and errors:
        first = min(errors)
        answered = first + 1
        errors = {first: errors[first]}
        rows = _subset(rows, np.arange(int(np.searchsorted(good, first)), dtype=np.int64))
        good = good[good < first]
    output = None
    if len(rows):
        output, failed, message = await predict_answerable(predict, model, rows)
        for index in failed:
            record = int(good[index])
            errors[record] = RowError(int(chunk.lines[record]), None, message, "non_finite_output")
        if abort and failed:
            answered = min(answered, int(good[failed[0]]) + 1)
            if output is not None:
                output = output.slice(0, failed[0])
            errors = {record: error for record, error in errors.items() if record < answered}
    stopped = abort and bool(errors)
    return ChunkAnswer(chunk, output, dict(sorted(errors.items())), answered, stopped)


async def _next(pieces: AsyncIterator[Piece]) -> Piece | None:
    return await anext(pieces, None)


async def stream_answers(
    predict: Predict,
    model: LoadedModel,
    pieces: AsyncIterator[Piece],
    codec: StreamCodec[Piece, Context, Reply],
    *,
    abort: bool = False,
    window: int = STREAM_WINDOW,
) -> AsyncGenerator[Reply, None]:
    """The reply to a stream, record by record in the body's order: the codec's start, each
    chunk's answer as soon as it and every chunk before it are answered, then, if something
    ended the stream early, its failure record, and last the summary.

    A `ServiceError` raised while reading (e.g. the body passed its byte limit) or predicting
    (the model failed) ends the stream with its failure record. Anything else (the client went
    away) propagates; either way the chunks still in flight are cancelled, so work stops."""

    async def answer(piece: Piece) -> tuple[Reply, ChunkAnswer[Context]]:
        chunk = await offload(codec.decode, model, piece, work=codec.work(piece))
        answered = await answer_chunk(predict, model, chunk, abort=abort)
        reply = await offload(
            codec.encode, model, answered, work=answered.answered * REPLY_BYTES_PER_ROW
        )
        return reply, answered

    head = codec.start(model)
    if head is not None:
        yield head
    pending: deque[asyncio.Task[tuple[Reply, ChunkAnswer[Context]]]] = deque()
    reading: asyncio.Task[Piece | None] | None = None
    exhausted = False
    rows = errors = 0
    failure: RowError | None = None
    stopped = False
    try:
        while True:
            if reading is None and not exhausted and failure is None and len(pending) < window:
                reading = asyncio.create_task(_next(pieces))
            waiting: set[asyncio.Future[Any]] = {task for task in (reading,) if task is not None}
            if pending:
                waiting.add(pending[0])
            if not waiting:
                break
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if pending and pending[0] in done:
                task = pending.popleft()
                try:
                    reply, answered = task.result()
                except ServiceError as exc:
                    failure = _stream_error(exc)
                    break
                rows += answered.answered
                errors += len(answered.errors)
                yield reply
                if answered.stopped:
                    stopped = True
                    break
                continue
            assert reading is not None and reading in done
            task_reading, reading = reading, None
            try:
                piece = task_reading.result()
            except ServiceError as exc:
                failure = _stream_error(exc)
                continue  # answer what is in flight, then end with the failure
            if piece is None:
                exhausted = True
            else:
                pending.append(asyncio.create_task(answer(piece)))
    finally:
        for task in pending:
            task.cancel()
        if reading is not None:
            reading.cancel()
    if failure is not None:
        yield codec.failure(model, failure)
    complete = failure is None and not stopped
    yield codec.finish(
        model, StreamSummary(model.name, model.version, rows, errors, complete=complete)
    )


def _stream_error(exc: ServiceError) -> RowError:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return RowError(None, None, detail, exc.kind)

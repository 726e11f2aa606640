"""`modelport score INPUT --model NAME`: every row of a file predicted, in order, with flat
memory. In-process (the version loaded from the store as the server loads it, the same chunk
pipeline, no HTTP), or with `--url` streamed to a server's `predict/stream` route. Either way
the output is the route's reply (docs/api.md, "Predict a stream") less its summary, which is
reported on stderr.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from app.bulk.output import OutputError, ReplyWriter, resume_point
from app.bulk.progress import ScoreProgress
from app.bulk.remote import RemoteError, post_stream
from app.bulk.sources import Source, SourceError, open_source
from app.codecs.streams import MEDIA_TYPES, Format, open_stream
from app.config import Settings
from app.errors import ServiceError
from app.serving.dataplane import DataPlane
from app.serving.loading import registry_for

# Exit statuses: every row predicted; the answer is complete but some rows are errors, or it
# stopped early (--on-error abort, a cut connection); nothing could be scored.
DONE, ROW_ERRORS, FAILED = 0, 1, 2


@dataclass(frozen=True)
class ScoreOptions:
    input: Path
    model: str
    version: int | None = None
    output: Path | None = None
    url: str | None = None
    on_error: str = "continue"
    resume: bool = False
    input_format: str | None = None
    api_key: str | None = None


def reply_format(output: Path | None, source: Source) -> Format:
    """NDJSON for an .ndjson/.jsonl output, CSV for .csv; else the input's own (CSV for
    Parquet)."""
    suffix = output.suffix.lower() if output is not None else ""
    if suffix in {".ndjson", ".jsonl"}:
        return "ndjson"
    return "csv" if suffix == ".csv" else source.wire


async def _blocks(source: Source) -> AsyncIterator[bytes]:
    """The source's blocks, each read (or, for Parquet, converted) in a thread."""
    blocks: Iterator[bytes] = source.blocks()
    while (block := await asyncio.to_thread(next, blocks, None)) is not None:
        yield block


async def _in_process(
    options: ScoreOptions,
    settings: Settings,
    body: AsyncIterator[bytes],
    wire: Format,
    reply: Format,
) -> AsyncIterator[bytes]:
    registry = registry_for(settings, only=options.model)
    await asyncio.to_thread(registry.load)
    dataplane = DataPlane(registry)
    model = dataplane.model(options.model, options.version)
    opened = await open_stream(
        model, body, source=wire, reply=reply, max_line_bytes=settings.stream_max_line_bytes
    )
    return dataplane.stream(model, opened.pieces, opened.codec, abort=options.on_error == "abort")


def _remote(
    options: ScoreOptions, url: str, body: AsyncIterator[bytes], wire: Format, reply: Format
) -> AsyncIterator[bytes]:
    pinned = f"/versions/{options.version}" if options.version is not None else ""
    target = f"/models/{options.model}{pinned}/predict/stream?on_error={options.on_error}"
    headers = {"Content-Type": MEDIA_TYPES[wire], "Accept": MEDIA_TYPES[reply]}
    if options.api_key:
        headers["X-API-Key"] = options.api_key
    return post_stream(url, target, headers, body)


async def _score(options: ScoreOptions, settings: Settings, err: TextIO) -> int:
    skip, header = 0, None
    probe = open_source(options.input, kind=options.input_format, skip_rows=0)
    reply = reply_format(options.output, probe)
    resuming = options.resume and options.output is not None and options.output.is_file()
    if resuming:
        assert options.output is not None
        point = resume_point(options.output, reply)
        skip, header = point.records, point.header
    source = open_source(options.input, kind=options.input_format, skip_rows=skip)
    sink: BinaryIO
    opened = options.output.open("ab" if resuming else "wb") if options.output else None
    sink = opened if opened is not None else sys.stdout.buffer
    with opened or nullcontext(), ScoreProgress(f"scoring {options.input.name}", err) as bar:
        writer = ReplyWriter(sink, reply, header=header, line_offset=lambda: source.line_offset)
        body = _blocks(source)
        if options.url is not None:
            replies = _remote(options, options.url, body, source.wire, reply)
        else:
            replies = await _in_process(options, settings, body, source.wire, reply)
        async for data in replies:
            writer.feed(data)
            bar.update(done=source.done, total=source.total, rows=skip + writer.records)
        summary, failure = writer.close()
        bar.update(done=source.total, total=source.total, rows=skip + writer.records)
    return _report(summary, failure, before=skip, written=writer.records, err=err)


def _report(
    summary: dict[str, object] | None,
    failure: dict[str, object] | None,
    *,
    before: int,
    written: int,
    err: TextIO,
) -> int:
    total = before + written
    resumed = f" ({before:,} from before)" if before else ""
    if summary is None:
        print(  # noqa: T201 - CLI output
            f"modelport score: the answer was cut after {total:,} rows{resumed}: "
            "run again with --resume to continue",
            file=err,
        )
        return ROW_ERRORS
    errors = int(str(summary.get("errors", 0)))
    version = f"{summary.get('model_name')} v{summary.get('model_version')}"
    print(  # noqa: T201 - CLI output
        f"modelport score: {total:,} rows{resumed} with {version}, {errors:,} errors in this run, "
        f"{'complete' if summary.get('complete') else 'stopped early'}",
        file=err,
    )
    if failure is not None:
        print(f"modelport score: the stream ended early: {failure}", file=err)  # noqa: T201
    return DONE if summary.get("complete") and errors == 0 else ROW_ERRORS


def score(options: ScoreOptions, settings: Settings, err: TextIO | None = None) -> int:
    """Run a scoring; the exit status (DONE, ROW_ERRORS or FAILED, with the reason on `err`,
    stderr by default)."""
    err = err or sys.stderr
    try:
        return asyncio.run(_score(options, settings, err))
    except (SourceError, OutputError, RemoteError, OSError) as exc:
        print(f"modelport score: {exc}", file=err)  # noqa: T201 - CLI output
    except ServiceError as exc:
        print(f"modelport score: {exc.kind}: {exc.detail}", file=err)  # noqa: T201
    return FAILED

"""The progress bar of `modelport score`, on a terminal only: rows answered, rows per second,
and the time left (from the input read, which the answers keep pace with)."""

from __future__ import annotations

from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rows = int(task.fields.get("rows", 0))
        elapsed = task.elapsed or 0.0
        rate = rows / elapsed if elapsed > 0 else 0.0
        return Text(f"{rows:,} rows, {rate:,.0f} rows/s")


class ScoreProgress:
    """A no-op unless `stream` is a terminal."""

    def __init__(self, description: str, stream: TextIO) -> None:
        self._progress: Progress | None = None
        if stream.isatty():
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                _RowsColumn(),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=False,
            )
            self._task = self._progress.add_task(description, total=None, rows=0)

    def __enter__(self) -> ScoreProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, *, done: int, total: int, rows: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total or None, rows=rows)

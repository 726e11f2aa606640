"""Where CPU-bound work runs: on the event loop when it is tiny, else in a worker thread; and
awaiting work no longer than a request's deadline."""

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.errors import DeadlineExceeded
from app.serving.deadline import Deadline

Result = TypeVar("Result")

# Below this many bytes of work (request body, rows × features) parsing and formatting run on the
# event loop: cheaper than the hop to a thread and back, and far too short to hold other requests.
INLINE_WORK = 16 * 1024
# Reply bytes per predicted row, roughly: the `work` of formatting a reply.
REPLY_BYTES_PER_ROW = 96
# Work that always goes to a thread (e.g. reading an upload that may be spooled to disk).
BLOCKING = sys.maxsize


async def in_thread(function: Callable[..., Result], *args: object) -> Result:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def bounded(work: Awaitable[Result], deadline: Deadline | None) -> Result:
    """`work`'s result, or `DeadlineExceeded` as soon as `deadline` passes (work in a thread
    runs on; its result is dropped)."""
    if deadline is None:
        return await work
    timeout = asyncio.timeout(deadline.remaining())
    try:
        async with timeout:
            return await work
    except TimeoutError as exc:
        if not timeout.expired():  # raised by the work itself
            raise
        raise DeadlineExceeded(
            f"The request's deadline passed after {deadline.elapsed():.3f} s"
        ) from exc


async def offload(
    function: Callable[..., Result], *args: object, work: int, deadline: Deadline | None = None
) -> Result:
    """Run CPU-bound `function` on the event loop when `work` is small, else in a thread (given
    up on, with `DeadlineExceeded`, when `deadline` passes first)."""
    if work <= INLINE_WORK:
        return function(*args)
    return await bounded(in_thread(function, *args), deadline)

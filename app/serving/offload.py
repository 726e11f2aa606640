"""Where CPU-bound work runs: on the event loop when it is tiny, else in a worker thread."""

import asyncio
import sys
from collections.abc import Callable
from typing import TypeVar

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


async def offload(function: Callable[..., Result], *args: object, work: int) -> Result:
    """Run CPU-bound `function` on the event loop when `work` is small, else in a thread."""
    if work <= INLINE_WORK:
        return function(*args)
    return await in_thread(function, *args)

"""The access log (app.access_log.AccessLog): one JSON line per request, written once per turn
of the event loop, in order, and at once when there is no loop."""

import asyncio
import io
import json

from app.access_log import AccessLog


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_added_in_one_turn_are_written_together_in_order_after_it() -> None:
    log = AccessLog()
    stream = log.stream = CountingStream()

    async def two_turns() -> tuple[str, str]:
        for index in range(5):
            log.add({"request_id": f"r{index}", "status": 200})
        during = stream.getvalue()
        await asyncio.sleep(0)  # the loop's next turn
        first = stream.getvalue()
        log.add({"request_id": "r5", "status": 404})
        await asyncio.sleep(0)
        return during, first

    during, after_first_turn = asyncio.run(two_turns())

    assert during == ""
    assert [json.loads(line)["request_id"] for line in after_first_turn.splitlines()] == [
        f"r{index}" for index in range(5)
    ]
    lines = stream.getvalue().splitlines()
    assert json.loads(lines[-1]) == {"request_id": "r5", "status": 404}
    assert len(lines) == 6 and stream.writes == 2  # one write per turn


def test_off_the_event_loop_a_line_is_written_at_once() -> None:
    log = AccessLog()
    stream = log.stream = CountingStream()

    log.add({"request_id": "outside"})

    assert json.loads(stream.getvalue()) == {"request_id": "outside"}
    assert stream.getvalue().endswith("\n") and stream.writes == 1


def test_flush_writes_what_is_pending_and_a_closed_stream_loses_lines_not_requests() -> None:
    log = AccessLog()
    stream = log.stream = CountingStream()

    async def add_then_flush() -> str:
        log.add({"request_id": "pending"})
        log.flush()  # as the app's shutdown does
        written = stream.getvalue()
        stream.close()
        log.add({"request_id": "lost"})  # written at the end of this turn, to a closed stream
        await asyncio.sleep(0)
        return written

    assert json.loads(asyncio.run(add_then_flush())) == {"request_id": "pending"}

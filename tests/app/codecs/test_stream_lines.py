"""The line reader of streams: a body in any pieces becomes pieces of whole lines, numbered,
bounded in lines and bytes; over-long lines are dropped in their place; slow bodies are not
held back waiting for a full piece."""

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from app.codecs.stream_lines import LinePiece, LineReader, split_lines
from app.errors import PayloadTooLarge


async def _body(parts: Sequence[bytes], pause: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


def _read(parts: Sequence[bytes], **limits: int) -> tuple[bytes | None, list[LinePiece]]:
    async def run() -> tuple[bytes | None, list[LinePiece]]:
        reader = LineReader(
            _body(parts),
            max_line_bytes=limits.get("max_line_bytes", 1000),
            max_rows=limits.get("max_rows", 1000),
            target_bytes=limits.get("target_bytes", 1 << 20),
        )
        first = await reader.first_line() if limits.get("header", 1) else None
        return first, [piece async for piece in reader.pieces()]

    return asyncio.run(run())


def _lines_of(pieces: list[LinePiece], limit: int = 1000) -> list[tuple[int, bytes]]:
    """(line number, text) of every line; over-long ones as b"<too long>", whether the reader
    dropped them or they came whole in one read (then `split_lines` marks them)."""
    found = []
    for piece in pieces:
        if piece.too_long:
            found.append((piece.first_line, b"<too long>"))
            continue
        for offset, line in enumerate(piece.data.split(b"\n")[: piece.data.count(b"\n")]):
            found.append((piece.first_line + offset, line))
        if piece.data and not piece.data.endswith(b"\n"):
            last = piece.data.rsplit(b"\n", 1)[-1]
            found.append((piece.first_line + piece.data.count(b"\n"), last))
    return [(number, b"<too long>" if len(line) > limit else line) for number, line in found]


def test_pieces_hold_whole_lines_in_order_whatever_the_body_is_cut_into() -> None:
    body = b"".join(b"%d,%d\n" % (i, i * i) for i in range(500))
    expected = [(2 + i, b"%d,%d" % (i, i * i)) for i in range(500)]
    for size in (1, 7, 64, 4096, len(body)):
        parts = [b"a,b\n"] + [body[i : i + size] for i in range(0, len(body), size)]
        first, pieces = _read(parts, max_rows=37, target_bytes=200)
        assert first == b"a,b"
        assert _lines_of(pieces) == expected, size
        for piece in pieces:
            assert piece.data.endswith(b"\n")
            assert piece.data.count(b"\n") <= 37
            # A piece passes the target only by the line that crosses it.
            assert len(piece.data) < 200 + 10


def test_the_last_line_may_lack_its_newline_and_crlf_is_kept_for_the_decoder() -> None:
    first, pieces = _read([b"a\r\n1\r\n2\r", b"\n3"])
    assert first == b"a"
    assert b"".join(piece.data for piece in pieces) == b"1\r\n2\r\n3"
    assert pieces[0].first_line == 2


def test_an_empty_body_has_no_first_line() -> None:
    assert _read([]) == (None, [])
    assert _read([b"", b""]) == (None, [])


def test_a_header_over_the_line_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        _read([b"x" * 600, b"y" * 600, b"\n1\n"], max_line_bytes=1000)


@pytest.mark.parametrize("size", [1, 5, 50, 10_000])
def test_an_over_long_line_is_dropped_and_marked_in_its_place(size: int) -> None:
    body = b"1\n" + b"z" * 3000 + b"\n2\n" + b"w" * 2000
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    _, pieces = _read([b"a\n", *parts], max_line_bytes=100)
    expected = [(2, b"1"), (3, b"<too long>"), (4, b"2"), (5, b"<too long>")]
    assert _lines_of(pieces, limit=100) == expected
    # Never more than the line limit held beyond the lines being cut.
    assert all(len(piece.data) <= max(size, 100) + 3 for piece in pieces)


def test_a_slow_body_is_answered_as_it_comes() -> None:
    """Lines that have waited `max_wait` are cut into a piece even though the target is far."""

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        reader = LineReader(
            _body([b"1\n", b"2\n", b"3\n"], pause=0.2),
            max_line_bytes=100,
            max_rows=100,
            max_wait=0.01,
        )
        return [loop.time() - started async for _ in reader.pieces()]

    arrivals = asyncio.run(run())
    assert len(arrivals) == 3  # one piece per line, not one at the end


def test_split_lines_skips_blank_lines_and_numbers_every_line() -> None:
    piece = LinePiece(b"1,2\r\n\n  \n\t\r\n3,4\n" + b"9" * 20 + b"\n5,6", 10)
    lines = split_lines(piece, max_line_bytes=10)
    assert [lines.line(i) for i in range(len(lines))] == [b"1,2", b"3,4", b"9" * 20, b"5,6"]
    assert lines.numbers.tolist() == [10, 14, 15, 16]
    assert lines.too_long.tolist() == [False, False, True, False]
    assert not lines.whole
    assert split_lines(LinePiece(b"1\n2\n", 2), max_line_bytes=10).whole

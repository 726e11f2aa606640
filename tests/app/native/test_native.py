"""The compiled hot path (app/native/hotpath.c). The CSV number reader against Python's
float(): every value it returns is bit-for-bit float(cell), and whatever it is unsure of it
leaves alone. The gather against slicing and joining."""

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import native
from app.native import HotPath, load_hot_path
from tests.conftest import require_hot_path


@pytest.fixture(scope="module")
def reader() -> HotPath:
    return require_hot_path()


def bits(values: list[float]) -> list[int]:
    # Compared as bit patterns: tells -0.0 from 0.0 (equal as floats).
    return [struct.unpack("<q", struct.pack("<d", value))[0] for value in values]


def random_cell(generator: random.Random) -> str:
    """Numbers as people and programs write them: repr, fixed and scientific notation, long
    mantissas, huge and tiny exponents, zeros of both signs."""
    value = generator.choice(
        [
            generator.uniform(-1e3, 1e3),
            generator.lognormvariate(0, 12),
            -generator.lognormvariate(0, 12),
            float(generator.randint(-(2**60), 2**60)),
            generator.choice([0.0, -0.0, 1.0, 2.0**53, 2.0**53 + 2, 1e22, 1e23, 5e-324]),
        ]
    )
    style = generator.randrange(7)
    if style == 0:
        return repr(value)
    if style == 1:
        return f"{value:.{generator.randint(0, 20)}f}"
    if style == 2:
        return f"{value:.{generator.randint(0, 20)}e}".replace("e", generator.choice("eE"))
    if style == 3:
        return f"{value:.{generator.randint(1, 17)}g}"
    if style == 4:
        return str(generator.randint(-(10**20), 10**20))
    if style == 5:
        digits = "".join(generator.choice("0123456789") for _ in range(generator.randint(1, 25)))
        return f"{generator.choice(['', '-'])}0.{digits}e{generator.randint(-30, 30)}"
    return generator.choice(["0", "-0", "0.0", "-0.0", "0e999999", "-0E-5", "1e22", "1e-22"])


@pytest.mark.parametrize("seed", range(4))
def test_each_value_is_pythons_float_bit_for_bit(reader: HotPath, seed: int) -> None:
    generator = random.Random(seed)
    read_count = 0
    for _ in range(5_000):
        cell = random_cell(generator)
        matrix = reader.read_float_rows(f"x\n{cell}\n".encode(), 2, 1)
        if matrix is None:
            continue  # in doubt: a longer mantissa or a larger exponent than it rounds exactly
        read_count += 1
        assert bits(matrix.ravel().tolist()) == bits([float(cell)]), cell
    assert read_count > 1_500  # the generator writes many cells it must leave alone


def plain_cell(generator: random.Random) -> str:
    """What exported data mostly looks like: a few significant digits."""
    value = round(generator.uniform(-1e4, 1e4), generator.randint(0, 6))
    return generator.choice([repr(value), f"{value:g}", str(int(value))])


@pytest.mark.parametrize("seed", range(4))
def test_rows_keep_their_order_and_shape(reader: HotPath, seed: int) -> None:
    generator = random.Random(seed)
    for _ in range(300):
        width = generator.randint(1, 6)
        rows = [
            [plain_cell(generator) for _ in range(width)] for _ in range(generator.randint(1, 9))
        ]
        ending = generator.choice(["\n", "\r\n"])
        text = ending.join(",".join(row) for row in rows) + generator.choice(["", ending])
        matrix = reader.read_float_rows(b"header\n" + text.encode(), len(b"header\n"), width)
        assert matrix is not None, text
        assert matrix.shape == (len(rows), width)
        assert bits(matrix.ravel().tolist()) == bits([float(c) for row in rows for c in row])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1.5,2\n3,-4\n", [[1.5, 2.0], [3.0, -4.0]]),
        (b"1.5,2\r\n3,-4", [[1.5, 2.0], [3.0, -4.0]]),  # CRLF, no ending after the last row
        (b"-0,0\n", [[-0.0, 0.0]]),
        (b"9007199254740992,1e22\n", [[2.0**53, 1e22]]),  # the largest exact mantissa and power
        (b"0.1,1e-22\n", [[0.1, 1e-22]]),
        (b"1E+2,1e-0\n", [[100.0, 1.0]]),
    ],
)
def test_plain_numbers_are_read(reader: HotPath, text: bytes, expected: list[list[float]]) -> None:
    matrix = reader.read_float_rows(b"a,b\n" + text, 4, 2)
    assert matrix is not None
    assert bits(matrix.ravel().tolist()) == bits([v for row in expected for v in row])


@pytest.mark.parametrize(
    "text",
    [
        b"1,2\n\n3,4\n",  # a blank line
        b"1,2\n3,4\n\n",
        b"1,2,\n",  # a cell too many
        b"1\n",  # one too few
        b"1, 2\n",  # a space
        b'"1",2\n',  # quoting
        b"+1,2\n",  # JSON's grammar: no plus sign, leading zero, bare point or exponent
        b"01,2\n",
        b".5,2\n",
        b"5.,2\n",
        b"1e,2\n",
        b"-,2\n",
        b"nan,2\n",
        b"inf,2\n",
        b"1_0,2\n",
        b"1\r2,3\n",  # a lone carriage return
        b"9007199254740993,1\n",  # past 2**53: Python rounds it, the fast path cannot
        b"1e23,1\n",  # past 10**22
        b"1.00000000000000000001,1\n",  # twenty significant digits
        b"1e100001,1\n",
        b"1,2\x00\n",
        "1,\u0661\n".encode(),  # an Arabic-Indic digit: float() takes it, JSON does not
    ],
)
def test_anything_else_is_left_to_the_python_readers(reader: HotPath, text: bytes) -> None:
    assert reader.read_float_rows(b"a,b\n" + text, 4, 2) is None


def test_random_bytes_never_crash_it(reader: HotPath) -> None:
    """Any bytes at all: a matrix of float(cell) values, or None; never a crash or a read past
    the end (each text is its own bytes object, ending where it ends)."""
    generator = random.Random(7)
    alphabet = b'0123456789-+.eE,\r\n "x\x00'
    for _ in range(20_000):
        text = bytes(generator.choice(alphabet) for _ in range(generator.randint(0, 24)))
        width = generator.randint(1, 3)
        matrix = reader.read_float_rows(text, 0, width)
        if matrix is not None:
            lines = text.decode().replace("\r\n", "\n").removesuffix("\n").split("\n")
            cells = [cell for line in lines if text for cell in line.split(",")]
            assert matrix.size == len(cells)
            assert bits(matrix.ravel().tolist()) == bits([float(cell) for cell in cells])


@pytest.mark.parametrize("width", [1, 2, 5])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_the_shortest_rows_still_fit(reader: HotPath, width: int, ending: str) -> None:
    """Room is made for at most one row per 2 * width bytes (a file of blank lines must not
    reserve a row per line): the shortest rows there are still fit, with or without an ending
    after the last one."""
    row = ",".join(["0"] * width)
    for last in ("", ending):
        text = (ending.join([row] * 7) + last).encode()
        matrix = reader.read_float_rows(text, 0, width)
        assert matrix is not None and matrix.shape == (7, width)


def test_start_and_width_are_checked(reader: HotPath) -> None:
    assert reader.read_float_rows(b"1,2\n", 5, 2) is None
    assert reader.read_float_rows(b"1,2\n", -1, 2) is None
    assert reader.read_float_rows(b"1,2\n", 0, 0) is None
    empty = reader.read_float_rows(b"a,b\n", 4, 2)
    assert empty is not None and empty.shape == (0, 2)


def test_a_library_from_another_version_of_the_source_is_not_loaded(tmp_path: Path) -> None:
    """A stale build (the C source changed since `make` last ran) might take other arguments:
    it is refused, not called."""
    source = tmp_path / "stale.c"
    source.write_text("int modelport_hotpath_version(void) { return 0; }\n")
    library = tmp_path / "stale.so"
    compiler = os.environ.get("CC", "cc")
    try:
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no C compiler: {exc}")
    assert load_hot_path(library) is None
    assert load_hot_path(tmp_path / "missing.so") is None


def test_the_build_writes_the_library_the_loader_reads() -> None:
    """`python -m app.native.build`, what `make` and the image's build stage run (it replaces
    the library atomically, so servers the suite starts meanwhile load a whole one)."""
    result = subprocess.run(
        [sys.executable, "-m", "app.native.build"], capture_output=True, text=True, check=True
    )
    if "no C compiler" in result.stderr and os.environ.get("CI") != "true":
        pytest.skip(result.stderr.strip())
    assert f"built {native.LIBRARY}" in result.stderr
    loaded = load_hot_path()
    assert loaded is not None
    read = loaded.read_float_rows(b"x\n1\n", 2, 1)
    assert read is not None and read.tolist() == [[1.0]]


@pytest.mark.parametrize("seed", range(3))
def test_gather_is_slicing_and_joining(reader: HotPath, seed: int) -> None:
    generator = random.Random(seed)
    source = bytes(generator.randrange(256) for _ in range(300))
    for _ in range(500):
        count = generator.randint(0, 12)
        starts = [generator.randint(0, len(source)) for _ in range(count)]
        lengths = [generator.randint(0, len(source) - start) for start in starts]
        expected = b"".join(source[s : s + n] for s, n in zip(starts, lengths, strict=True))
        assert reader.gather(source, np.array(starts), np.array(lengths)) == expected


@pytest.mark.parametrize(
    ("starts", "lengths"),
    [
        ([0, 9], [1, 2]),  # past the end
        ([11], [0]),  # starts past the end
        ([-1], [1]),
        ([0], [-1]),
        ([2**62], [2**62]),  # would overflow a naive start + length
    ],
)
def test_gather_refuses_ranges_outside_the_source(
    reader: HotPath, starts: list[int], lengths: list[int]
) -> None:
    with pytest.raises(ValueError, match="outside the source"):
        reader.gather(b"0123456789", np.array(starts), np.array(lengths))

"""modelport's native hot path (hotpath.c), loaded with ctypes: the CSV number reader and the
gather that lays out large JSON replies.

`make` compiles it (as does the image's build stage) with `python -m app.native.build`. Where
no C compiler was found, `HOT_PATH` is None and the callers take their Python paths, which give
the same results, only more slowly (README, "Performance").
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).with_name("hotpath.c")
LIBRARY = Path(__file__).with_name("hotpath.so")
# modelport_hotpath_version() of the source this module was written against.
VERSION = 1

Int64s = np.ndarray[Any, np.dtype[np.int64]]


class HotPath:
    """The compiled functions. ctypes releases the GIL for each call, and a bytes object passed
    as `c_char_p` is handed over as its own buffer (not copied)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        size, pointer = ctypes.c_size_t, ctypes.c_void_p
        self._count_lines = library.modelport_count_lines
        self._count_lines.argtypes = [ctypes.c_char_p, size, size]
        self._count_lines.restype = size
        self._read_float_rows = library.modelport_read_float_rows
        self._read_float_rows.argtypes = [ctypes.c_char_p, size, size, size, pointer, size]
        self._read_float_rows.restype = ctypes.c_long
        self._gather = library.modelport_gather
        self._gather.argtypes = [ctypes.c_char_p, size, pointer, pointer, size, pointer, size]
        self._gather.restype = ctypes.c_long

    def read_float_rows(
        self, data: bytes, start: int, width: int
    ) -> np.ndarray[Any, np.dtype[np.float64]] | None:
        """The lines of `data[start:]` as a (rows, width) float64 matrix, or None when the
        reader is in doubt (hotpath.c says what it accepts; the Python readers decide the
        rest)."""
        if not 0 <= start <= len(data) or width < 1:
            return None
        # A row takes at least 2 * width bytes ("0,0\n"; the last one may lack its "\n"), so a
        # file of blank lines cannot make this allocate more than ~4 bytes per byte uploaded.
        length = len(data) - start
        capacity = min(self._count_lines(data, start, len(data)), (length + 1) // (2 * width))
        matrix = np.empty((capacity, width), dtype=np.float64)
        rows = self._read_float_rows(data, start, len(data), width, matrix.ctypes.data, capacity)
        return None if rows < 0 else matrix[:rows]

    def gather(self, source: bytes, starts: Int64s, lengths: Int64s) -> bytes:
        """`b"".join(source[s : s + n] for s, n in zip(starts, lengths))`. ValueError when a
        range falls outside `source` (the C side checks each before copying)."""
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        if starts.shape != lengths.shape or starts.ndim != 1:
            raise ValueError("starts and lengths must be two 1-d arrays of one length")
        if len(lengths) and not 0 <= lengths.min() <= lengths.max() <= len(source):
            raise ValueError("a byte range falls outside the source")
        total = int(lengths.sum())  # at most len(lengths) * len(source): no overflow
        out = np.empty(total, dtype=np.uint8)
        written = self._gather(
            source,
            len(source),
            starts.ctypes.data,
            lengths.ctypes.data,
            len(starts),
            out.ctypes.data,
            len(out),
        )
        if written != total:
            raise ValueError("a byte range falls outside the source")
        return out.tobytes()


def load_hot_path(library: Path = LIBRARY) -> HotPath | None:
    """The compiled functions, or None when they were not built or were built from another
    version of hotpath.c (its signatures may differ: never call them then)."""
    try:
        loaded = ctypes.CDLL(str(library))
        version = loaded.modelport_hotpath_version
    except (OSError, AttributeError):
        return None
    version.argtypes = []
    version.restype = ctypes.c_int
    return HotPath(loaded) if version() == VERSION else None


HOT_PATH = load_hot_path()

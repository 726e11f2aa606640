"""Compile hotpath.c into hotpath.so next to it: `python -m app.native.build`.

Run by `make` and by the image's build stage. Without a C compiler it says so and exits 0:
modelport then takes its Python paths for CSV uploads and large replies (same results,
slower).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from app.native import LIBRARY, SOURCE

# -ffp-contract=off and no -ffast-math: each value must be exactly one IEEE multiplication or
# division (hotpath.c's exact-rounding argument); a fused or reordered operation could round
# differently from Python's float().
FLAGS = [
    "-O3",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-fPIC",
    "-shared",
    "-ffp-contract=off",
    "-fno-fast-math",
]


def _say(message: str) -> None:
    sys.stderr.write(f"modelport: {message}\n")


def main() -> int:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or shutil.which(compiler) is None:
        _say(
            "no C compiler found (install gcc, or set CC): CSV uploads and large replies will "
            "take the Python paths, which are slower"
        )
        return 0
    built = LIBRARY.with_suffix(".so.tmp")
    try:
        subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        # Serving works without it; under CI=true the suite fails (tests/app/test_native.py).
        _say(f"could not build {LIBRARY} ({exc}): the Python paths serve")
        return 0
    built.replace(LIBRARY)  # atomic: a running server never loads a half-written library
    _say(f"built {LIBRARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

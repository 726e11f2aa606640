"""glibc malloc settings for a server whose large requests allocate megabytes and free them again.

A 10,000-row request allocates and frees buffers of a few MB each: the upload, the text handed
to the parser, the parsed matrix, the model's intermediate arrays, the reply. With glibc's
defaults a buffer that large is a fresh `mmap`, unmapped when freed, or is trimmed off a thread's
arena when the request ends: either way the next request faults every page back in. Measured on
a live worker reading a 10,000-row CSV upload for the 100-tree forest: ~4,500 page faults and
~14.5 ms of CPU in the reader alone, against 0 faults and ~6.5 ms with the settings below. Which
thread (and so which arena) served the reader decided it: two starts of the same server differed
by ~10 ms a request.

So `modelport serve` starts gunicorn with: buffers under 32 MiB (glibc's maximum) taken from the
arenas rather than mapped one by one; up to `keep_mib` of freed memory kept in an arena for the
next request; two arenas (the event loop's thread's, and one every other thread shares), which
bounds what an idle worker keeps at twice `keep_mib` (measured: ~20 MB more than the defaults
after 10,000-row requests). A smaller trim threshold is not enough: at 32 MiB the event loop's
arena faulted ~4,000 pages per 10,000-row JSON request. Environment variables rather than
`mallopt` from Python: set before the interpreter starts they govern every allocation, while the
same values set by `mallopt` in the running master made workers fault more than the defaults.

Left alone when the environment already sets a malloc tunable (`MALLOC_*_`, `GLIBC_TUNABLES`) or
`keep_mib` is 0. Other C libraries (musl) ignore these variables.
"""

from collections.abc import Mapping

MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # the most glibc accepts on 64-bit
ARENAS = 2
MALLOC_VARIABLES = (
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
)


def malloc_environment(keep_mib: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to `environ` for the server's processes (none when the operator
    tunes malloc already, or turned this off with `keep_mib=0`)."""
    if keep_mib == 0 or any(name in environ for name in MALLOC_VARIABLES):
        return {}
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return {}
    keep = keep_mib * 1024 * 1024
    return {
        "MALLOC_MMAP_THRESHOLD_": str(min(keep, MMAP_THRESHOLD_MAX)),
        "MALLOC_TRIM_THRESHOLD_": str(keep),
        "MALLOC_ARENA_MAX": str(ARENAS),
    }

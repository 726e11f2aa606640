"""The malloc settings `modelport serve` hands to gunicorn (app.server.allocator)."""

import pytest

from app.server.allocator import malloc_environment

MIB = 1024 * 1024


def test_freed_memory_is_kept_for_reuse_in_two_arenas() -> None:
    assert malloc_environment(64, {"PATH": "/usr/bin"}) == {
        "MALLOC_MMAP_THRESHOLD_": str(32 * MIB),  # glibc's most: larger buffers are still mapped
        "MALLOC_TRIM_THRESHOLD_": str(64 * MIB),
        "MALLOC_ARENA_MAX": "2",
    }


def test_a_small_keep_lowers_both_thresholds() -> None:
    assert malloc_environment(16, {}) == {
        "MALLOC_MMAP_THRESHOLD_": str(16 * MIB),
        "MALLOC_TRIM_THRESHOLD_": str(16 * MIB),
        "MALLOC_ARENA_MAX": "2",
    }


def test_zero_keeps_glibcs_defaults() -> None:
    assert malloc_environment(0, {}) == {}


@pytest.mark.parametrize(
    "environ",
    [
        {"MALLOC_ARENA_MAX": "4"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
        {"MALLOC_TOP_PAD_": "0"},
        {"GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.arena_max=1"},
    ],
)
def test_an_operators_own_malloc_tuning_is_left_alone(environ: dict[str, str]) -> None:
    assert malloc_environment(64, environ) == {}


def test_other_glibc_tunables_do_not_stop_it() -> None:
    assert malloc_environment(64, {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) != {}

"""The repository's state file (app.serving.repository_state): locked read-modify-writes from
several real processes, atomic replacement, and the liveness test of retired workers."""

import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from app.serving.repository import RepositoryEntry
from app.serving.repository_state import RepositoryState, StateFile, process_alive


@pytest.fixture
def state(tmp_path: Path) -> StateFile:
    return StateFile(tmp_path / "modelport-8000.repository.json")


def test_a_missing_file_reads_as_a_fresh_state(state: StateFile) -> None:
    assert state.read() == RepositoryState()


def test_an_update_is_written_whole_and_read_back(state: StateFile) -> None:
    with state.update() as changed:
        changed.unloaded = ["iris"]
        changed.pending.append((1, "iris"))
        changed.last_request = 1
        changed.index = [RepositoryEntry("iris", 1, "UNLOADED", "unloaded by the repository API")]

    assert state.read() == RepositoryState(
        unloaded=["iris"],
        pending=[(1, "iris")],
        last_request=1,
        index=[RepositoryEntry("iris", 1, "UNLOADED", "unloaded by the repository API")],
    )
    # Replaced whole: nothing but the state and its lock file beside it.
    assert sorted(p.name for p in state.path.parent.iterdir()) == [
        "modelport-8000.repository.json",
        "modelport-8000.repository.lock",
    ]


def test_an_update_that_fails_changes_nothing(state: StateFile) -> None:
    with state.update() as changed:
        changed.unloaded = ["iris"]
    with pytest.raises(RuntimeError), state.update() as changed:
        changed.unloaded = []
        raise RuntimeError("refused half way")

    assert state.read().unloaded == ["iris"]


def _count(path: str, times: int) -> None:
    for _ in range(times):
        with StateFile(Path(path)).update() as changed:
            changed.last_request += 1


def test_concurrent_updates_from_several_processes_lose_nothing(state: StateFile) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_count, args=(str(state.path), 40)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0

    assert state.read().last_request == 160


def test_reset_and_remove(state: StateFile) -> None:
    with state.update() as changed:
        changed.unloaded = ["iris"]

    state.reset()
    assert state.read() == RepositoryState()

    state.remove()
    assert not state.path.exists() and not state.lock_path.exists()


def test_process_alive_tells_running_from_exited_processes() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    assert not process_alive(child.pid)
    child.wait()
    assert not process_alive(child.pid)

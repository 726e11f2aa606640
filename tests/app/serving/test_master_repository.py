"""Loads and unloads under `modelport serve` (app.serving.master_repository), between real
processes: the test process plays the gunicorn master — it receives the worker's SIGHUP and
runs the master's side, `apply_in_master`, on a real registry — and a forked child plays the
worker. tests/e2e/test_repository.py runs the same against real gunicorn."""

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from app.serving.master_repository import MasterRepository, apply_in_master, record_stopped
from app.serving.model import LoadedModel
from app.serving.registry import ModelRegistry
from app.serving.repository import READY, UNLOADED
from app.serving.repository_state import StateFile
from schemas.cards import FeatureSpec
from tests.conftest import write_model

WAIT = 60  # seconds: a bound for CI, never reached when all goes well


class Master:
    """The test process as the master: counts the SIGHUPs its workers send."""

    def __init__(self, registry: ModelRegistry, state: StateFile) -> None:
        self.registry = registry
        self.state = state
        self.hangups = 0
        self._hup = threading.Event()

    def on_hup(self, signum: int, frame: object) -> None:
        self.hangups += 1
        self._hup.set()

    def wait_for_hup(self) -> None:
        assert self._hup.wait(WAIT), "the worker never signalled the master"
        self._hup.clear()

    def worker(self, name: str, verb: str, outcome: Path, *, retired: bool = False) -> int:
        """Fork a worker that loads or unloads `name`; it writes what came of it to `outcome`.
        `retired`: it asks only once the master has named it among the workers it retires."""
        pid = os.fork()
        if pid:
            if retired:
                with self.state.update() as changed:
                    changed.retiring = [pid]
            return pid
        code = 1
        try:
            while retired and os.getpid() not in self.state.read().retiring:
                time.sleep(0.01)
            repository = MasterRepository(
                self.registry, self.state, master_pid=os.getppid(), timeout=WAIT
            )
            call: Callable[[str], Coroutine[Any, Any, None]] = getattr(repository, verb)
            try:
                asyncio.run(call(name))
                outcome.write_text("ok")
            except Exception as exc:
                outcome.write_text(f"{type(exc).__name__}: {exc}")
            code = 0
        finally:
            os._exit(code)


def finished(pid: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the worker never answered")


@pytest.fixture
def master(store: Path, tmp_path: Path) -> Iterator[Master]:
    registry = ModelRegistry(store, max_rows=50)
    registry.load()
    state = StateFile(tmp_path / "state.json")
    state.reset()
    playing = Master(registry, state)
    previous = signal.signal(signal.SIGHUP, playing.on_hup)
    yield playing
    signal.signal(signal.SIGHUP, previous)


def served(registry: ModelRegistry) -> dict[tuple[str, int], LoadedModel]:
    return {(model.name, model.version): model for model in registry.loaded_models()}


def test_a_worker_has_the_master_unload_and_load_and_answers_when_done(
    master: Master, tmp_path: Path
) -> None:
    before = served(master.registry)
    outcome = tmp_path / "outcome"

    worker = master.worker("pets", "unload", outcome)
    master.wait_for_hup()
    apply_in_master(master.registry, master.state, retiring=[])
    finished(worker)

    assert outcome.read_text() == "ok"
    assert set(served(master.registry)) == set(before) - {("pets", 1)}
    assert served(master.registry)[("flowers", 1)] is before[("flowers", 1)]  # not reloaded
    state = master.state.read()
    assert (state.unloaded, state.pending, state.applied, state.master) == (["pets"], [], 1, "idle")
    assert {(row.name, row.version): row.state for row in state.index}[("pets", 1)] == UNLOADED

    worker = master.worker("pets", "load", outcome)
    master.wait_for_hup()
    apply_in_master(master.registry, master.state, retiring=[])
    finished(worker)

    assert outcome.read_text() == "ok"
    assert set(served(master.registry)) == set(before)
    assert master.state.read().unloaded == []
    assert master.hangups == 2


def test_a_failed_load_answers_with_the_reasons(
    master: Master, store: Path, tmp_path: Path
) -> None:
    xs = np.arange(20, dtype=float).reshape(10, 2)
    version_dir = write_model(
        store,
        LinearRegression().fit(xs, xs[:, 0]),
        name="wreck",
        task="regression",
        features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
    )
    with (version_dir / "model.joblib").open("ab") as artifact:
        artifact.write(b"tampered")
    outcome = tmp_path / "outcome"

    worker = master.worker("wreck", "load", outcome)
    master.wait_for_hup()
    apply_in_master(master.registry, master.state, retiring=[])
    finished(worker)

    assert outcome.read_text().startswith(
        "LoadFailed: Model 'wreck' failed to load: version 1: SHA-256 mismatch"
    )


def test_requests_made_while_one_is_pending_share_one_signal_and_one_reload(
    master: Master, tmp_path: Path
) -> None:
    first = master.worker("pets", "unload", tmp_path / "first")
    master.wait_for_hup()
    second = master.worker("line", "unload", tmp_path / "second")
    deadline = time.monotonic() + WAIT
    while len(master.state.read().pending) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)

    apply_in_master(master.registry, master.state, retiring=[])
    finished(first)
    finished(second)

    assert (tmp_path / "first").read_text() == (tmp_path / "second").read_text() == "ok"
    assert master.hangups == 1
    assert master.state.read().unloaded == ["line", "pets"]
    assert set(served(master.registry)) == {("flowers", 1), ("flowers", 2)}


def test_requests_recorded_while_the_master_loads_join_that_reload(
    store: Path, tmp_path: Path
) -> None:
    state = StateFile(tmp_path / "state.json")
    state.reset()
    asked_meanwhile: list[str] = []

    def a_worker_asks_meanwhile(model: LoadedModel) -> None:
        # Called as each version loads: the first time, a request for another model arrives.
        if not asked_meanwhile:
            asked_meanwhile.append(model.name)
            with state.update() as changed:
                changed.unloaded = ["pets"]
                changed.last_request += 1
                changed.pending.append((changed.last_request, "pets"))

    registry = ModelRegistry(store, max_rows=50, on_load=[a_worker_asks_meanwhile])
    registry.load()
    asked_meanwhile.clear()
    with state.update() as changed:
        changed.last_request = 1
        changed.pending = [(1, "line")]
        changed.master = "signalled"

    apply_in_master(registry, state, retiring=[])

    final = state.read()
    assert asked_meanwhile == ["line"]
    assert (final.applied, final.pending, final.master) == (2, [], "idle")
    assert {(row.name, row.version): row.state for row in final.index}[("pets", 1)] == UNLOADED


def test_a_plain_sighup_reloads_the_whole_store_and_keeps_unloaded_models_unloaded(
    master: Master,
) -> None:
    before = served(master.registry)
    with master.state.update() as changed:
        changed.unloaded = ["pets"]

    apply_in_master(master.registry, master.state, retiring=[4242])

    after = served(master.registry)
    assert set(after) == set(before) - {("pets", 1)}
    assert all(after[key] is not before[key] for key in after)  # every model read again
    state = master.state.read()
    assert state.retiring == [4242]
    assert [row.state for row in state.index if row.name == "flowers"] == [READY, READY]


def test_the_answer_waits_until_every_retired_worker_stopped_accepting(
    master: Master, tmp_path: Path
) -> None:
    retired = subprocess.Popen(["sleep", "120"])  # an old worker still draining
    try:
        outcome = tmp_path / "outcome"
        worker = master.worker("pets", "unload", outcome)
        master.wait_for_hup()
        apply_in_master(master.registry, master.state, retiring=[retired.pid])

        time.sleep(0.5)
        assert os.waitpid(worker, os.WNOHANG) == (0, 0), "answered before the old worker stopped"
        record_stopped(master.state, retired.pid)
        finished(worker)
        assert outcome.read_text() == "ok"
    finally:
        retired.kill()
        retired.wait()


def test_a_worker_being_retired_is_told_to_retry(master: Master, tmp_path: Path) -> None:
    outcome = tmp_path / "outcome"

    finished(master.worker("pets", "unload", outcome, retired=True))

    assert outcome.read_text().startswith("RepositoryBusy: This worker is being replaced")
    assert master.hangups == 0
    assert master.state.read().pending == []


def test_unloading_a_model_already_unloaded_sends_no_signal(master: Master, tmp_path: Path) -> None:
    with master.state.update() as changed:
        changed.unloaded = ["pets"]
    outcome = tmp_path / "outcome"

    finished(master.worker("pets", "unload", outcome))

    assert outcome.read_text() == "ok"
    assert master.hangups == 0

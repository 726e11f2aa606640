"""The repository under `modelport serve`: workers ask, the gunicorn master loads.

Models are loaded once, in the master, and shared copy-on-write by the workers it forks
(app.server.gunicorn_conf). A worker that loaded a model itself would hold a private copy of it
and leave the other workers without it, so a worker never loads. On a load or unload it:

1. records the request in the state file (app.serving.repository_state): the models to keep
   unloaded, and a numbered request naming the model;
2. sends SIGHUP to the master (its parent). The master rescans the models the pending requests
   name (`apply_in_master`), records the outcome, then forks fresh workers from itself and
   retires the old ones gracefully — gunicorn's reload: requests in flight finish. Requests
   made while one is pending or being applied send no signal of their own and join it: several
   concurrent loads and unloads make one reload;
3. waits, up to `MODELPORT_REPOSITORY_TIMEOUT`, until the master has applied its request and
   every worker it retires has stopped accepting connections, so that the next request,
   whichever worker takes it, sees the change; then answers with the outcome.

The answering worker is one of those retired: it finishes this request, then exits. A request
that reaches a worker already being retired, which the reload under way cannot include, answers
503 with Retry-After: the retry reaches a fresh worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterable

from app.errors import NotReady, RepositoryBusy
from app.serving.registry import ModelRegistry
from app.serving.repository import (
    RepositoryEntry,
    check_loaded,
    index_of,
    require_in_store,
    require_known,
    selected,
)
from app.serving.repository_state import RepositoryState, StateFile, process_alive

POLL_SECONDS = 0.05
# Rescans one reload may make for requests recorded while it runs, before it lets the workers go.
ROUNDS = 10


class MasterRepository:
    def __init__(
        self, registry: ModelRegistry, state: StateFile, *, master_pid: int, timeout: float
    ) -> None:
        self.registry = registry
        self.state = state
        self.master_pid = master_pid
        self.timeout = timeout

    def index(self, *, ready_only: bool = False) -> list[RepositoryEntry]:
        """This worker's own models: the master's as of this worker's fork, which is after
        every load and unload answered so far."""
        return selected(index_of(self.registry.snapshot), ready_only=ready_only)

    async def load(self, name: str) -> None:
        require_in_store(self.registry.model_dir, name)
        check_loaded(await self._ask(name, unload=False), name)

    async def unload(self, name: str) -> None:
        require_known(self.registry, name)
        await self._ask(name, unload=True)

    async def _ask(self, name: str, *, unload: bool) -> list[RepositoryEntry]:
        if os.getppid() != self.master_pid:
            raise NotReady("This process is not a worker of the gunicorn master holding the models")
        number, signal_master = self._record(name, unload=unload)
        if number is None:
            return self.index()
        if signal_master:
            os.kill(self.master_pid, signal.SIGHUP)
        deadline = time.monotonic() + self.timeout
        while True:
            state = self.state.read()
            if state.applied >= number and _all_stopped(state):
                return state.index
            if time.monotonic() >= deadline:
                raise RepositoryBusy(
                    f"The server did not finish reloading {name!r} within {self.timeout:g} s "
                    "(MODELPORT_REPOSITORY_TIMEOUT); the request stays recorded and applies "
                    "with the next reload"
                )
            await asyncio.sleep(POLL_SECONDS)

    def _record(self, name: str, *, unload: bool) -> tuple[int | None, bool]:
        """The request's number (None when there is nothing to do: already unloaded), and
        whether to signal the master (not when a signal or a reload is already under way)."""
        me = os.getpid()
        with self.state.update() as state:
            if me in state.retiring or me in state.stopped:
                raise RepositoryBusy(
                    "This worker is being replaced after a reload: retry (a fresh worker answers)"
                )
            unloaded = set(state.unloaded)
            if unload and name in unloaded and all(asked != name for _, asked in state.pending):
                return None, False
            if unload:
                unloaded.add(name)
            else:
                unloaded.discard(name)
            state.unloaded = sorted(unloaded)
            state.last_request += 1
            state.pending.append((state.last_request, name))
            signal_master = state.master == "idle"
            if signal_master:
                state.master = "signalled"
            return state.last_request, signal_master


def _all_stopped(state: RepositoryState) -> bool:
    return all(pid in state.stopped or not process_alive(pid) for pid in state.retiring)


def apply_in_master(
    registry: ModelRegistry,
    state_file: StateFile,
    *,
    retiring: Iterable[int],
    thaw: Callable[[], None] = lambda: None,
    settle: Callable[[], None] = lambda: None,
) -> None:
    """In the gunicorn master, on SIGHUP, before it forks fresh workers: rescan the models that
    the workers' pending requests name, or, with none pending (a plain SIGHUP, `modelport
    reload`), the whole store, keeping unloaded models unloaded either way. Requests recorded
    meanwhile join this reload (up to ROUNDS rescans). Then record the outcome, and the workers
    about to be retired (`retiring`: every worker alive now), for the workers waiting on it.

    `thaw` runs before each rescan and `settle` after it (the master's garbage-collector
    freeze): the outcome is recorded as late as possible, just before gunicorn forks, since a
    write that reaches an old worker after it can only be told to retry."""
    applied: int | None = None
    for round_ in range(ROUNDS + 1):
        with state_file.update() as state:
            state.master = "reloading"
            if applied is None:
                applied = state.applied
            fresh = [(number, name) for number, name in state.pending if number > applied]
            if (round_ > 0 and not fresh) or round_ == ROUNDS:
                _record_outcome(state, registry, applied=applied, retiring=retiring)
                if state.pending:  # more asked meanwhile: no worker signals a reloading master
                    state.master = "signalled"
                    os.kill(os.getpid(), signal.SIGHUP)
                return
            unloaded = frozenset(state.unloaded)
        thaw()
        registry.unloaded = unloaded
        if fresh:
            registry.refresh({name for _, name in fresh})
            applied = max(number for number, _ in fresh)
        else:
            registry.load()
        settle()


def _record_outcome(
    state: RepositoryState, registry: ModelRegistry, *, applied: int, retiring: Iterable[int]
) -> None:
    state.master = "idle"
    state.applied = applied
    state.pending = [(number, name) for number, name in state.pending if number > applied]
    state.retiring = sorted(retiring)
    state.stopped = [pid for pid in state.stopped if process_alive(pid)]
    state.index = index_of(registry.snapshot)


def record_stopped(state_file: StateFile, pid: int) -> None:
    """A worker has closed its listening sockets (it is being retired): no new connection
    reaches it. Waiting requests count on this (`_all_stopped`)."""
    with state_file.update() as state:
        if pid not in state.stopped:
            state.stopped.append(pid)

"""The repository API's state under `modelport serve`: one small JSON file that the gunicorn
master and its workers share (path: app.config.repository_state_file_of, beside the PID file).

Workers record what is asked: the set of unloaded models (the desired state) and a numbered
request naming the model to reload. The master applies them when it reloads (SIGHUP) and
records what it did: the last request applied, the workers it is retiring, and the index after
the reload. A retiring worker records when it has stopped accepting connections.

Every change is a read-modify-write under an exclusive `fcntl` lock on a lock file beside it,
and is written atomically (a temporary file renamed over it): concurrent requests in several
workers and the master never lose one another's changes, and a reader never sees half a file.
The master starts each run with a fresh state: an unload lasts until a load or a restart.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.serving.repository import RepositoryEntry


@dataclass
class RepositoryState:
    unloaded: list[str] = field(default_factory=list)
    # (request number, model name): loads and unloads asked for and not applied yet.
    pending: list[tuple[int, str]] = field(default_factory=list)
    last_request: int = 0  # the number given to the latest request
    # "idle"; "signalled": a worker has sent SIGHUP; "reloading": the master is applying the
    # pending requests, and will apply any recorded meanwhile. Workers signal only an idle
    # master, so concurrent requests make one reload, not one each.
    master: str = "idle"
    applied: int = 0  # every request numbered up to this one is applied
    # The workers alive when the master last reloaded: it retires (SIGTERMs) each of them.
    retiring: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)  # workers that stopped accepting
    index: list[RepositoryEntry] = field(default_factory=list)  # after the latest reload

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RepositoryState:
        raw: dict[str, Any] = json.loads(data)
        return cls(
            unloaded=[str(name) for name in raw.get("unloaded", [])],
            pending=[(int(number), str(name)) for number, name in raw.get("pending", [])],
            last_request=int(raw.get("last_request", 0)),
            master=str(raw.get("master", "idle")),
            applied=int(raw.get("applied", 0)),
            retiring=[int(pid) for pid in raw.get("retiring", [])],
            stopped=[int(pid) for pid in raw.get("stopped", [])],
            index=[RepositoryEntry(**row) for row in raw.get("index", [])],
        )


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_suffix(".lock")

    def read(self) -> RepositoryState:
        """The state as last written (no lock needed: files are replaced whole)."""
        try:
            return RepositoryState.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return RepositoryState()

    @contextmanager
    def update(self) -> Iterator[RepositoryState]:
        """The state to change in place, under the lock; written when the block ends without
        an exception."""
        with self._locked():
            state = self.read()
            yield state
            self._write(state)

    def reset(self) -> None:
        with self._locked():
            self._write(RepositoryState())

    def remove(self) -> None:
        for path in (self.path, self.lock_path):
            path.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def _write(self, state: RepositoryState) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name)
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(state.to_json())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def process_alive(pid: int) -> bool:
    """Whether a process still runs (a zombie, exited but not yet reaped, does not)."""
    if not Path("/proc/self/stat").exists():  # no /proc here: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")

"""The model repository: every model and version in the store with its state, and loading and
unloading models while the server runs (the Open Inference Protocol's repository extension).

Protocol-neutral: REST (routers/v2.py) and gRPC call `dataplane.repository`. The states of an
index row:

- READY: the version is loaded and serving.
- UNAVAILABLE: in the store but refused, `reason` says why (an artifact that does not match its
  card, a hash mismatch, a failed self-check; name-level: an invalid folder name, a broken link,
  a folder with no version folders). Refused versions also make `/readyz` say not ready.
- UNLOADED: unloaded on purpose by the repository API; predictions answer 404 until the model
  is loaded again. Readiness does not count it as a failure. It lasts until the model is loaded
  again or the server restarts (SIGHUP reloads keep it).

`load` (re)reads that model's folder from the store, so a model copied into the store becomes
servable and a changed version is picked up; `unload` stops serving it. Two implementations:

- `InProcessRepository` (here): one process holds the models (TestClient, `modelport dev`), and
  rescans the model folder itself.
- `MasterRepository` (app.serving.master_repository): a gunicorn worker under `modelport serve`,
  where the models are loaded once in the master and shared copy-on-write, so a worker never
  loads one: it records the request and has the master reload (SIGHUP).

Who may write is decided here, in `authorize_write`, which the REST guard and the gRPC service
both call.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.config import Settings
from app.errors import Forbidden, LoadFailed, ModelNotFound, Unauthorized
from app.serving.offload import in_thread
from app.serving.registry import ModelRegistry, StoreSnapshot
from schemas.cards import MODEL_NAME_PATTERN

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
UNLOADED = "UNLOADED"
UNLOADED_REASON = "unloaded by the repository API"


@dataclass(frozen=True)
class RepositoryEntry:
    """One row of the index: a version, or (`version` None) a model name with no version row,
    such as a folder with no valid version or a model unloaded with none."""

    name: str
    version: int | None
    state: str  # READY, UNAVAILABLE or UNLOADED (module docstring)
    reason: str  # "" when READY


class Repository(Protocol):
    """What every surface calls; reachable as `dataplane.repository`. `load` and `unload`
    raise `ServiceError`s: ModelNotFound (no such model in the store), LoadFailed (no version
    of it loads), RepositoryBusy (retry), NotReady."""

    def index(self, *, ready_only: bool = False) -> list[RepositoryEntry]: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...


def index_of(snapshot: StoreSnapshot) -> list[RepositoryEntry]:
    """The index rows of a registry snapshot, by name then version."""
    rows: list[RepositoryEntry] = []
    for name, entry in snapshot.entries.items():
        rows += [RepositoryEntry(name, version, READY, "") for version in entry.versions]
        rows += [
            RepositoryEntry(name, version, UNAVAILABLE, reason)
            for version, reason in entry.unavailable.items()
        ]
    for name, versions in snapshot.unloaded.items():
        rows += [RepositoryEntry(name, version, UNLOADED, UNLOADED_REASON) for version in versions]
        if not versions:
            rows.append(RepositoryEntry(name, None, UNLOADED, UNLOADED_REASON))
    rows += [
        RepositoryEntry(name, None, UNAVAILABLE, reason)
        for name, reason in snapshot.folders.items()
        if name not in snapshot.unloaded
    ]
    return sorted(rows, key=lambda row: (row.name, row.version or 0))


def selected(rows: Iterable[RepositoryEntry], *, ready_only: bool) -> list[RepositoryEntry]:
    return [row for row in rows if row.state == READY or not ready_only]


def require_in_store(model_dir: Path, name: str) -> None:
    """A name a request may load: a valid model name whose folder is in the store (the pattern
    check first, so no name ever reaches outside the store)."""
    if not re.fullmatch(MODEL_NAME_PATTERN, name) or not (model_dir / name).is_dir():
        raise ModelNotFound(f"Model {name!r} is not in the model store")


def require_known(registry: ModelRegistry, name: str) -> None:
    """A name a request may unload: served, refused or unloaded now, or in the store."""
    snapshot = registry.snapshot
    if name not in snapshot.entries and name not in snapshot.unloaded:
        require_in_store(registry.model_dir, name)


def check_loaded(rows: Iterable[RepositoryEntry], name: str) -> None:
    """After a load: nothing when a version of `name` serves, else why none does."""
    mine = [row for row in rows if row.name == name]
    if not mine:
        raise ModelNotFound(f"Model {name!r} is not in the model store")
    if any(row.state == READY for row in mine):
        return
    reasons = "; ".join(
        row.reason if row.version is None else f"version {row.version}: {row.reason}"
        for row in mine
    )
    raise LoadFailed(f"Model {name!r} failed to load: {reasons}")


def authorize_write(settings: Settings, offered_key: str | None) -> None:
    """May this caller load or unload? With an API key configured, only with it (401, compared
    in constant time); then `MODELPORT_REPOSITORY_WRITES` decides (403 when off). Unset, writes
    are on exactly when a key guards them. REST (the X-API-Key header) and gRPC (the `x-api-key`
    metadata) both call this."""
    expected = settings.api_key
    if expected is not None and (
        offered_key is None
        or not secrets.compare_digest(offered_key.encode(), expected.get_secret_value().encode())
    ):
        raise Unauthorized("Missing or invalid API key: send it in the X-API-Key header")
    if settings.repository_writes is False:
        raise Forbidden(
            "Repository writes (load, unload) are turned off: MODELPORT_REPOSITORY_WRITES=false"
        )
    if settings.repository_writes is None and expected is None:
        raise Forbidden(
            "Repository writes (load, unload) are off: set MODELPORT_REPOSITORY_WRITES=true, "
            "or MODELPORT_API_KEY to allow them to callers with the key"
        )


class InProcessRepository:
    """The repository of a server that is one process: it rescans the model folder itself (in a
    thread, one load or unload at a time), and keeps the unloaded models in memory."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._lock = threading.Lock()

    def index(self, *, ready_only: bool = False) -> list[RepositoryEntry]:
        return selected(index_of(self.registry.snapshot), ready_only=ready_only)

    async def load(self, name: str) -> None:
        require_in_store(self.registry.model_dir, name)
        check_loaded(await in_thread(self._apply, name, False), name)

    async def unload(self, name: str) -> None:
        require_known(self.registry, name)
        await in_thread(self._apply, name, True)

    def _apply(self, name: str, unload: bool) -> list[RepositoryEntry]:
        with self._lock:
            unloaded = self.registry.unloaded
            self.registry.unloaded = (unloaded | {name}) if unload else (unloaded - {name})
            return index_of(self.registry.refresh([name]))

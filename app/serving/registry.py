"""The registry: every version in the store loaded, checked and ready to serve.

A version whose card or artifact is missing, invalid, or does not match is refused: it is
listed as unavailable (and `/readyz` says so) while every other model keeps serving. Scanning
the store is app.serving.store_scan's (its names are re-exported here for the registry's
callers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from pathlib import Path

from app.errors import ModelNotFound, ModelUnavailable
from app.serving.model import LoadedModel
from app.serving.store_scan import (
    LoadHook,
    ModelEntry,
    StoreSnapshot,
    load_version,
    merged,
    scan_model,
    scan_store,
    without,
)
from app.store.versions import VersionPolicy

__all__ = [
    "LoadHook",
    "ModelEntry",
    "ModelRegistry",
    "StoreSnapshot",
    "load_version",
    "scan_store",
]

logger = logging.getLogger("modelport.registry")


class ModelRegistry:
    """Holds the loaded store and answers lookups. `load()` builds a new snapshot and swaps it in
    whole, so a reload never exposes a half-loaded store to requests in flight."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_rows: int,
        trusted_types: list[str] | None = None,
        on_load: Sequence[LoadHook] = (),
        version_policy: VersionPolicy = "refuse",
        only: str | None = None,
    ) -> None:
        """`only`: load that one model's versions, not the whole store (`modelport score`)."""
        self.model_dir = model_dir
        self.version_policy = version_policy
        self.only = only
        self.max_rows = max_rows
        self.trusted_types = list(trusted_types or [])
        self.on_load = tuple(on_load)
        # Models left unloaded on purpose by the repository API (app.serving.repository): the
        # next `load` or `refresh` lists their versions without loading them.
        self.unloaded: frozenset[str] = frozenset()
        self._snapshot = StoreSnapshot(entries={}, problems={"store": "not loaded yet"})
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # one scan at a time
        self.generation = 0
        self._loaded = False

    def load(self) -> StoreSnapshot:
        """Scan the whole store and swap the new snapshot in."""
        with self._loading:
            snapshot = scan_store(
                self.model_dir,
                max_rows=self.max_rows,
                trusted_types=self.trusted_types,
                on_load=self.on_load,
                unloaded=self.unloaded,
                version_policy=self.version_policy,
                only=self.only,
            )
            return self._swap(snapshot, snapshot)

    def refresh(self, names: Collection[str]) -> StoreSnapshot:
        """Rescan only these model folders (loading, or unloading, those models); every other
        model keeps the versions it has. The whole store is scanned when none is loaded yet."""
        with self._loading:
            current = self._snapshot
            if not self._loaded or not self.model_dir.is_dir():
                scanned = scan_store(
                    self.model_dir,
                    max_rows=self.max_rows,
                    trusted_types=self.trusted_types,
                    on_load=self.on_load,
                    unloaded=self.unloaded,
                    version_policy=self.version_policy,
                    only=self.only,
                )
                return self._swap(scanned, scanned)
            names = set(names)
            rescanned = [
                scan_model(
                    self.model_dir / name,
                    max_rows=self.max_rows,
                    trusted_types=self.trusted_types,
                    on_load=self.on_load,
                    unloaded=name in self.unloaded,
                    version_policy=self.version_policy,
                )
                for name in sorted(names)
            ]
            return self._swap(merged([without(current, names), *rescanned]), merged(rescanned))

    def _swap(self, snapshot: StoreSnapshot, scanned: StoreSnapshot) -> StoreSnapshot:
        with self._lock:
            self._snapshot = snapshot
            self.generation += 1
            self._loaded = True
        for entry in scanned.entries.values():
            for version in sorted(entry.versions):
                logger.info("loaded model %s v%d", entry.name, version)
        for name in scanned.unloaded:
            logger.info("left model %s unloaded (repository API)", name)
        for where, reason in scanned.problems.items():
            logger.error("refused %s: %s", where, reason)
        return snapshot

    @property
    def loaded(self) -> bool:
        """Whether a snapshot of the store is in place (`load` done, no `clear` since)."""
        return self._loaded

    def clear(self) -> None:
        with self._lock:
            self._snapshot = StoreSnapshot(entries={}, problems={"store": "not loaded"})
            self._loaded = False

    @property
    def problems(self) -> dict[str, str]:
        return dict(self._snapshot.problems)

    @property
    def snapshot(self) -> StoreSnapshot:
        return self._snapshot

    @property
    def ready(self) -> bool:
        """Every model in the store loaded, and at least one model there. A model unloaded on
        purpose counts as one: unloading is no failure."""
        snapshot = self._snapshot
        return not snapshot.problems and (
            any(entry.versions for entry in snapshot.entries.values()) or bool(snapshot.unloaded)
        )

    def entries(self) -> list[ModelEntry]:
        return list(self._snapshot.entries.values())

    def entry(self, name: str) -> ModelEntry:
        snapshot = self._snapshot
        found = snapshot.entries.get(name)
        if found is None:
            if name in snapshot.unloaded:
                raise ModelNotFound(
                    f"Model {name!r} is unloaded (repository API): load it again to serve it"
                )
            raise ModelNotFound(f"Model {name!r} not found")
        return found

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        entry = self.entry(name)
        if version is None:
            version = entry.default_version
            if version is None:
                raise ModelUnavailable(
                    f"Model {name!r} has no loadable version: {entry.unavailable}"
                )
        model = entry.versions.get(version)
        if model is not None:
            return model
        if version in entry.unavailable:
            raise ModelUnavailable(
                f"Model {name!r} version {version} is unavailable: {entry.unavailable[version]}"
            )
        raise ModelNotFound(f"Model {name!r} has no version {version}")

    def loaded_models(self) -> list[LoadedModel]:
        return [model for entry in self.entries() for model in entry.versions.values()]

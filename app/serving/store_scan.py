"""Scanning the model store: each version loaded, checked against its card and its own example,
handed to the load hooks; or refused, with why. The registry (app.serving.registry) holds the
result and swaps it in whole.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError

from app.errors import InferenceError, InvalidInput
from app.metrics import MODEL_LOAD_SECONDS, MODEL_LOADED, MODEL_VERSION_MISMATCH
from app.serving.model import LoadedModel, predict
from app.serving.schema import InputSchema
from app.store.artifacts import (
    TRAFFIC_FILE,
    ArtifactRefused,
    check_against_card,
    load_estimator,
    read_card,
    sha256_of,
)
from app.store.versions import VersionMismatch, VersionPolicy, version_mismatch_of
from schemas.cards import MODEL_NAME_PATTERN, TrafficSplit

logger = logging.getLogger("modelport.registry")

# Called with each version as it loads, before it can serve (e.g. to attach its batcher).
LoadHook = Callable[[LoadedModel], None]


def load_version(
    version_dir: Path,
    *,
    name: str,
    version: int,
    max_rows: int,
    trusted_types: list[str],
    version_policy: VersionPolicy = "refuse",
) -> LoadedModel:
    """One version from its folder, checked: card, SHA-256, library versions, the estimator
    against its card, and a prediction of the card's example. ArtifactRefused says why not."""
    card = read_card(version_dir)
    if card.name != name or card.version != version:
        raise ArtifactRefused(
            f"card says {card.name} v{card.version}, but it sits in {name}/{version}"
        )
    artifact = version_dir / card.artifact
    if not artifact.is_file():
        raise ArtifactRefused(f"no {card.artifact}")
    actual = sha256_of(artifact)
    if actual != card.sha256:
        raise ArtifactRefused(
            f"SHA-256 mismatch: card records {card.sha256[:12]}…, {card.artifact} is {actual[:12]}…"
        )
    try:
        loaded = load_estimator(artifact, trusted_types=trusted_types)
    except ArtifactRefused:
        raise
    except Exception as exc:
        raise ArtifactRefused(f"cannot load {card.artifact}: {type(exc).__name__}: {exc}") from exc
    estimator = loaded.estimator
    mismatch = version_mismatch_of(card, loaded.saved_with)
    if mismatch is not None:
        if version_policy == "refuse":
            raise VersionMismatch(f"{mismatch} (MODELPORT_VERSION_MISMATCH=warn serves it anyway)")
        logger.warning("serving %s v%d despite a version mismatch: %s", name, version, mismatch)
    check_against_card(estimator, card)
    fitted_names = getattr(estimator, "feature_names_in_", None)
    frame_columns = None if fitted_names is None else [str(name) for name in fitted_names]
    inputs = InputSchema(card, max_rows=max_rows, frame_columns=frame_columns)
    model = LoadedModel(
        card=card,
        estimator=estimator,
        inputs=inputs,
        version_mismatch=mismatch,
        load_warnings=loaded.warnings,
    )
    # Predict the example once: a version that cannot answer its own example never serves
    # (so a bad rollout never turns ready), and the answer becomes the docs' response example.
    try:
        rows = inputs.validate_rows(inputs.example["instances"], loc=("example",))
    except InvalidInput as exc:
        raise ArtifactRefused(f"the card's example fails its own schema: {exc.detail}") from exc
    try:
        example_response = predict(model, rows, observe=False)
    except (InferenceError, InvalidInput) as exc:
        raise ArtifactRefused(f"the model cannot predict its example: {exc.detail}") from exc
    return replace(model, example_response=example_response.model_dump(mode="json"))


@dataclass(frozen=True)
class ModelEntry:
    """Every version of one model name found in the store."""

    name: str
    versions: dict[int, LoadedModel] = field(default_factory=dict)
    unavailable: dict[int, str] = field(default_factory=dict)
    traffic: TrafficSplit | None = None

    def route(self, session: str) -> int | None:
        """The version a client session is pinned to by the traffic split.

        A hash of model name and session picks a point in [0, 1) and the weights divide that
        interval: the same session always lands on the same version, in every worker and
        replica, with no shared state. Versions not being served are left out of the split.
        """
        weighted = self._weighted
        if not weighted:
            return self.default_version
        digest = hashlib.sha256(f"{self.name}\0{session}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * sum(w for _, w in weighted)
        for version, weight in weighted:
            point -= weight
            if point < 0:
                return version
        return weighted[-1][0]

    @cached_property
    def _weighted(self) -> list[tuple[int, float]]:
        """The split's served versions with their (positive) weights, in version order."""
        if self.traffic is None:
            return []
        return [
            (v, w) for v, w in sorted(self.traffic.weights.items()) if v in self.versions and w > 0
        ]

    @property
    def split(self) -> bool:
        """Whether unpinned traffic is shared between two or more served versions."""
        return len(self._weighted) > 1

    @property
    def default_version(self) -> int | None:
        """The version served when none is pinned: the heaviest in the traffic split, else the newest."""
        if not self.versions:
            return None
        if self.traffic is not None:
            weighted = [(w, v) for v, w in self.traffic.weights.items() if v in self.versions]
            if weighted:
                return max(weighted)[1]
        return max(self.versions)


@dataclass(frozen=True)
class StoreSnapshot:
    entries: dict[str, ModelEntry]
    problems: dict[str, str]  # "name/version" (or a path) -> why it is not served
    # Models unloaded on purpose (the repository API): name -> the version folders on disk.
    unloaded: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Model folders that give no version at all: name -> why (a bad name, a broken link, no
    # version folders). Only the first two are problems: an empty folder may be one being filled.
    folders: dict[str, str] = field(default_factory=dict)


NO_VERSIONS = "no version folders (1, 2, ...) in it"


def _version_folders(model_path: Path, *, warn: bool) -> list[tuple[int, Path]]:
    found = []
    for version_path in sorted(p for p in model_path.iterdir() if p.is_dir()):
        if version_path.name.startswith("."):
            continue  # e.g. a version being written by `modelport import`
        if not re.fullmatch(r"[1-9][0-9]*", version_path.name):
            if warn:
                logger.warning(
                    "ignoring %s: version folders are positive integers (1, 2, ...)", version_path
                )
            continue
        found.append((int(version_path.name), version_path))
    return sorted(found)


def scan_model(
    model_path: Path,
    *,
    max_rows: int,
    trusted_types: list[str],
    on_load: Sequence[LoadHook] = (),
    unloaded: bool = False,
    version_policy: VersionPolicy = "refuse",
) -> StoreSnapshot:
    """One model folder of the store, as a snapshot of its own (nothing when it is gone). An
    unloaded model's versions are listed, not loaded."""
    name = model_path.name
    if not model_path.is_dir():
        if (
            model_path.is_symlink()
        ):  # a model folder whose link target is gone must not vanish silently
            reason = "broken symlink: its target does not exist"
            return StoreSnapshot(entries={}, problems={name: reason}, folders={name: reason})
        return StoreSnapshot(entries={}, problems={})
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        reason = f"invalid model name (must match {MODEL_NAME_PATTERN})"
        return StoreSnapshot(entries={}, problems={name: reason}, folders={name: reason})
    if unloaded:
        versions = tuple(v for v, _ in _version_folders(model_path, warn=False))
        for version in versions:
            MODEL_LOADED.labels(name, str(version)).set(0)
        return StoreSnapshot(entries={}, problems={}, unloaded={name: versions})
    entry = ModelEntry(name=name)
    problems: dict[str, str] = {}
    for version, version_path in _version_folders(model_path, warn=True):
        started = time.perf_counter()
        try:
            model = load_version(
                version_path,
                name=name,
                version=version,
                max_rows=max_rows,
                trusted_types=trusted_types,
                version_policy=version_policy,
            )
            for hook in on_load:
                hook(model)
            entry.versions[version] = model
            mismatched = model.version_mismatch is not None
        except ArtifactRefused as exc:
            mismatched = isinstance(exc, VersionMismatch)
            entry.unavailable[version] = str(exc)
            problems[f"{name}/{version}"] = str(exc)
        except Exception as exc:  # one broken version must never stop the others loading
            mismatched = False
            logger.exception("unexpected error loading %s", version_path)
            entry.unavailable[version] = f"cannot load: {type(exc).__name__}: {exc}"
            problems[f"{name}/{version}"] = entry.unavailable[version]
        MODEL_LOADED.labels(name, str(version)).set(1 if version in entry.versions else 0)
        MODEL_VERSION_MISMATCH.labels(name, str(version)).set(1 if mismatched else 0)
        MODEL_LOAD_SECONDS.labels(name, str(version)).set(time.perf_counter() - started)
    traffic_path = model_path / TRAFFIC_FILE
    if traffic_path.is_file():
        try:
            traffic = TrafficSplit.model_validate_json(traffic_path.read_bytes())
        except ValidationError as exc:
            problems[f"{name}/{TRAFFIC_FILE}"] = f"invalid: {exc.errors()[0]['msg']}"
        else:
            missing = sorted(set(traffic.weights) - set(entry.versions))
            if missing:
                problems[f"{name}/{TRAFFIC_FILE}"] = f"names versions not being served: {missing}"
            entry = ModelEntry(name, entry.versions, entry.unavailable, traffic)
    if not (entry.versions or entry.unavailable):
        return StoreSnapshot(entries={}, problems=problems, folders={name: NO_VERSIONS})
    return StoreSnapshot(entries={name: entry}, problems=problems)


def merged(parts: Sequence[StoreSnapshot]) -> StoreSnapshot:
    merged = StoreSnapshot(entries={}, problems={})
    for part in parts:
        merged.entries.update(part.entries)
        merged.problems.update(part.problems)
        merged.unloaded.update(part.unloaded)
        merged.folders.update(part.folders)
    return StoreSnapshot(
        entries=dict(sorted(merged.entries.items())),
        problems=merged.problems,
        unloaded=dict(sorted(merged.unloaded.items())),
        folders=dict(sorted(merged.folders.items())),
    )


def without(snapshot: StoreSnapshot, names: Collection[str]) -> StoreSnapshot:
    """The snapshot with nothing of these model names left in it."""
    return StoreSnapshot(
        entries={n: e for n, e in snapshot.entries.items() if n not in names},
        problems={k: v for k, v in snapshot.problems.items() if k.split("/")[0] not in names},
        unloaded={n: v for n, v in snapshot.unloaded.items() if n not in names},
        folders={n: r for n, r in snapshot.folders.items() if n not in names},
    )


def scan_store(
    model_dir: Path,
    *,
    max_rows: int,
    trusted_types: list[str],
    on_load: Sequence[LoadHook] = (),
    unloaded: Collection[str] = (),
    version_policy: VersionPolicy = "refuse",
    only: str | None = None,
) -> StoreSnapshot:
    """Load every version in the store (of the model named `only`, when given), but those of
    the `unloaded` models. Each loaded version is handed to the `on_load` hooks (e.g. batching,
    which attaches a runner) before anything can serve it."""
    if not model_dir.is_dir():
        reason = (
            "is not a directory" if model_dir.exists() else "model store directory does not exist"
        )
        return StoreSnapshot(entries={}, problems={str(model_dir): reason})
    return merged(
        [
            scan_model(
                path,
                max_rows=max_rows,
                trusted_types=trusted_types,
                on_load=on_load,
                unloaded=path.name in unloaded,
                version_policy=version_policy,
            )
            for path in sorted(model_dir.iterdir())
            if not path.name.startswith(".")
            and (path.is_dir() or path.is_symlink())
            and (only is None or path.name == only)
        ]
    )

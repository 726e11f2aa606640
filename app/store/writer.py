"""Writing versions into the store, the way `app.store.artifacts` reads them.

`<model_dir>/<name>/<version>/` holds the artifact and its `card.json`. A version is assembled
in a hidden sibling folder and renamed into place, so a crash or a refused import never leaves a
half-written version to be served.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import joblib
from pydantic import ValidationError

from app.store.artifacts import CARD_FILE, TRAFFIC_FILE, sha256_of
from app.store.versions import runtime_versions
from schemas.cards import (
    ModelCard,
    TrafficSplit,
)

Artifact = Literal["model.joblib", "model.skops"]
Task = Literal["classification", "regression"]

SOURCE_ARTIFACTS: dict[str, Artifact] = {
    ".joblib": "model.joblib",
    ".pkl": "model.joblib",
    ".skops": "model.skops",
}


# -- writing a version ---------------------------------------------------------------------------


def write_version(
    model_dir: Path,
    card_fields: dict[str, Any],
    estimator: Any,
    *,
    artifact: Artifact = "model.joblib",
    replace: bool = False,
) -> ModelCard:
    """Save a fitted `estimator` as `<model_dir>/<name>/<version>/<artifact>` with its card.

    `card_fields` are the ModelCard fields except `artifact` and `sha256`, which come from the
    file written; the library versions default to the running ones (the artifact is made
    here) and `created_at` to now. An existing version is refused unless `replace`.
    """

    def dump(path: Path) -> None:
        if artifact == "model.skops":
            import skops.io

            skops.io.dump(estimator, path)
        else:
            # Uncompressed, so the registry can memory-map the arrays instead of copying them.
            joblib.dump(estimator, path)

    fields = runtime_versions() | card_fields
    return write_artifact_version(model_dir, fields, artifact, dump, replace=replace)


def write_artifact_version(
    model_dir: Path,
    card_fields: dict[str, Any],
    artifact: Artifact,
    put_artifact: Callable[[Path], object],
    *,
    replace: bool,
) -> ModelCard:
    if {"artifact", "sha256"} & card_fields.keys():
        raise ValueError(
            "artifact and sha256 are filled in from the written file; do not pass them"
        )
    """Write a version whose artifact `put_artifact` puts at the path it is given. The card
    fields must name the library versions the artifact was made with (`sklearn_version` at
    least); `created_at` defaults to now."""
    fields = {"created_at": datetime.now(UTC)} | card_fields
    # Validate with a placeholder digest first, so a bad card fails before anything is written.
    draft = _validated_card({**fields, "artifact": artifact, "sha256": "0" * 64})
    model_path = model_dir / draft.name
    final = model_path / str(draft.version)
    if final.exists() and not replace:
        raise ValueError(f"{draft.name} v{draft.version} already exists in {model_dir}")
    model_path.mkdir(parents=True, exist_ok=True)
    staging = model_path / f".{draft.version}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        put_artifact(staging / artifact)
        card = draft.model_copy(update={"sha256": sha256_of(staging / artifact)})
        (staging / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
        _move_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return card


def _validated_card(fields: dict[str, Any]) -> ModelCard:
    try:
        return ModelCard.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'card'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise ValueError(f"invalid model card: {problems}") from None


def _move_into_place(staging: Path, final: Path) -> None:
    if not final.exists():
        os.rename(staging, final)
        return
    # Replacing takes two renames: the version is briefly absent, but never half-written.
    retired = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(retired, ignore_errors=True)
    os.rename(final, retired)
    os.rename(staging, final)
    shutil.rmtree(retired, ignore_errors=True)


def write_traffic(model_path: Path, weights: dict[int, float]) -> None:
    split = TrafficSplit(weights=weights)
    staging = model_path / f".{TRAFFIC_FILE}.tmp-{os.getpid()}"
    staging.write_text(split.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(staging, model_path / TRAFFIC_FILE)

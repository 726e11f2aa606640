"""Library versions: which ones made an artifact, which ones serve it, and whether they differ
enough to matter.

A pickle (or skops file) of a scikit-learn estimator is only promised to load under the
scikit-learn version that wrote it; across minor versions the attributes an estimator keeps can
change, and a model that loads may still predict wrongly (or fail at the first request). So a
different scikit-learn minor version is a reason to refuse a version (or, by choice, to serve it
with a warning); a different patch version is only reported.
"""

from __future__ import annotations

import functools
import platform
import re
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from typing import Literal

import sklearn

from app.store.artifacts import ArtifactRefused
from schemas.cards import ModelCard

# The libraries an artifact's card records, by the card field's name.
TRACKED = {
    "sklearn_version": "scikit-learn",
    "numpy_version": "numpy",
    "scipy_version": "scipy",
}


@functools.cache
def _runtime_versions() -> tuple[tuple[str, str | None], ...]:
    found: dict[str, str | None] = {"python_version": platform.python_version()}
    for field, distribution in TRACKED.items():
        try:
            found[field] = installed_version(distribution)
        except PackageNotFoundError:
            found[field] = None
    return tuple(found.items())


def runtime_versions() -> dict[str, str | None]:
    """This process's Python, scikit-learn, numpy and scipy, keyed as the card's fields are."""
    return dict(_runtime_versions())


def minor_of(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string such as "1.7.2" or "1.9.dev0"; None if unreadable."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def sklearn_mismatch(made_with: str, running: str) -> str | None:
    """Why an artifact made with scikit-learn `made_with` must not be trusted under `running`,
    or None when both are the same minor version (or `made_with` cannot be read)."""
    made, now = minor_of(made_with), minor_of(running)
    if made is None or now is None or made == now:
        return None
    return (
        f"made with scikit-learn {made_with}, but this server runs {running}: "
        f"estimators are only promised to load under the minor version that saved them"
    )


VersionPolicy = Literal["refuse", "warn"]


class VersionMismatch(ArtifactRefused):
    """A version refused because another scikit-learn minor version made its artifact."""


def version_mismatch_of(card: ModelCard, saved_with: tuple[str, ...] = ()) -> str | None:
    """Why the version's artifact does not match the scikit-learn serving it (None if it does):
    judged on the card's record and on the versions the estimators' own pickled state names
    (InconsistentVersionWarning), so neither an edited card nor a swapped artifact hides it."""
    running = sklearn.__version__
    for made_with in dict.fromkeys((card.sklearn_version, *saved_with)):
        reason = sklearn_mismatch(made_with, running)
        if reason is not None:
            return reason
    return None

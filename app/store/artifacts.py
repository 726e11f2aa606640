"""Reading the model store: cards, artifacts and their SHA-256, checked against each other.

Layout (like Triton's model repository):

    models/<name>/<version>/card.json      the model card (schemas.cards.ModelCard)
    models/<name>/<version>/model.joblib   or model.skops, whose SHA-256 the card records
    models/<name>/traffic.json             optional canary split, e.g. {"weights": {"1": 90, "2": 10}}
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from pydantic import ValidationError
from sklearn.exceptions import InconsistentVersionWarning

from schemas.cards import ModelCard

logger = logging.getLogger("modelport.registry")

CARD_FILE = "card.json"
TRAFFIC_FILE = "traffic.json"


class ArtifactRefused(Exception):
    """Why one model version cannot be served."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_card(version_dir: Path) -> ModelCard:
    card_path = version_dir / CARD_FILE
    try:
        return ModelCard.model_validate_json(card_path.read_bytes())
    except FileNotFoundError as exc:
        raise ArtifactRefused(f"no {CARD_FILE}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ArtifactRefused(f"invalid {CARD_FILE}: {problems}") from exc


@dataclass(frozen=True)
class LoadedArtifact:
    estimator: Any
    # scikit-learn versions named by InconsistentVersionWarning: the pickled estimators' own
    # record of the version that saved them, whatever the card says.
    saved_with: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # every warning raised while loading, as text


def load_estimator(path: Path, *, trusted_types: list[str]) -> LoadedArtifact:
    """Load an artifact. `.skops` files go through skops' trusted-types check: a file naming a
    type that is neither a skops default nor in `trusted_types` is refused, never executed.
    Warnings raised while loading are caught (never lost, never raised) and returned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if path.suffix == ".skops":
            import skops.io

            untrusted = skops.io.get_untrusted_types(file=path)
            refused = sorted(set(untrusted) - set(trusted_types))
            if refused:
                raise ArtifactRefused(f"skops artifact names untrusted types: {', '.join(refused)}")
            estimator = skops.io.load(path, trusted=untrusted)
        else:
            estimator = joblib.load(path)
    saved_with = sorted(
        {
            str(w.message.original_sklearn_version)
            for w in caught
            if isinstance(w.message, InconsistentVersionWarning)
        }
    )
    texts = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    for text in texts:
        logger.warning("loading %s: %s", path, text)
    return LoadedArtifact(estimator, tuple(saved_with), texts)


def check_against_card(estimator: Any, card: ModelCard) -> None:
    if not callable(getattr(estimator, "predict", None)):
        raise ArtifactRefused("artifact has no predict method")
    names = [feature.name for feature in card.features]
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is not None and n_features != len(names):
        raise ArtifactRefused(f"model expects {n_features} features, card lists {len(names)}")
    fitted_names = getattr(estimator, "feature_names_in_", None)
    # Same names; order may differ, since DataFrames are built in the fitted column order.
    if fitted_names is not None and sorted(map(str, fitted_names)) != sorted(names):
        raise ArtifactRefused("card feature names differ from the model's feature_names_in_")
    if card.task == "classification":
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ArtifactRefused("a classification card, but the model has no classes_")
        assert card.target.classes is not None
        if [str(c) for c in np.asarray(classes).tolist()] != [str(c) for c in card.target.classes]:
            raise ArtifactRefused("card target.classes differ from the model's classes_")

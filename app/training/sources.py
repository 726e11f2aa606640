"""What `modelport import` reads: an estimator file (.joblib, .pkl, .skops) or an MLflow model
(a directory, or a `models:/`/`runs:/` URI), loaded with the versions it was made with and
where it came from."""

from __future__ import annotations

import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import sklearn
from sklearn.exceptions import InconsistentVersionWarning

from app.store.artifacts import sha256_of
from app.store.writer import SOURCE_ARTIFACTS, Artifact
from app.training.mlflow_models import is_mlflow_source, open_mlflow_model
from schemas.cards import ModelSource

logger = logging.getLogger("modelport.training")


@dataclass
class LoadedSource:
    estimator: Any
    path: Path  # the file whose bytes are copied when the artifact keeps its format
    artifact: Artifact  # what that copy is called in the store
    made_with: dict[str, str | None]  # the card's *_version fields, as far as known
    provenance: ModelSource
    description: str = ""
    signature: dict[str, str] | None = None  # MLflow: feature -> card dtype
    example: list[Any] | None = None  # MLflow: the input example's first row
    example_columns: list[str] | None = None
    notes: list[str] = field(default_factory=list)


def load_source(
    source: str, *, trusted_types: list[str], tracking_uri: str | None = None
) -> LoadedSource:
    """Load what `source` names. Files and MLflow models are loaded the way they were saved
    (joblib, pickle, cloudpickle; skops only with trusted types); any warning raised while
    loading is reported, and scikit-learn's InconsistentVersionWarning names the version that
    really saved the estimator."""
    if is_mlflow_source(source):
        return _mlflow(source, trusted_types=trusted_types, tracking_uri=tracking_uri)
    path = Path(source)
    artifact = SOURCE_ARTIFACTS.get(path.suffix.lower())
    if artifact is None:
        raise ValueError(
            f"cannot import {path.name}: expected a .joblib, .pkl or .skops file, "
            "an MLflow model directory, or a models:/ or runs:/ URI"
        )
    if not path.is_file():
        raise ValueError(f"cannot import {path}: no such file")
    serialization = "skops" if artifact == "model.skops" else "joblib"
    estimator, saved_with, notes = unpickle(path, serialization, trusted_types)
    return LoadedSource(
        estimator=estimator,
        path=path,
        artifact=artifact,
        # A pickle records no Python, numpy or scipy version; each scikit-learn estimator in it
        # records its own (InconsistentVersionWarning says so when it differs from ours).
        made_with={
            "sklearn_version": saved_with or sklearn.__version__,
            "python_version": None,
            "numpy_version": None,
            "scipy_version": None,
        },
        provenance=ModelSource(
            kind="file",
            location=str(path.resolve()),
            serialization=serialization,
            sha256=sha256_of(path),
        ),
        notes=notes,
    )


def _mlflow(source: str, *, trusted_types: list[str], tracking_uri: str | None) -> LoadedSource:
    model = open_mlflow_model(source, tracking_uri)
    estimator, saved_with, notes = unpickle(model.artifact, model.serialization, trusted_types)
    made_with = dict(model.versions)
    if saved_with:  # the estimators' own record wins over the MLmodel file's
        made_with["sklearn_version"] = saved_with
    if not made_with.get("sklearn_version"):
        made_with["sklearn_version"] = sklearn.__version__
    artifact: Artifact = "model.skops" if model.serialization == "skops" else "model.joblib"
    return LoadedSource(
        estimator=estimator,
        path=model.artifact,
        artifact=artifact,
        made_with=made_with,
        provenance=model.source.model_copy(update={"sha256": sha256_of(model.artifact)}),
        description=model.description,
        signature=model.signature,
        example=model.example,
        example_columns=model.example_columns,
        notes=notes,
    )


def unpickle(
    path: Path, serialization: str, trusted_types: list[str]
) -> tuple[Any, str, list[str]]:
    """The estimator in `path`, the scikit-learn version its pickled state names when it is not
    ours ("" otherwise), and the other warnings raised while loading, as notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = _load(path, serialization, trusted_types)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from exc
    saved_with = ""
    notes = []
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            saved_with = str(warning.message.original_sklearn_version)
        else:
            notes.append(f"loading {path.name}: {warning.category.__name__}: {warning.message}")
    return estimator, saved_with, list(dict.fromkeys(notes))


def _load(path: Path, serialization: str, trusted_types: list[str]) -> Any:
    if serialization == "skops":
        import skops.io

        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted_types))
        if untrusted:
            raise ValueError(
                f"refusing {path.name}: it names types skops does not trust by default "
                f"({', '.join(untrusted)}); list those you trust in MODELPORT_SKOPS_TRUSTED_TYPES"
            )
        return skops.io.load(path, trusted=list(trusted_types))
    if serialization == "joblib":
        return joblib.load(path)
    # MLflow's pickle and cloudpickle formats, read as mlflow.sklearn reads them (cloudpickle's
    # load is pickle's): the user chose to import this file, as they would to load it.
    with path.open("rb") as stream:
        return pickle.load(stream)

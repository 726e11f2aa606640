"""`modelport import`: a user's fitted estimator into the store, its card written by introspection
and, given a table of real rows (`--data`), by measurement."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from app.errors import InferenceError, InvalidInput
from app.serving.model import LoadedModel, run
from app.serving.registry import load_version
from app.serving.schema import InputSchema
from app.store.artifacts import ArtifactRefused
from app.store.versions import VersionPolicy, runtime_versions, sklearn_mismatch
from app.store.writer import Artifact, write_artifact_version
from app.training.introspect import describe_estimator
from app.training.mlflow_models import apply_signature
from app.training.sources import LoadedSource, load_source
from app.training.tables import read_table, score, study_table
from schemas.cards import MODEL_NAME_PATTERN, FeatureSpec, ModelCard

logger = logging.getLogger("modelport.training")

# Rows compared between the estimator and its skops copy before the copy replaces it.
_PROBE_ROWS = 1000


@dataclass(frozen=True)
class ImportOptions:
    version: int | None = None  # default: one past the highest present
    description: str = ""  # default: the MLflow registered model's
    data: Path | None = None  # a CSV or Parquet table of real rows
    target: str | None = None  # its target column: metrics
    test_size: float | None = None  # score only this held-out share of the rows
    seed: int = 0  # the split's random_state
    version_policy: VersionPolicy = "refuse"
    keep_format: bool = False  # copy the artifact as it is (no skops conversion)
    trusted_types: tuple[str, ...] = ()  # skops types trusted beyond skops' defaults
    tracking_uri: str | None = None  # MLflow: default MLFLOW_TRACKING_URI


@dataclass(frozen=True)
class Imported:
    card: ModelCard
    notes: list[str] = field(default_factory=list)  # what the user should know


def import_estimator(
    source: str | Path,
    model_dir: Path,
    *,
    name: str,
    options: ImportOptions | None = None,
) -> Imported:
    """Add a fitted estimator to the store as a new version of `name`.

    `source` is a .joblib, .pkl or .skops file, an MLflow model directory, or a `models:/` or
    `runs:/` URI. The card is written by introspecting the estimator (task, features, category
    features from its encoders, classes), from the MLflow signature and input example, and from
    `options.data`. The artifact is written as skops where the estimator round-trips through it
    with skops' default trusted types only, else copied byte for byte. Existing versions are
    refused, never overwritten; the new version is loaded back the way the registry will load
    it, and removed again if that fails.
    """
    options = options or ImportOptions()
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ValueError(f"invalid model name {name!r}: it must match {MODEL_NAME_PATTERN}")
    if options.test_size is not None and not 0 < options.test_size < 1:
        raise ValueError("--test-size is the held-out share of the rows: between 0 and 1")
    model_path = model_dir / name
    version = options.version if options.version is not None else _next_version(model_path)
    if version < 1:
        raise ValueError(f"version must be 1 or more, not {version}")
    version_dir = model_path / str(version)
    if version_dir.exists():
        raise ValueError(f"{name} v{version} already exists; versions are never overwritten")

    trusted = list(options.trusted_types)
    loaded = load_source(str(source), trusted_types=trusted, tracking_uri=options.tracking_uri)
    notes = list(loaded.notes)
    made_with = str(loaded.made_with["sklearn_version"])
    mismatch = sklearn_mismatch(made_with, sklearn.__version__)
    if mismatch is not None:
        if options.version_policy == "refuse":
            raise ValueError(
                f"{name} v{version} was not added: the artifact was {mismatch}. Re-save it "
                f"under scikit-learn {sklearn.__version__}, or set MODELPORT_VERSION_MISMATCH=warn "
                "to import and serve it anyway"
            )
        notes.append(
            f"version mismatch, served only with MODELPORT_VERSION_MISMATCH=warn: {mismatch}"
        )

    fields = describe_estimator(loaded.estimator)
    features: list[FeatureSpec] = fields["features"]
    typed: frozenset[str] = frozenset()
    if loaded.signature is not None:
        features = apply_signature(features, loaded.signature)
        typed = frozenset(n for n, dtype in loaded.signature.items() if dtype != "category")
        fields["example"] = _signature_example(loaded, features) or fields["example"]
    probe_rows: list[tuple[Any, ...]] = []
    targets: list[Any] = []
    if options.data is not None:
        facts = study_table(
            read_table(options.data),
            features,
            data_name=options.data.name,
            target=options.target,
            test_size=options.test_size,
            seed=options.seed,
            typed=typed,
        )
        features, notes = facts.features, notes + facts.notes
        fields |= {"example": facts.example or fields["example"], "reference": facts.reference}
        fields["evaluation"] = facts.evaluation
        probe_rows, targets = facts.rows, facts.targets
        if options.target is not None:
            fields["target"] = fields["target"].model_copy(update={"name": options.target})
    elif options.target is not None or options.test_size is not None:
        raise ValueError("--target and --test-size describe the --data table: give --data too")
    untyped = [
        f.name
        for f in features
        if loaded.signature and loaded.signature.get(f.name) == "category" and f.dtype != "category"
    ]
    if untyped:
        raise ValueError(
            f"the MLflow signature says {', '.join(untyped)} hold text, and the model has no "
            "encoder that lists their values: give --data, a table with real rows, to read them"
        )
    fields |= {
        "name": name,
        "version": version,
        "features": features,
        "description": options.description or loaded.description,
    }
    draft = _draft_card(fields | loaded.made_with)
    estimator, skops_bytes = loaded.estimator, None
    artifact: Artifact = loaded.artifact
    if loaded.artifact == "model.joblib":
        if options.keep_format:
            notes.append("artifact kept as it was (--keep-format)")
        elif mismatch is not None:
            notes.append(
                f"artifact kept as joblib: re-saving it under scikit-learn {sklearn.__version__} "
                f"would hide that {made_with} made it"
            )
        else:
            converted = _skops_copy(
                draft, loaded.estimator, probe_rows or [tuple(draft.example or [])]
            )
            if isinstance(converted, str):
                notes.append(f"artifact kept as joblib: {converted}")
            else:
                estimator, skops_bytes = converted
                artifact = "model.skops"
    if targets:
        fields["metrics"] = score(
            _in_memory(draft, estimator, len(probe_rows)), probe_rows, targets
        )
    fields["source"] = loaded.provenance.model_copy(
        update={"note": next((n for n in notes if n.startswith("artifact kept")), None)}
    )
    versions = runtime_versions() if skops_bytes is not None else loaded.made_with

    def put(path: Path) -> None:
        if skops_bytes is not None:
            path.write_bytes(skops_bytes)
        else:
            shutil.copyfile(loaded.path, path)

    card = write_artifact_version(model_dir, fields | versions, artifact, put, replace=False)
    try:
        served = load_version(
            version_dir,
            name=name,
            version=version,
            max_rows=10,
            trusted_types=trusted,
            version_policy=options.version_policy,
        )
        _probe(served)
    except (ArtifactRefused, ValueError) as exc:
        shutil.rmtree(version_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # leave no empty model folder behind
            model_path.rmdir()
        raise ValueError(f"{name} v{version} was not added: {exc}") from exc
    return Imported(card, notes)


def _next_version(model_path: Path) -> int:
    if not model_path.is_dir():
        return 1
    present = [int(p.name) for p in model_path.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(present, default=0) + 1


def _draft_card(fields: dict[str, Any]) -> ModelCard:
    """The card as it will be written, with a placeholder digest (the artifact is not yet)."""
    draft = {**fields, "artifact": "model.joblib", "sha256": "0" * 64}
    draft.setdefault("created_at", "2000-01-01T00:00:00Z")
    try:
        return ModelCard.model_validate(draft)
    except ValueError as exc:
        raise ValueError(f"invalid model card: {exc}") from None


def _signature_example(loaded: LoadedSource, features: list[FeatureSpec]) -> list[Any] | None:
    """The MLflow input example's first row in feature order, if it has every feature."""
    if loaded.example is None:
        return None
    names = [feature.name for feature in features]
    columns = loaded.example_columns or names
    if len(columns) != len(loaded.example) or sorted(columns) != sorted(names):
        return None
    by_name = dict(zip(columns, loaded.example, strict=True))
    if any(f.categories and by_name[f.name] not in f.categories for f in features):
        return None  # a value the encoder does not know: the introspected example serves
    return [
        int(by_name[f.name])
        if f.dtype == "int" and float(by_name[f.name]).is_integer()
        else by_name[f.name]
        for f in features
    ]


def _in_memory(card: ModelCard, estimator: Any, rows: int) -> LoadedModel:
    """A version as the registry would hold it, without the store: to score rows with."""
    fitted = getattr(estimator, "feature_names_in_", None)
    columns = None if fitted is None else [str(name) for name in fitted]
    inputs = InputSchema(card, max_rows=max(rows, 1), frame_columns=columns)
    return LoadedModel(card=card, estimator=estimator, inputs=inputs)


def _skops_copy(
    card: ModelCard, estimator: Any, rows: list[tuple[Any, ...]]
) -> tuple[Any, bytes] | str:
    """The estimator's skops copy (loaded back, and its bytes) when skops saves it with
    only the types it trusts by default and the copy answers `rows` exactly as the original;
    otherwise why not."""
    import skops.io

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            data = skops.io.dumps(estimator)
        except Exception as exc:
            return f"skops cannot save it ({type(exc).__name__}: {exc})"
        untrusted = skops.io.get_untrusted_types(data=data)
        if untrusted:
            return f"skops does not trust {', '.join(untrusted)} by default"
        try:
            copy = skops.io.loads(data, trusted=[])
        except Exception as exc:
            return f"skops cannot load its own copy ({type(exc).__name__}: {exc})"
    rows = rows[:_PROBE_ROWS]
    try:
        original = _answers(_in_memory(card, estimator, len(rows)), rows)
        copied = _answers(_in_memory(card, copy, len(rows)), rows)
    except (InferenceError, InvalidInput) as exc:
        return f"cannot compare the skops copy's predictions: {exc.detail}"
    if not all(_same(a, b) for a, b in zip(original, copied, strict=True)):
        return "the skops copy predicts differently"
    return copy, data


def _answers(model: LoadedModel, rows: list[tuple[Any, ...]]) -> tuple[Any, Any]:
    output = run(model, model.inputs.validate_rows(rows, loc=("probe",)), observe=False)
    return output.predictions, output.probabilities


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def _probe(loaded: LoadedModel) -> None:
    """Predict the card's example through the serving input path, to catch models that return
    several outputs per row. A model may reject the made-up example (all zeros): that is logged,
    not refused, since real requests will carry real values."""
    assert loaded.card.example is not None
    model_input = loaded.inputs.to_model_input([tuple(loaded.card.example)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            output = np.asarray(loaded.estimator.predict(model_input))
        except Exception as exc:
            logger.warning(
                "%s v%d cannot predict its example row: %s", loaded.name, loaded.version, exc
            )
            return
    for warning in caught:
        logger.warning(
            "%s v%d predicting its example: %s", loaded.name, loaded.version, warning.message
        )
    if output.ndim > 1 and output.shape[1] > 1:
        raise ValueError("multi-output models are not supported: predict must return one value")

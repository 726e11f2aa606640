"""Put model versions into the store: train the bundled examples, import users' estimators.

Each version is written the way `app.registry` reads it, `<model_dir>/<name>/<version>/` holding
the artifact and its `card.json`. A version is assembled in a hidden sibling folder and renamed
into place, so a crash or a refused import never leaves a half-written version to be served.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import sklearn
from pydantic import ValidationError
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.multioutput import (
    ClassifierChain,
    MultiOutputClassifier,
    MultiOutputRegressor,
    RegressorChain,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from app.inference import LoadedModel
from app.registry import CARD_FILE, TRAFFIC_FILE, ArtifactRefused, load_version, sha256_of
from schemas.cards import (
    MODEL_NAME_PATTERN,
    ClassLabel,
    FeatureSpec,
    FeatureValue,
    ModelCard,
    TargetSpec,
    TrafficSplit,
)

logger = logging.getLogger("modelport.training")

Artifact = Literal["model.joblib", "model.skops"]
Task = Literal["classification", "regression"]

_SOURCE_ARTIFACTS: dict[str, Artifact] = {
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
    file written; `sklearn_version` and `created_at` default to the running version and now.
    An existing version is refused unless `replace`.
    """

    def dump(path: Path) -> None:
        if artifact == "model.skops":
            import skops.io

            skops.io.dump(estimator, path)
        else:
            # Uncompressed, so the registry can memory-map the arrays instead of copying them.
            joblib.dump(estimator, path)

    return _write_version(model_dir, card_fields, artifact, dump, replace=replace)


def _write_version(
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
    fields = {"sklearn_version": sklearn.__version__, "created_at": datetime.now(UTC)}
    fields |= card_fields
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


def _write_traffic(model_path: Path, weights: dict[int, float]) -> None:
    split = TrafficSplit(weights=weights)
    staging = model_path / f".{TRAFFIC_FILE}.tmp-{os.getpid()}"
    staging.write_text(split.model_dump_json(indent=2) + "\n", encoding="utf-8")
    os.replace(staging, model_path / TRAFFIC_FILE)


# -- the bundled examples ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dataset:
    X: Any  # 2-D array, columns in `features` order
    y: Any
    features: list[FeatureSpec]
    target: TargetSpec


@dataclass(frozen=True)
class _Variant:
    version: int
    description: str
    make: Callable[[], Any]


@dataclass(frozen=True)
class _Example:
    name: str
    task: Task
    load: Callable[[], _Dataset]
    variants: tuple[_Variant, ...]
    input_kind: Literal["tabular", "image"] = "tabular"
    image_shape: tuple[int, int] | None = None
    traffic: dict[int, float] | None = None


def _measured(
    name: str, description: str, column: Any, *, minimum: float | None = None
) -> FeatureSpec:
    return FeatureSpec(
        name=name,
        dtype="float",
        description=description,
        minimum=minimum,
        observed_min=float(column.min()),
        observed_max=float(column.max()),
    )


def _iris() -> _Dataset:
    data = load_iris()
    columns = {
        "sepal_length": "Sepal length in cm",
        "sepal_width": "Sepal width in cm",
        "petal_length": "Petal length in cm",
        "petal_width": "Petal width in cm",
    }
    features = [
        _measured(name, description, data.data[:, i], minimum=0.0)
        for i, (name, description) in enumerate(columns.items())
    ]
    target = TargetSpec(name="species", description="Iris species")
    return _Dataset(data.data, data.target_names[data.target], features, target)


def _snake_case(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _cancer_description(raw: str) -> str:
    # The dataset gives each nucleus measurement three ways: mean, standard error and "worst".
    if raw.startswith("mean "):
        return f"{raw.removeprefix('mean ').capitalize()}: mean over the cell nuclei"
    if raw.endswith(" error"):
        return f"{raw.removesuffix(' error').capitalize()}: standard error over the cell nuclei"
    if raw.startswith("worst "):
        return f"{raw.removeprefix('worst ').capitalize()}: mean of the three largest values"
    return raw.capitalize()


def _breast_cancer() -> _Dataset:
    data = load_breast_cancer()
    features = [
        _measured(_snake_case(raw), _cancer_description(raw), data.data[:, i], minimum=0.0)
        for i, raw in enumerate(data.feature_names)
    ]
    target = TargetSpec(name="diagnosis", description="Tumour diagnosis")
    return _Dataset(data.data, data.target_names[data.target], features, target)


_DIABETES_DESCRIPTIONS = {
    "age": "Age in years",
    "sex": "Sex",
    "bmi": "Body mass index",
    "bp": "Average blood pressure",
    "s1": "Total serum cholesterol (tc)",
    "s2": "Low-density lipoproteins (ldl)",
    "s3": "High-density lipoproteins (hdl)",
    "s4": "Total cholesterol / HDL (tch)",
    "s5": "Log of serum triglycerides level (ltg)",
    "s6": "Blood sugar level (glu)",
}


def _diabetes() -> _Dataset:
    data = load_diabetes()
    features = [
        _measured(name, f"{_DIABETES_DESCRIPTIONS.get(name, name)} (standardised)", data.data[:, i])
        for i, name in enumerate(data.feature_names)
    ]
    target = TargetSpec(
        name="disease_progression",
        description="Quantitative measure of disease progression one year after baseline",
    )
    return _Dataset(data.data, data.target, features, target)


def _digits() -> _Dataset:
    data = load_digits()
    height, width = data.images.shape[1:]
    features = [
        FeatureSpec(
            name=f"pixel_{row}_{col}",
            dtype="int",
            description=f"Ink intensity 0–16 at row {row}, column {col}",
            minimum=0,
            maximum=16,
            observed_min=float(data.data[:, row * width + col].min()),
            observed_max=float(data.data[:, row * width + col].max()),
        )
        for row in range(height)
        for col in range(width)
    ]
    target = TargetSpec(name="digit", description="Handwritten digit 0–9")
    return _Dataset(data.data, data.target, features, target)


_EXAMPLES: dict[str, _Example] = {
    example.name: example
    for example in (
        _Example(
            name="iris",
            task="classification",
            load=_iris,
            variants=(
                _Variant(
                    1,
                    "Iris species from four flower measurements (logistic regression).",
                    lambda: LogisticRegression(max_iter=1000),
                ),
                _Variant(
                    2,
                    "Iris species from four flower measurements "
                    "(standardised, more regularised logistic regression; a 10% canary).",
                    lambda: make_pipeline(
                        StandardScaler(), LogisticRegression(C=0.5, max_iter=1000)
                    ),
                ),
            ),
            traffic={1: 90, 2: 10},
        ),
        _Example(
            name="breast-cancer",
            task="classification",
            load=_breast_cancer,
            variants=(
                _Variant(
                    1,
                    "Malignant or benign tumour from 30 cell-nucleus measurements (random forest).",
                    lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
                ),
            ),
        ),
        _Example(
            name="diabetes",
            task="regression",
            load=_diabetes,
            variants=(
                _Variant(
                    1,
                    "Diabetes progression a year on from ten baseline measurements "
                    "(ridge regression).",
                    lambda: Ridge(alpha=0.1),
                ),
            ),
        ),
        _Example(
            name="digits",
            task="classification",
            load=_digits,
            variants=(
                _Variant(
                    1,
                    "Handwritten digit from an 8×8 greyscale image (logistic regression).",
                    lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                ),
            ),
            input_kind="image",
            image_shape=(8, 8),
        ),
    )
}


def train_examples(
    model_dir: Path, *, force: bool = False, only: list[str] | None = None
) -> list[str]:
    """Train the bundled example models into `model_dir` and say what was done, one line each.

    Versions already present are skipped unless `force`. Uses only datasets that ship inside
    scikit-learn, and a fixed seed, so the same versions come out every time.
    """
    names = list(_EXAMPLES) if only is None else only
    unknown = sorted(set(names) - set(_EXAMPLES))
    if unknown:
        raise ValueError(
            f"no bundled example named {', '.join(unknown)}; try {', '.join(_EXAMPLES)}"
        )
    report: list[str] = []
    for name in names:
        example = _EXAMPLES[name]
        dataset: _Dataset | None = None
        for variant in example.variants:
            label = f"{name} v{variant.version}"
            if not force and _version_present(model_dir / name / str(variant.version)):
                report.append(f"{label} already present, skipped")
                continue
            dataset = dataset or example.load()
            card = _train_variant(model_dir, example, variant, dataset)
            metrics = ", ".join(f"{metric} {value}" for metric, value in card.metrics.items())
            report.append(f"trained {label} ({metrics})")
        if example.traffic is not None:
            report.append(_ensure_traffic(model_dir / name, example.traffic, force=force))
    return report


def _version_present(version_dir: Path) -> bool:
    return (version_dir / CARD_FILE).is_file() and (version_dir / "model.joblib").is_file()


def _ensure_traffic(model_path: Path, weights: dict[int, float], *, force: bool) -> str:
    if not force and (model_path / TRAFFIC_FILE).exists():
        return f"{model_path.name} {TRAFFIC_FILE} already present, skipped"
    _write_traffic(model_path, weights)
    shares = ", ".join(f"v{version} {weight:g}%" for version, weight in weights.items())
    return f"wrote {model_path.name} {TRAFFIC_FILE} ({shares})"


def _train_variant(
    model_dir: Path, example: _Example, variant: _Variant, dataset: _Dataset
) -> ModelCard:
    classifying = example.task == "classification"
    X_train, X_test, y_train, y_test = train_test_split(
        dataset.X,
        dataset.y,
        test_size=0.25,
        random_state=0,
        stratify=dataset.y if classifying else None,
    )
    estimator = variant.make().fit(X_train, y_train)
    predicted = estimator.predict(X_test)
    target = dataset.target
    if classifying:
        target = target.model_copy(update={"classes": estimator.classes_.tolist()})
    fields: dict[str, Any] = {
        "name": example.name,
        "version": variant.version,
        "task": example.task,
        "description": variant.description,
        "input_kind": example.input_kind,
        "image_shape": example.image_shape,
        "features": dataset.features,
        "target": target,
        "metrics": _metrics(example.task, y_test, predicted),
        "example": [
            _plain(value, feature)
            for value, feature in zip(X_test[0], dataset.features, strict=True)
        ],
    }
    return write_version(model_dir, fields, estimator, replace=True)


def _metrics(task: Task, expected: Any, predicted: Any) -> dict[str, float]:
    if task == "classification":
        scores = {
            "accuracy": accuracy_score(expected, predicted),
            "f1_macro": f1_score(expected, predicted, average="macro"),
        }
    else:
        scores = {
            "r2": r2_score(expected, predicted),
            "mae": mean_absolute_error(expected, predicted),
        }
    return {metric: round(float(value), 4) for metric, value in scores.items()}


def _plain(value: Any, feature: FeatureSpec) -> FeatureValue:
    return round(float(value)) if feature.dtype == "int" else float(value)


# -- importing a user's estimator ----------------------------------------------------------------


class _UntrustedArtifact(ValueError):
    pass


def import_estimator(
    source: Path,
    model_dir: Path,
    *,
    name: str,
    version: int | None = None,
    description: str = "",
) -> ModelCard:
    """Add a fitted estimator file (.joblib, .pkl or .skops) to the store as `name` `version`.

    The card is written by introspecting the estimator: task, feature names, category features
    (from its encoders), classes. `version` defaults to one past the highest present; existing
    versions are refused, never overwritten. The new version is loaded back the way the registry
    will load it, and removed again if that fails.
    """
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ValueError(f"invalid model name {name!r}: it must match {MODEL_NAME_PATTERN}")
    artifact = _SOURCE_ARTIFACTS.get(source.suffix.lower())
    if artifact is None:
        raise ValueError(f"cannot import {source.name}: expected a .joblib, .pkl or .skops file")
    if not source.is_file():
        raise ValueError(f"cannot import {source}: no such file")
    model_path = model_dir / name
    if version is None:
        version = _next_version(model_path)
    if version < 1:
        raise ValueError(f"version must be 1 or more, not {version}")
    version_dir = model_path / str(version)
    if version_dir.exists():
        raise ValueError(f"{name} v{version} already exists; versions are never overwritten")

    estimator, trained_with = _load_source(source)
    fields = _describe_estimator(estimator)
    fields |= {
        "name": name,
        "version": version,
        "description": description,
        "sklearn_version": trained_with,
    }
    # The file is copied byte for byte: re-dumping could change what the user tested.
    card = _write_version(
        model_dir, fields, artifact, lambda path: shutil.copyfile(source, path), replace=False
    )
    try:
        loaded = load_version(
            version_dir, name=name, version=version, max_rows=10, trusted_types=[]
        )
        _probe(loaded)
    except (ArtifactRefused, ValueError) as exc:
        shutil.rmtree(version_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # leave no empty model folder behind
            model_path.rmdir()
        raise ValueError(f"{name} v{version} was not added: {exc}") from exc
    return card


def _next_version(model_path: Path) -> int:
    if not model_path.is_dir():
        return 1
    present = [int(p.name) for p in model_path.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(present, default=0) + 1


def _load_source(source: Path) -> tuple[Any, str]:
    """Load the user's file; return the estimator and the scikit-learn version that saved it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = _read_artifact(source)
        except _UntrustedArtifact:
            raise
        except Exception as exc:
            raise ValueError(f"cannot load {source.name}: {type(exc).__name__}: {exc}") from exc
    trained_with = sklearn.__version__
    for warning in caught:
        if isinstance(warning.message, InconsistentVersionWarning):
            trained_with = warning.message.original_sklearn_version
        else:
            logger.warning("loading %s: %s", source, warning.message)
    return estimator, trained_with


def _read_artifact(source: Path) -> Any:
    if source.suffix.lower() != ".skops":
        return joblib.load(source)
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=source)
    if untrusted:
        raise _UntrustedArtifact(
            f"refusing {source.name}: it names types that are not trusted by default "
            f"({', '.join(untrusted)}); only plain scikit-learn/numpy/scipy objects can be imported"
        )
    return skops.io.load(source, trusted=[])


def _describe_estimator(estimator: Any) -> dict[str, Any]:
    """The card fields that follow from the fitted estimator itself."""
    if not callable(getattr(estimator, "predict", None)):
        raise ValueError(f"{type(estimator).__name__} has no predict method")
    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise ValueError(f"the estimator is not fitted: {exc}") from None
    except TypeError as exc:
        raise ValueError(f"not a scikit-learn estimator: {exc}") from None
    task = _task_of(estimator)
    if _is_multi_output(estimator):
        raise ValueError("multi-output models are not supported: predict must return one value")
    names = _input_names(estimator)
    categories = _category_columns(estimator, names)
    features = [
        FeatureSpec(name=n, dtype="category", categories=categories[n])
        if n in categories
        else FeatureSpec(name=n, dtype="float")
        for n in names
    ]
    target = TargetSpec(classes=_classes(estimator)) if task == "classification" else TargetSpec()
    return {
        "task": task,
        "features": features,
        "target": target,
        "example": [f.categories[0] if f.categories else 0.0 for f in features],
    }


def _task_of(estimator: Any) -> Task:
    try:
        if is_classifier(estimator):
            return "classification"
        if is_regressor(estimator):
            return "regression"
    except AttributeError as exc:  # no scikit-learn tags: not built on BaseEstimator
        raise ValueError(f"not a scikit-learn estimator: {exc}") from None
    raise ValueError(
        f"{type(estimator).__name__} is neither a classifier nor a regressor; only those are served"
    )


def _final_step(estimator: Any) -> Any:
    while isinstance(estimator, Pipeline):
        estimator = estimator.steps[-1][1]
    return estimator


def _is_multi_output(estimator: Any) -> bool:
    final = _final_step(estimator)
    wrappers = (MultiOutputClassifier, MultiOutputRegressor, ClassifierChain, RegressorChain)
    if isinstance(final, wrappers) or getattr(final, "n_outputs_", 1) > 1:
        return True
    if isinstance(getattr(final, "classes_", None), list):  # one classes_ array per output
        return True
    coef: Any = getattr(final, "coef_", None)
    if coef is None or not is_regressor(final):  # classifiers' coef_ has a row per class
        return False
    return bool(np.ndim(coef) == 2 and np.shape(coef)[0] > 1)


def _input_names(estimator: Any) -> list[str]:
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        return [str(name) for name in names]
    count = getattr(estimator, "n_features_in_", None)
    if count is None:
        raise ValueError(
            "cannot tell the model's inputs: it has neither feature_names_in_ nor n_features_in_"
        )
    return [f"x{i}" for i in range(int(count))]


def _classes(estimator: Any) -> list[ClassLabel]:
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise ValueError("a classifier without classes_")
    # Ints and strings are kept; other labels (floats, bools) become the strings the registry
    # compares against, since a card only holds int or str labels.
    return [
        label if isinstance(label, str) or type(label) is int else str(label)
        for label in np.asarray(classes).tolist()
    ]


# Which inputs are categories: the model's input step is a ColumnTransformer (or a bare encoder)
# whose fitted OneHotEncoder/OrdinalEncoder knows each column's categories. Only the first step
# sees the raw columns, so later steps are not looked at.


def _category_columns(estimator: Any, names: list[str]) -> dict[str, list[str]]:
    first = estimator
    while isinstance(first, Pipeline):
        first = first.steps[0][1]
    found: dict[str, Any] = {}
    if isinstance(first, ColumnTransformer):
        for _, transformer, columns in first.transformers_:
            encoder = _encoder_in(transformer)
            selected = _selected_names(columns, names) if encoder is not None else None
            if encoder is not None and selected and len(selected) == len(encoder.categories_):
                found.update(zip(selected, encoder.categories_, strict=True))
    elif _is_encoder(first) and len(first.categories_) == len(names):
        found.update(zip(names, first.categories_, strict=True))
    labels = {column: _string_categories(values) for column, values in found.items()}
    return {column: values for column, values in labels.items() if values is not None}


def _is_encoder(step: Any) -> bool:
    return isinstance(step, OneHotEncoder | OrdinalEncoder) and hasattr(step, "categories_")


def _encoder_in(transformer: Any) -> Any:
    if isinstance(transformer, Pipeline):
        return next((s for _, s in transformer.steps if _is_encoder(s)), None)
    return transformer if _is_encoder(transformer) else None


def _selected_names(columns: Any, names: list[str]) -> list[str] | None:
    """A ColumnTransformer column selection as input feature names (None if not understood)."""
    if isinstance(columns, slice):
        bounds = (columns.start, columns.stop, columns.step)
        return names[columns] if all(b is None or isinstance(b, int) for b in bounds) else None
    selector = np.atleast_1d(np.asarray(columns))
    values = selector.tolist()
    if selector.dtype.kind == "b":
        return (
            [n for n, keep in zip(names, values, strict=True) if keep]
            if len(values) == len(names)
            else None
        )
    if selector.dtype.kind in "iu":
        in_range = all(-len(names) <= i < len(names) for i in values)
        return [names[i] for i in values] if in_range else None
    if all(isinstance(v, str) for v in values):
        return [str(v) for v in values]
    return None


def _string_categories(values: Any) -> list[str] | None:
    """The categories as strings, if they are strings; a missing-value category is left out
    (requests cannot send a missing value anyway)."""
    present = [
        v
        for v in np.asarray(values).tolist()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    if present and all(isinstance(v, str) for v in present):
        return [str(v) for v in present]
    return None


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

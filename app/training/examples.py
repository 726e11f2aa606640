"""The bundled examples (`modelport train`): models fitted on datasets that ship inside
scikit-learn, so no download is needed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.store.artifacts import CARD_FILE, TRAFFIC_FILE
from app.store.reference import reference_stats
from app.store.writer import Task, write_traffic, write_version
from app.training.tables import metrics_of
from schemas.cards import (
    Evaluation,
    FeatureSpec,
    FeatureValue,
    ModelCard,
    ModelSource,
    TargetSpec,
)

# -- the bundled examples ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dataset:
    X: Any  # 2-D array, columns in `features` order
    y: Any
    features: list[FeatureSpec]
    target: TargetSpec
    origin: str  # the scikit-learn loader it comes from


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
    return _Dataset(data.data, data.target_names[data.target], features, target, "load_iris")


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
    return _Dataset(
        data.data, data.target_names[data.target], features, target, "load_breast_cancer"
    )


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
    return _Dataset(data.data, data.target, features, target, "load_diabetes")


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
    return _Dataset(data.data, data.target, features, target, "load_digits")


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
    write_traffic(model_path, weights)
    shares = ", ".join(f"v{version} {weight:g}%" for version, weight in weights.items())
    return f"wrote {model_path.name} {TRAFFIC_FILE} ({shares})"


_TEST_SIZE = 0.25


def _train_variant(
    model_dir: Path, example: _Example, variant: _Variant, dataset: _Dataset
) -> ModelCard:
    classifying = example.task == "classification"
    X_train, X_test, y_train, y_test = train_test_split(
        dataset.X,
        dataset.y,
        test_size=_TEST_SIZE,
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
        # The training split's means: the baseline explanations measure contributions from.
        "features": [
            feature.model_copy(update={"observed_mean": float(column.mean())})
            for feature, column in zip(dataset.features, X_train.T, strict=True)
        ],
        "target": target,
        "metrics": metrics_of(example.task, y_test, predicted),
        "evaluation": Evaluation(
            data=f"sklearn.datasets.{dataset.origin}",
            rows=len(y_test),
            held_out=True,
            split=f"train_test_split(test_size={_TEST_SIZE}, random_state=0"
            + (", stratified by class)" if classifying else ")"),
        ),
        "source": ModelSource(kind="bundled", location=f"sklearn.datasets.{dataset.origin}"),
        "reference": reference_stats(
            {feature.name: X_train[:, i] for i, feature in enumerate(dataset.features)},
            dataset.features,
        ),
        "example": [
            _plain(value, feature)
            for value, feature in zip(X_test[0], dataset.features, strict=True)
        ],
    }
    return write_version(model_dir, fields, estimator, replace=True)


def _plain(value: Any, feature: FeatureSpec) -> FeatureValue:
    return round(float(value)) if feature.dtype == "int" else float(value)

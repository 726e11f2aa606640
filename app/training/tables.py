"""`modelport import --data`: what a table of real rows adds to a card — each feature's type
(integers stay integers), observed range and categories, an example that is a real row, the
reference statistics, and metrics on the rows the command names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as dtypes
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

from app.errors import InferenceError, InvalidInput
from app.serving.model import LoadedModel, run
from app.store.reference import reference_stats
from app.store.writer import Task
from schemas.cards import Evaluation, FeatureSpec, FeatureValue, ReferenceStats

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (header row; pandas infers each column's type) or Parquet file (types kept)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"cannot read {path.name}: --data takes a .csv or .parquet file")
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        import pyarrow.parquet as pq

        frame: pd.DataFrame = pq.read_table(path).to_pandas()
        return frame
    except FileNotFoundError:
        raise ValueError(f"cannot read {path}: no such file") from None
    except Exception as exc:
        raise ValueError(f"cannot read {path.name}: {type(exc).__name__}: {exc}") from exc


@dataclass
class TableFacts:
    """What the table says, ready for the card; `rows`/`targets` are the rows to score."""

    features: list[FeatureSpec]
    example: list[FeatureValue] | None
    reference: ReferenceStats | None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    targets: list[Any] = field(default_factory=list)
    evaluation: Evaluation | None = None
    notes: list[str] = field(default_factory=list)


def study_table(
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    *,
    data_name: str,
    target: str | None,
    test_size: float | None,
    seed: int,
    typed: frozenset[str] = frozenset(),
) -> TableFacts:
    """Refine `features` from `frame`. Features named in `typed` keep their dtype (an MLflow
    signature gave it); the others take the column's. With `test_size`, the rows are split as
    `train_test_split(test_size, random_state=seed)` would: ranges and reference statistics
    come from the training part and metrics from the held-out part; without it, all rows serve
    both (and the card says so)."""
    names = [feature.name for feature in features]
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(
            f"{data_name} has no column for {', '.join(missing)} "
            f"(its columns: {', '.join(map(str, frame.columns))})"
        )
    if target is not None and target not in frame.columns:
        raise ValueError(f"{data_name} has no target column {target!r}")
    if test_size is not None and target is None:
        raise ValueError("--test-size splits off rows to score: it needs --target")
    if len(frame) == 0:
        raise ValueError(f"{data_name} has no rows")
    notes: list[str] = []
    ignored = [str(c) for c in frame.columns if c not in names and c != target]
    if ignored:
        notes.append(f"columns not used by the model, ignored: {', '.join(ignored)}")
    if test_size is None:
        fitted, scored = frame, frame
    else:
        fitted, scored = train_test_split(frame, test_size=test_size, random_state=seed)
    refined = [
        _refine(feature, fitted[feature.name], feature.name in typed) for feature in features
    ]
    for feature in refined:
        unknown = _unknown_categories(feature, frame[feature.name])
        if unknown:
            notes.append(
                f"{feature.name}: values the model's encoder does not know, left out of the "
                f"card's categories: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
            )
    valid = _valid_rows(scored, refined)
    rows = [_row(record, refined) for record in scored[names][valid].itertuples(index=False)]
    facts = TableFacts(
        features=refined,
        example=list(rows[0]) if rows else None,
        reference=reference_stats(
            {feature.name: _column_values(fitted[feature.name]) for feature in refined}, refined
        ),
        notes=notes,
    )
    if target is None:
        return facts
    has_target = scored[target].notna().to_numpy()
    keep = valid & has_target
    if not keep.any():
        raise ValueError(
            f"no row of {data_name} has every feature and the target: nothing to score"
        )
    skipped = len(scored) - int(keep.sum())
    if skipped:
        notes.append(f"{skipped} rows with a missing or unknown value were not scored")
    facts.rows = [_row(record, refined) for record in scored[names][keep].itertuples(index=False)]
    facts.targets = scored[target][keep].tolist()
    facts.evaluation = Evaluation(
        data=data_name,
        rows=len(facts.rows),
        held_out=test_size is not None,
        split="all rows (no split: the model may have seen them in training)"
        if test_size is None
        else f"train_test_split(test_size={test_size}, random_state={seed}): the test part",
    )
    return facts


def _refine(feature: FeatureSpec, column: pd.Series[Any], typed: bool) -> FeatureSpec:
    if feature.dtype == "category":
        return feature
    if not typed and not (dtypes.is_numeric_dtype(column) or dtypes.is_bool_dtype(column)):
        present = sorted({str(value) for value in column.dropna().tolist()})
        if not present:
            raise ValueError(f"column {feature.name} holds no value")
        return feature.model_copy(update={"dtype": "category", "categories": present})
    if not dtypes.is_numeric_dtype(column) and not dtypes.is_bool_dtype(column):
        raise ValueError(f"column {feature.name} is not numeric, but the model's signature is")
    numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = numbers[np.isfinite(numbers)]
    dtype = feature.dtype
    if not typed:
        integral = dtypes.is_integer_dtype(column) or dtypes.is_bool_dtype(column)
        dtype = "int" if integral else "float"
    update: dict[str, Any] = {"dtype": dtype}
    if finite.size:
        update |= {"observed_min": float(finite.min()), "observed_max": float(finite.max())}
    return FeatureSpec.model_validate(feature.model_dump() | update)


def _unknown_categories(feature: FeatureSpec, column: pd.Series[Any]) -> list[str]:
    if feature.dtype != "category":
        return []
    known = set(feature.categories or [])
    return sorted({str(v) for v in column.dropna().tolist()} - known)


def _valid_rows(frame: pd.DataFrame, features: list[FeatureSpec]) -> Any:
    """A boolean mask of the rows the card's schema accepts: no missing value, known
    categories, whole numbers for int features."""
    keep = np.ones(len(frame), dtype=bool)
    for feature in features:
        column = frame[feature.name]
        keep &= column.notna().to_numpy()
        if feature.dtype == "category":
            keep &= column.astype(str).isin(feature.categories or []).to_numpy()
        elif feature.dtype == "int":
            numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
            keep &= np.isfinite(numbers) & (numbers == np.floor(numbers))
        else:
            keep &= np.isfinite(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return keep


def _row(record: tuple[Any, ...], features: list[FeatureSpec]) -> tuple[FeatureValue, ...]:
    return tuple(_plain(value, feature) for value, feature in zip(record, features, strict=True))


def _plain(value: Any, feature: FeatureSpec) -> FeatureValue:
    if feature.dtype == "category":
        return str(value)
    return int(value) if feature.dtype == "int" else float(value)


def _column_values(column: pd.Series[Any]) -> Any:
    if dtypes.is_numeric_dtype(column) or dtypes.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return [None if pd.isna(value) else str(value) for value in column.tolist()]


def score(model: LoadedModel, rows: list[tuple[Any, ...]], targets: list[Any]) -> dict[str, float]:
    """Metrics of the model's answers to `rows` (through the serving path, exactly as the
    server will answer them) against `targets`."""
    try:
        checked = model.inputs.validate_rows(rows, loc=("data",))
        predicted = run(model, checked, observe=False).predictions
    except (InferenceError, InvalidInput) as exc:
        raise ValueError(f"the model cannot predict the table's rows: {exc.detail}") from exc
    return metrics_of(model.card.task, *_comparable(targets, predicted))


def metrics_of(task: Task, expected: Any, predicted: Any) -> dict[str, float]:
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


def _comparable(targets: list[Any], predicted: Any) -> tuple[Any, Any]:
    """Targets and predictions of one type: the targets as the predictions' numbers where
    both are numbers (a CSV's 1 against a model's 1.0), else both as text."""
    expected = np.asarray(targets)
    if expected.dtype.kind in "biuf" and predicted.dtype.kind in "biuf":
        return expected.astype(predicted.dtype), predicted
    return expected.astype(str), np.asarray(predicted).astype(str)

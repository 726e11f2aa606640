"""`modelport import --data`: the card measured from real rows (CSV and Parquet), and the artifact
written as skops where it round-trips, joblib (said so) where it does not."""

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from app.cli import main
from app.serving.model import predict
from app.serving.registry import scan_store
from app.store.artifacts import sha256_of
from app.store.reference import bin_counts
from app.training.importer import ImportOptions, import_estimator
from schemas.predict import ClassPrediction
from tests.conftest import churn_frame, fit_churn_pipeline, fit_pets_pipeline, pets_frame


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The issue's churn pipeline, fitted on the training part of its table (saved as CSV and
    Parquet), the way a user would have split it."""
    folder = tmp_path_factory.mktemp("churn")
    frame = churn_frame()
    train, test = train_test_split(frame, test_size=0.25, random_state=0)
    pipeline = fit_churn_pipeline(train)
    joblib.dump(pipeline, folder / "churn.joblib")
    frame.to_csv(folder / "churn.csv", index=False)
    frame.to_parquet(folder / "churn.parquet")
    return {"folder": folder, "frame": frame, "train": train, "test": test, "pipeline": pipeline}


def test_csv_keeps_integers_and_measures_ranges_example_reference_and_metrics(
    churn: dict[str, Any], tmp_path: Path
) -> None:
    options = ImportOptions(data=churn["folder"] / "churn.csv", target="churned", test_size=0.25)
    imported = import_estimator(
        churn["folder"] / "churn.joblib", tmp_path, name="churn", options=options
    )
    card, train, test = imported.card, churn["train"], churn["test"]
    features = {f.name: f for f in card.features}
    assert [f.name for f in card.features] == [
        "tenure_months",
        "monthly_charges",
        "contract",
        "payment_method",
    ]
    assert features["tenure_months"].dtype == "int"
    assert features["monthly_charges"].dtype == "float"
    assert (features["tenure_months"].observed_min, features["tenure_months"].observed_max) == (
        train["tenure_months"].min(),
        train["tenure_months"].max(),
    )
    assert features["contract"].categories == ["month-to-month", "one-year", "two-year"]
    assert card.target.name == "churned"
    # A real row of the held-out part, with its integer kept an integer.
    example = card.example
    assert example is not None and type(example[0]) is int
    rows = test.drop(columns="churned").itertuples(index=False)
    assert tuple(example) in {tuple(row) for row in rows}
    # Metrics on the split the command names: the rows the pipeline did not see.
    assert card.evaluation is not None and card.evaluation.held_out
    assert card.evaluation.rows == len(test) and "test_size=0.25" in card.evaluation.split
    expected = accuracy_score(
        test["churned"], churn["pipeline"].predict(test.drop(columns="churned"))
    )
    assert card.metrics["accuracy"] == round(expected, 4)
    # Reference statistics of the training part, bins as bin_counts defines them.
    reference = card.reference
    assert reference is not None and reference.rows == len(train)
    tenure = reference.features["tenure_months"]
    assert tenure.kind == "numeric" and tenure.edges is not None and len(tenure.edges) <= 11
    counts = bin_counts(tenure, train["tenure_months"].to_numpy())
    assert [c / len(train) for c in counts] == pytest.approx(tenure.fractions)
    contract = reference.features["contract"]
    assert contract.categories == features["contract"].categories
    assert contract.fractions[-1] == 0.0  # no value outside the categories
    assert sum(contract.fractions) == pytest.approx(1.0)
    # HistGradientBoosting holds a type skops does not trust by default: joblib, said so.
    assert card.artifact == "model.joblib"
    assert card.sha256 == sha256_of(churn["folder"] / "churn.joblib")
    assert any("TreePredictor" in note for note in imported.notes)
    assert card.source is not None and "TreePredictor" in (card.source.note or "")


def test_parquet_gives_the_csv_card_and_all_rows_are_said_to_be_all_rows(
    churn: dict[str, Any], tmp_path: Path
) -> None:
    cards = [
        import_estimator(
            churn["folder"] / "churn.joblib",
            tmp_path / suffix,
            name="churn",
            options=ImportOptions(data=churn["folder"] / f"churn.{suffix}", target="churned"),
        ).card
        for suffix in ("csv", "parquet")
    ]
    csv_card, parquet_card = cards
    assert parquet_card.features == csv_card.features
    assert parquet_card.example == csv_card.example
    assert parquet_card.metrics == csv_card.metrics
    assert parquet_card.reference == csv_card.reference
    evaluation = parquet_card.evaluation
    assert evaluation is not None and not evaluation.held_out
    assert evaluation.rows == len(churn["frame"]) and evaluation.split.startswith("all rows")


def test_the_imported_card_serves_its_example(churn: dict[str, Any], tmp_path: Path) -> None:
    options = ImportOptions(
        data=churn["folder"] / "churn.parquet", target="churned", test_size=0.25
    )
    import_estimator(churn["folder"] / "churn.joblib", tmp_path, name="churn", options=options)
    snapshot = scan_store(tmp_path, max_rows=10, trusted_types=[])
    assert snapshot.problems == {}
    model = snapshot.entries["churn"].versions[1]
    assert model.example_response is not None
    frame = churn["test"].drop(columns="churned").head(3)
    rows = model.inputs.validate_rows([tuple(row) for row in frame.itertuples(index=False)])
    predictions = predict(model, rows, observe=False).predictions
    served = [p.label for p in predictions if isinstance(p, ClassPrediction)]
    assert served == churn["pipeline"].predict(frame).tolist()


def test_skops_is_written_where_the_estimator_round_trips(tmp_path: Path) -> None:
    source = tmp_path / "pets.joblib"
    pipeline = fit_pets_pipeline()
    joblib.dump(pipeline, source)
    card = import_estimator(source, tmp_path / "models", name="pets").card
    assert card.artifact == "model.skops"
    assert card.source is not None and card.source.serialization == "joblib"
    assert card.source.sha256 == sha256_of(source) != card.sha256
    model = (
        scan_store(tmp_path / "models", max_rows=10, trusted_types=[]).entries["pets"].versions[1]
    )
    frame, _ = pets_frame()
    assert (
        model.estimator.predict_proba(frame.head(20)).tolist()
        == pipeline.predict_proba(frame.head(20)).tolist()
    )
    kept = import_estimator(
        source, tmp_path / "models", name="pets", options=ImportOptions(keep_format=True)
    )
    assert kept.card.artifact == "model.joblib" and kept.card.sha256 == sha256_of(source)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"data": "churn.csv", "target": "nope"}, "no target column 'nope'"),
        ({"data": "churn.csv", "test_size": 0.25}, "needs --target"),
        ({"target": "churned"}, "give --data too"),
        ({"data": "churn.csv", "test_size": 1.5, "target": "churned"}, "between 0 and 1"),
        ({"data": "churn.json"}, "a .csv or .parquet file"),
        ({"data": "partial.csv"}, "no column for payment_method"),
    ],
    ids=[
        "unknown-target",
        "split-without-target",
        "target-without-data",
        "bad-split",
        "json",
        "missing-column",
    ],
)
def test_data_mistakes_are_named(
    churn: dict[str, Any], tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    churn["frame"].drop(columns="payment_method").to_csv(tmp_path / "partial.csv", index=False)
    (tmp_path / "churn.json").write_text("{}")
    if "data" in options:
        folder = churn["folder"] if options["data"] == "churn.csv" else tmp_path
        options["data"] = folder / options["data"]
    with pytest.raises(ValueError, match=message):
        import_estimator(
            churn["folder"] / "churn.joblib",
            tmp_path / "models",
            name="churn",
            options=ImportOptions(**options),
        )
    assert not (tmp_path / "models" / "churn").exists()


def test_cli_reports_the_split_metrics_and_why_joblib_was_kept(
    churn: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = churn["folder"]
    argv = ["import", str(folder / "churn.joblib"), "--name", "churn", "--model-dir", str(tmp_path)]
    argv += ["--data", str(folder / "churn.csv"), "--target", "churned", "--test-size", "0.25"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tenure_months:int, monthly_charges:float, contract:category" in out
    assert (
        "metrics on 100 rows of churn.csv, train_test_split(test_size=0.25, random_state=0)" in out
    )
    assert "note: artifact kept as joblib: skops does not trust" in out


def test_rows_with_a_missing_value_are_neither_the_example_nor_scored(tmp_path: Path) -> None:
    """Integer columns read from a table stay integers; a float column with a missing value
    stays float, and the row with it is neither the example nor scored (said so)."""
    frame, y = pets_frame()
    frame = frame.assign(weight=frame["weight"].where(frame.index != 0, np.nan), target=y)
    source = tmp_path / "pets.joblib"
    joblib.dump(fit_pets_pipeline(), source)
    frame.to_csv(tmp_path / "pets.csv", index=False)
    imported = import_estimator(
        source,
        tmp_path / "models",
        name="pets",
        options=ImportOptions(data=tmp_path / "pets.csv", target="target"),
    )
    card = imported.card
    assert [f.dtype for f in card.features] == ["category", "float", "int"]
    assert card.evaluation is not None and card.evaluation.rows == len(frame) - 1
    assert card.example == [
        str(frame["colour"][1]),
        float(frame["weight"][1]),
        int(frame["age"][1]),
    ]
    assert any("1 rows with a missing" in note for note in imported.notes)
    assert pd.isna(frame["weight"][0])

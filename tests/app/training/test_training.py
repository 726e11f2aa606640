"""`modelport train` and `modelport import`: what they write is what the registry serves."""

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from app.cli import main
from app.serving.registry import scan_store
from app.store.artifacts import sha256_of
from app.training.examples import train_examples
from app.training.importer import ImportOptions, import_estimator
from schemas.cards import ModelCard
from tests.conftest import fit_pets_pipeline, flower_data


def _card(version_dir: Path) -> ModelCard:
    return ModelCard.model_validate_json((version_dir / "card.json").read_bytes())


def test_train_builds_iris_with_a_canary_split_and_skips_when_present(tmp_path: Path) -> None:
    store = tmp_path / "models"
    assert main(["train", "--model-dir", str(store), "--only", "iris"]) == 0
    snapshot = scan_store(store, max_rows=10, trusted_types=[])
    assert snapshot.problems == {}
    iris = snapshot.entries["iris"]
    assert sorted(iris.versions) == [1, 2]
    assert iris.traffic is not None and iris.traffic.weights == {1: 90.0, 2: 10.0}
    card = iris.versions[1].card
    assert [f.name for f in card.features] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert card.target.classes == ["setosa", "versicolor", "virginica"]
    assert card.metrics["accuracy"] > 0.9
    assert card.sha256 == sha256_of(store / "iris" / "1" / "model.joblib")
    before = (store / "iris" / "1" / "card.json").read_bytes()
    lines = train_examples(store, only=["iris"])
    assert all("skipped" in line or "present" in line for line in lines), lines
    assert (store / "iris" / "1" / "card.json").read_bytes() == before


def test_train_refuses_an_unknown_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--model-dir", str(tmp_path), "--only", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_import_introspects_a_dataframe_pipeline_with_a_category(tmp_path: Path) -> None:
    source = tmp_path / "pets.joblib"
    joblib.dump(fit_pets_pipeline(), source)
    card = import_estimator(source, tmp_path / "models", name="pets").card
    assert card.version == 1 and card.task == "classification"
    features = {f.name: f for f in card.features}
    assert features["colour"].dtype == "category"
    assert features["colour"].categories == ["black", "ginger", "white"]
    assert features["weight"].dtype == "float"
    assert card.target.classes == ["cat", "dog"]
    assert import_estimator(source, tmp_path / "models", name="pets").card.version == 2


def test_import_refuses_bad_names_unfitted_models_and_existing_versions(tmp_path: Path) -> None:
    x, y = flower_data()
    fitted, unfitted = tmp_path / "fitted.joblib", tmp_path / "unfitted.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), fitted)
    joblib.dump(LogisticRegression(), unfitted)
    store = tmp_path / "models"
    with pytest.raises(ValueError, match="name"):
        import_estimator(fitted, store, name="../escape")
    with pytest.raises(ValueError, match="not fitted"):
        import_estimator(unfitted, store, name="flowers")
    import_estimator(fitted, store, name="flowers", options=ImportOptions(version=3))
    with pytest.raises(ValueError, match="exists"):
        import_estimator(fitted, store, name="flowers", options=ImportOptions(version=3))
    loaded = scan_store(store, max_rows=10, trusted_types=[]).entries["flowers"].versions[3]
    assert [f.name for f in loaded.card.features] == ["x0", "x1", "x2", "x3"]
    assert loaded.estimator.predict(np.asarray(x[:3])).tolist() == y[:3].tolist()


def test_import_cli_reports_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.joblib"
    assert main(["import", str(missing), "--name", "x", "--model-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelport import:") and "Traceback" not in err

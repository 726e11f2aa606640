"""`modelport import` of MLflow models written by a real mlflow(-skinny) (tests/app/training/
mlflow_writer.py, in a subprocess): model directories, and models:/ and runs:/ URIs resolved
through a file store, and through a SQLite store where SQLAlchemy is installed."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import sklearn

from app.cli import main
from app.serving.model import predict
from app.serving.registry import scan_store
from app.store.artifacts import sha256_of
from app.training.importer import ImportOptions, import_estimator
from app.training.mlflow_stores import resolve_uri
from schemas.predict import ClassPrediction
from tests.conftest import MLFLOW_SQLITE, pets_frame


def needs_sqlalchemy() -> None:
    """MLflow writes SQLite stores through SQLAlchemy (and alembic): skipped without them,
    except under CI=true."""
    if not MLFLOW_SQLITE:
        if os.environ.get("CI") == "true":
            pytest.fail("SQLAlchemy is missing: MLflow needs it to write a SQLite tracking store")
        pytest.skip("SQLAlchemy is not installed: MLflow cannot write a SQLite tracking store")


@pytest.fixture
def written(mlflow_models: dict[str, Any]) -> dict[str, Any]:
    return mlflow_models


def served_labels(store: Path, name: str, rows: list[tuple[Any, ...]]) -> list[Any]:
    snapshot = scan_store(store, max_rows=50, trusted_types=[])
    assert snapshot.problems == {}
    model = snapshot.entries[name].versions[1]
    return [
        p.label
        for p in predict(model, model.inputs.validate_rows(rows), observe=False).predictions
        if isinstance(p, ClassPrediction)
    ]


def test_a_saved_model_directory_fills_the_card_from_mlmodel(
    written: dict[str, Any], tmp_path: Path
) -> None:
    directory = written["folder"] / "saved-pickle"
    card = import_estimator(directory, tmp_path, name="flowers").card
    assert [(f.name, f.dtype) for f in card.features] == [(f"x{i}", "float") for i in range(4)]
    example = json.loads((directory / "input_example.json").read_text())[0]
    assert card.example == example
    assert card.sklearn_version == sklearn.__version__
    assert card.python_version is not None and card.numpy_version and card.scipy_version
    assert card.source is not None and card.source.kind == "mlflow"
    assert card.source.serialization == "pickle"
    assert card.source.sha256 == sha256_of(directory / "model.pkl")
    assert card.artifact == "model.skops"  # a logistic regression round-trips through skops
    assert served_labels(tmp_path, "flowers", [tuple(example)]) == ["setosa"]


def test_the_mlmodel_file_of_a_skops_model_keeps_skops_and_signature_types(
    written: dict[str, Any], tmp_path: Path
) -> None:
    directory = written["folder"] / "saved-skops"
    card = import_estimator(directory / "MLmodel", tmp_path, name="pets").card
    assert [(f.name, f.dtype) for f in card.features] == [
        ("colour", "category"),
        ("weight", "float"),
        ("age", "int"),  # the signature's long: integers stay integers
    ]
    assert card.features[0].categories == ["black", "ginger", "white"]
    assert card.artifact == "model.skops" and card.sha256 == sha256_of(directory / "model.skops")
    example = card.example
    assert example is not None and type(example[2]) is int
    frame, _ = pets_frame()
    assert example == [frame["colour"][0], frame["weight"][0], int(frame["age"][0])]


def test_a_registered_model_in_a_file_store(written: dict[str, Any], tmp_path: Path) -> None:
    store = (written["folder"] / "mlruns").as_uri()
    options = ImportOptions(tracking_uri=store)
    card = import_estimator("models:/pets/1", tmp_path, name="pets", options=options).card
    source = card.source
    assert source is not None and source.uri == "models:/pets/1"
    assert (source.registered_model, source.registered_version) == ("pets", 1)
    assert source.run_id == written["file"]["run_id"] and source.serialization == "cloudpickle"
    assert card.description == "Cat or dog, from colour, weight, age"
    frame, y = pets_frame()
    rows = [tuple(row) for row in frame.head(5).itertuples(index=False)]
    assert served_labels(tmp_path, "pets", rows) == y[:5].tolist()


@pytest.mark.parametrize(
    "uri",
    ["models:/pets@champion", "models:/pets/latest", "runs:/{run_id}/model", "models:/{model_id}"],
)
def test_every_uri_form_names_the_same_model(written: dict[str, Any], uri: str) -> None:
    store = str(written["folder"] / "mlruns")
    expected, _ = resolve_uri("models:/pets/1", store)
    found, facts = resolve_uri(uri.format(**written["file"]), store)
    assert found.resolve() == expected.resolve()
    assert facts["run_id"] == written["file"]["run_id"]


def test_the_cli_reads_mlflow_tracking_uri(
    written: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(written["folder"] / "mlruns"))
    frame, y = pets_frame()
    frame.assign(kind=y).to_parquet(tmp_path / "pets.parquet")
    argv = [
        "import",
        "models:/pets@champion",
        "--name",
        "pets",
        "--model-dir",
        str(tmp_path / "models"),
    ]
    assert main([*argv, "--data", str(tmp_path / "pets.parquet"), "--target", "kind"]) == 0
    out = capsys.readouterr().out
    assert "imported pets v1 (classification; colour:category, weight:float, age:int)" in out
    assert "metrics on 120 rows of pets.parquet, all rows" in out


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("models:/nope/1", "no registered model 'nope'"),
        ("models:/pets/7", "has no version 7"),
        ("models:/pets@gone", "no alias 'gone'"),
        ("runs:/0123/model", "no run 0123"),
        ("models:/pets/Production", "expected models:/<name>/<version>"),
    ],
)
def test_uris_that_name_nothing_are_refused(
    written: dict[str, Any], uri: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_uri(uri, str(written["folder"] / "mlruns"))


def test_a_model_without_the_sklearn_flavour_is_refused(
    written: dict[str, Any], tmp_path: Path
) -> None:
    directory = tmp_path / "pyfunc"
    shutil.copytree(written["folder"] / "saved-pickle", directory)
    mlmodel = (directory / "MLmodel").read_text()
    (directory / "MLmodel").write_text(mlmodel.replace("  sklearn:", "  other:"))
    with pytest.raises(ValueError, match="without the sklearn flavour"):
        import_estimator(directory, tmp_path / "models", name="pyfunc")


def test_a_registered_model_in_a_sqlite_store(written: dict[str, Any], tmp_path: Path) -> None:
    needs_sqlalchemy()
    database = written["folder"] / "mlflow.db"
    options = ImportOptions(tracking_uri=f"sqlite:///{database}")
    card = import_estimator("models:/pets@champion", tmp_path, name="pets", options=options).card
    source = card.source
    assert source is not None and source.run_id == written["sqlite"]["run_id"]
    assert (source.registered_model, source.registered_version) == ("pets", 1)
    assert card.description == "Cat or dog, from colour, weight, age"
    found, _ = resolve_uri(f"runs:/{written['sqlite']['run_id']}/model", f"sqlite:///{database}")
    assert (found / "MLmodel").is_file()


def test_a_text_column_with_no_known_values_asks_for_data(
    written: dict[str, Any], tmp_path: Path
) -> None:
    """A signature's string column needs its values from an encoder or from --data."""
    directory = tmp_path / "text"
    shutil.copytree(written["folder"] / "saved-skops", directory)
    mlmodel = (directory / "MLmodel").read_text()
    (directory / "MLmodel").write_text(mlmodel.replace('"type": "double"', '"type": "string"'))
    with pytest.raises(ValueError, match="weight hold text.*give --data"):
        import_estimator(directory, tmp_path / "models", name="text")

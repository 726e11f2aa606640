"""Version safety with a real artifact from an older scikit-learn (saved in .venv-oldsklearn):
`import` refuses it, or takes it with MODELPORT_VERSION_MISMATCH=warn; the registry refuses it
as a readiness problem naming both versions, or serves it and says so in the log, the card
endpoint and a metric. InconsistentVersionWarning never goes unseen, whatever the card says."""

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
import sklearn
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.serving.registry import ModelRegistry
from app.store.artifacts import sha256_of
from app.training.importer import ImportOptions, import_estimator

HERE = Path(__file__).resolve().parent


def old_python() -> Path:
    """The older scikit-learn's interpreter: `make test` builds .venv-oldsklearn and passes
    OLDSKLEARN_PYTHON. Skipped without it, except under CI=true."""
    configured = os.environ.get("OLDSKLEARN_PYTHON")
    python = Path(configured) if configured else HERE.parents[2] / ".venv-oldsklearn/bin/python"
    if not python.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the older scikit-learn is missing: `make test` builds .venv-oldsklearn")
        pytest.skip("no .venv-oldsklearn (run `make test`, which builds it)")
    return python


@pytest.fixture(scope="module")
def old_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A classifier saved by the older scikit-learn, and that version."""
    path = tmp_path_factory.mktemp("old") / "old.joblib"
    run = subprocess.run(
        [str(old_python()), str(HERE / "old_sklearn_model.py"), str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    made_with = run.stdout.strip()
    assert made_with.split(".")[:2] != sklearn.__version__.split(".")[:2]
    return path, made_with


@pytest.fixture(scope="module")
def warned_store(old_artifact: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the old artifact, imported with MODELPORT_VERSION_MISMATCH=warn."""
    store = tmp_path_factory.mktemp("store") / "models"
    imported = import_estimator(
        old_artifact[0], store, name="old", options=ImportOptions(version_policy="warn")
    )
    assert imported.card.sklearn_version == old_artifact[1]
    return store


def test_import_refuses_an_older_scikit_learn_naming_both_versions(
    old_artifact: tuple[Path, str], tmp_path: Path
) -> None:
    path, made_with = old_artifact
    with pytest.raises(ValueError) as refused:
        import_estimator(path, tmp_path / "models", name="old")
    message = str(refused.value)
    assert made_with in message and sklearn.__version__ in message
    assert "MODELPORT_VERSION_MISMATCH=warn" in message
    assert not (tmp_path / "models" / "old").exists()


def test_import_with_warn_keeps_the_artifact_byte_for_byte(
    old_artifact: tuple[Path, str], warned_store: Path
) -> None:
    path, made_with = old_artifact
    card = json.loads((warned_store / "old" / "1" / "card.json").read_text())
    assert card["artifact"] == "model.joblib"  # re-saving as skops would hide the old version
    assert card["sha256"] == sha256_of(path) == card["source"]["sha256"]
    assert card["sklearn_version"] == made_with
    assert made_with in card["source"]["note"]


def test_registry_refuses_the_version_as_a_readiness_problem(
    old_artifact: tuple[Path, str], warned_store: Path
) -> None:
    registry = ModelRegistry(warned_store, max_rows=10)
    snapshot = registry.load()
    reason = snapshot.problems["old/1"]
    assert old_artifact[1] in reason and sklearn.__version__ in reason
    assert not registry.ready
    app = create_app(Settings(model_dir=warned_store))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert old_artifact[1] in json.dumps(ready.json())
        metrics = client.get("/metrics").text
    assert 'modelport_model_version_mismatch{model="old",version="1"} 1.0' in metrics
    assert 'modelport_model_loaded{model="old",version="1"} 0.0' in metrics


def test_warn_serves_it_and_says_so_in_the_log_the_card_endpoint_and_a_metric(
    old_artifact: tuple[Path, str], warned_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made_with = old_artifact[1]
    app = create_app(Settings(model_dir=warned_store, version_mismatch="warn"))
    with caplog.at_level(logging.WARNING, logger="modelport.registry"), TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        info = client.get("/models/old")
        assert info.status_code == 200
        body = info.json()
        predicted = client.post("/models/old/predict", json={"instances": [[2.1, 1.9]]})
        metrics = client.get("/metrics").text
    assert made_with in body["version_mismatches"]["1"]
    assert any("InconsistentVersionWarning" in text for text in body["load_warnings"]["1"])
    assert body["runtime"]["sklearn_version"] == sklearn.__version__
    assert body["card"]["sklearn_version"] == made_with
    assert predicted.status_code == 200 and predicted.json()["predictions"][0]["label"] == "high"
    assert 'modelport_model_version_mismatch{model="old",version="1"} 1.0' in metrics
    assert any("despite a version mismatch" in r.getMessage() for r in caplog.records)


def test_a_card_claiming_our_version_does_not_hide_the_artifacts_own(
    old_artifact: tuple[Path, str], warned_store: Path, tmp_path: Path
) -> None:
    """The estimators' pickled state names the version that saved them: an edited card that
    claims ours is caught by InconsistentVersionWarning at load."""
    store = tmp_path / "models"
    (store / "old").mkdir(parents=True)
    version_dir = store / "old" / "1"
    version_dir.mkdir()
    (version_dir / "model.joblib").write_bytes(old_artifact[0].read_bytes())
    card = json.loads((warned_store / "old" / "1" / "card.json").read_text())
    card["sklearn_version"] = sklearn.__version__
    (version_dir / "card.json").write_text(json.dumps(card))
    problems = ModelRegistry(store, max_rows=10).load().problems
    assert old_artifact[1] in problems["old/1"] and sklearn.__version__ in problems["old/1"]

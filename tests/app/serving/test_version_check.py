"""The registry's library-version check, with this scikit-learn's own artifacts: a card that
records another minor version is refused as a readiness problem, or served under warn (the old
scikit-learn's real artifacts: tests/app/training/test_version_safety.py)."""

import json
from pathlib import Path

import pytest
import sklearn
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.serving.registry import ModelRegistry
from app.store.versions import minor_of


def older_minor() -> str:
    found = minor_of(sklearn.__version__)
    assert found is not None
    major, minor = found
    return f"{major}.{minor - 1}.0" if minor else f"{major - 1}.99.0"


def record_version(store: Path, name: str, version: str) -> None:
    card_path = store / name / "1" / "card.json"
    card = json.loads(card_path.read_text())
    card["sklearn_version"] = version
    card_path.write_text(json.dumps(card))


def test_a_card_from_another_minor_version_is_refused_naming_both(store: Path) -> None:
    made_with = older_minor()
    record_version(store, "line", made_with)
    registry = ModelRegistry(store, max_rows=10)
    problems = registry.load().problems
    assert list(problems) == ["line/1"]
    assert made_with in problems["line/1"] and sklearn.__version__ in problems["line/1"]
    assert "MODELPORT_VERSION_MISMATCH=warn" in problems["line/1"]
    assert not registry.ready and "line" not in {e.name for e in registry.entries() if e.versions}


def test_another_patch_version_serves(store: Path) -> None:
    found = minor_of(sklearn.__version__)
    assert found is not None
    record_version(store, "line", f"{found[0]}.{found[1]}.99")
    registry = ModelRegistry(store, max_rows=10)
    assert registry.load().problems == {}


def test_warn_serves_and_the_card_endpoint_names_the_mismatch(store: Path) -> None:
    made_with = older_minor()
    record_version(store, "line", made_with)
    app = create_app(Settings(model_dir=store, version_mismatch="warn"))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        line = client.get("/models/line").json()
        flowers = client.get("/models/flowers").json()
        metrics = client.get("/metrics").text
    assert made_with in line["version_mismatches"]["1"]
    assert line["card"]["sklearn_version"] == made_with
    assert line["runtime"]["sklearn_version"] == sklearn.__version__
    assert flowers["version_mismatches"] == {} and flowers["load_warnings"] == {}
    assert 'modelport_model_version_mismatch{model="line",version="1"} 1.0' in metrics
    assert 'modelport_model_version_mismatch{model="flowers",version="1"} 0.0' in metrics


@pytest.mark.parametrize("value", ["refuse", "warn"])
def test_the_setting_reads_from_the_environment(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELPORT_VERSION_MISMATCH", value)
    assert Settings().version_mismatch == value

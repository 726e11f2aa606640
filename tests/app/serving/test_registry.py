"""The model store scanner and registry (app.serving.registry, app.store.artifacts), on real stores written to tmp_path."""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LinearRegression, LogisticRegression

from app.errors import ModelNotFound, ModelUnavailable
from app.serving.registry import ModelRegistry
from app.store.artifacts import sha256_of
from schemas.cards import FeatureSpec, ModelCard, TrafficSplit
from tests.conftest import build_store, flower_data, flower_features, write_model

FLOWER_CLASSES = ["setosa", "versicolor", "virginica"]
ALL_VERSIONS = {("flowers", 1), ("flowers", 2), ("pets", 1), ("line", 1)}


class TinyClassifier(LogisticRegression):  # type: ignore[misc]  # sklearn is untyped
    """A custom estimator type, unknown to skops: its `.skops` file must not load untrusted."""


TINY_TYPE = f"{TinyClassifier.__module__}.{TinyClassifier.__qualname__}"


def loaded(store: Path, trusted_types: list[str] | None = None) -> ModelRegistry:
    registry = ModelRegistry(store, max_rows=50, trusted_types=trusted_types)
    registry.load()
    return registry


def served(registry: ModelRegistry) -> set[tuple[str, int]]:
    return {(model.name, model.version) for model in registry.loaded_models()}


def edit_card(version_dir: Path, **changes: Any) -> None:
    """Rewrite fields of a card.json in place (bypassing validation: the store is the input)."""
    path = version_dir / "card.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def line_dir(store: Path) -> Path:
    return store / "line" / "1"


def write_line_versions(store: Path, versions: list[int]) -> None:
    xs = np.arange(20, dtype=float).reshape(10, 2)
    for version in versions:
        write_model(
            store,
            LinearRegression().fit(xs, xs @ np.array([2.0, -1.0]) + version),
            name="line",
            version=version,
            task="regression",
            features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
        )


def write_skops_model(store: Path, estimator: Any, *, name: str) -> Path:
    """A flowers-like classifier stored as `model.skops`, its card pointing at that file."""
    version_dir = write_model(
        store,
        estimator,
        name=name,
        task="classification",
        features=flower_features(),
        classes=FLOWER_CLASSES,
    )
    (version_dir / "model.joblib").unlink()
    artifact = version_dir / "model.skops"
    skops.io.dump(estimator, artifact)
    card = ModelCard.model_validate_json((version_dir / "card.json").read_bytes())
    card = ModelCard.model_validate(
        {**card.model_dump(), "artifact": "model.skops", "sha256": sha256_of(artifact)}
    )
    (version_dir / "card.json").write_text(card.model_dump_json())
    return version_dir


# -- loading a healthy store ------------------------------------------------------------------


def test_loads_every_model_version(store: Path) -> None:
    registry = loaded(store)

    assert registry.problems == {}
    assert registry.ready is True
    assert registry.generation == 1
    assert served(registry) == ALL_VERSIONS
    assert sorted(entry.name for entry in registry.entries()) == ["flowers", "line", "pets"]
    flowers = registry.entry("flowers")
    assert sorted(flowers.versions) == [1, 2]
    assert flowers.unavailable == {}
    assert flowers.traffic == TrafficSplit(weights={1: 90, 2: 10})


def test_registry_is_not_ready_before_load(store: Path) -> None:
    registry = ModelRegistry(store, max_rows=50)

    assert registry.ready is False
    assert registry.generation == 0
    with pytest.raises(ModelNotFound):
        registry.get("flowers")


def test_get_returns_the_requested_version(store: Path) -> None:
    registry = loaded(store)

    model = registry.get("flowers", 2)

    assert (model.name, model.version) == ("flowers", 2)
    assert model.card.version == 2
    assert list(model.estimator.classes_) == FLOWER_CLASSES


def test_default_version_is_the_heaviest_in_the_traffic_split(store: Path) -> None:
    assert loaded(store).get("flowers").version == 1

    (store / "flowers" / "traffic.json").write_text(
        TrafficSplit(weights={1: 10, 2: 90}).model_dump_json()
    )

    registry = loaded(store)
    assert registry.entry("flowers").default_version == 2
    assert registry.get("flowers").version == 2


def test_default_version_is_the_newest_without_a_traffic_file(tmp_path: Path) -> None:
    store = tmp_path / "models"
    write_line_versions(store, [1, 3, 2])

    registry = loaded(store)

    assert not (store / "line" / "traffic.json").exists()
    assert registry.entry("line").traffic is None
    assert registry.entry("line").default_version == 3
    assert registry.get("line").version == 3
    assert registry.problems == {}


def test_default_version_skips_traffic_weight_on_versions_not_served(store: Path) -> None:
    (store / "flowers" / "traffic.json").write_text(
        TrafficSplit(weights={1: 40, 3: 60}).model_dump_json()
    )

    registry = loaded(store)

    assert registry.get("flowers").version == 1
    assert "flowers/traffic.json" in registry.problems
    assert "[3]" in registry.problems["flowers/traffic.json"]
    assert registry.ready is False
    assert served(registry) == ALL_VERSIONS


def test_invalid_traffic_file_is_a_problem_and_newest_version_is_the_default(store: Path) -> None:
    (store / "flowers" / "traffic.json").write_text('{"weights": {"1": -5, "2": 10}}')

    registry = loaded(store)

    assert registry.problems["flowers/traffic.json"].startswith("invalid")
    assert registry.ready is False
    assert registry.entry("flowers").traffic is None
    assert registry.get("flowers").version == 2


def test_unknown_model_is_not_found(store: Path) -> None:
    registry = loaded(store)

    with pytest.raises(ModelNotFound, match="nope"):
        registry.get("nope")
    with pytest.raises(ModelNotFound):
        registry.entry("nope")


def test_unknown_version_is_not_found(store: Path) -> None:
    registry = loaded(store)

    with pytest.raises(ModelNotFound, match="no version 3"):
        registry.get("flowers", 3)


# -- refusing broken versions -----------------------------------------------------------------


def append_a_byte(version_dir: Path) -> None:
    with (version_dir / "model.joblib").open("ab") as stream:
        stream.write(b"\0")


def rewrite_card_sha(version_dir: Path) -> None:
    edit_card(version_dir, sha256="0" * 64)


def remove_card(version_dir: Path) -> None:
    (version_dir / "card.json").unlink()


def card_not_json(version_dir: Path) -> None:
    (version_dir / "card.json").write_text('{"name": "line", ')


def card_failing_its_schema(version_dir: Path) -> None:
    edit_card(version_dir, task="clustering")


def card_with_other_name(version_dir: Path) -> None:
    edit_card(version_dir, name="other")


def card_with_other_version(version_dir: Path) -> None:
    edit_card(version_dir, version=7)


def remove_artifact(version_dir: Path) -> None:
    (version_dir / "model.joblib").unlink()


def garbage_artifact_with_matching_hash(version_dir: Path) -> None:
    artifact = version_dir / "model.joblib"
    artifact.write_bytes(b"this is not a pickle \x00\x01\x02" * 10)
    edit_card(version_dir, sha256=sha256_of(artifact))


def artifact_without_predict(version_dir: Path) -> None:
    artifact = version_dir / "model.joblib"
    joblib.dump({"coef": [2.0, -1.0]}, artifact)
    edit_card(version_dir, sha256=sha256_of(artifact))


def card_with_an_extra_feature(version_dir: Path) -> None:
    edit_card(
        version_dir,
        features=[{"name": n, "dtype": "float"} for n in ("a", "b", "c")],
    )


def card_with_a_nan_bound(version_dir: Path) -> None:
    # json.dumps writes NaN, which pydantic's JSON parser accepts for a float field.
    edit_card(
        version_dir,
        features=[
            {"name": "a", "dtype": "float", "minimum": math.nan},
            {"name": "b", "dtype": "float"},
        ],
    )


def card_with_other_classes(version_dir: Path) -> None:
    edit_card(version_dir, target={"name": "target", "classes": ["setosa", "versicolor", "rose"]})


def card_example_outside_its_schema(version_dir: Path) -> None:
    edit_card(version_dir, example=["purple", 3.5, 4])


def model_answering_nan(version_dir: Path) -> None:
    xs = np.arange(20, dtype=float).reshape(10, 2)
    estimator = LinearRegression().fit(xs, xs.sum(axis=1))
    estimator.intercept_ = math.nan
    artifact = version_dir / "model.joblib"
    joblib.dump(estimator, artifact)
    edit_card(version_dir, sha256=sha256_of(artifact))


def card_with_renamed_frame_column(version_dir: Path) -> None:
    card = json.loads((version_dir / "card.json").read_text())
    card["features"][2]["name"] = "years"
    (version_dir / "card.json").write_text(json.dumps(card))


BREAKAGES = [
    pytest.param("line", 1, append_a_byte, "SHA-256 mismatch", id="artifact-byte-appended"),
    pytest.param("line", 1, rewrite_card_sha, "SHA-256 mismatch", id="card-sha-rewritten"),
    pytest.param("flowers", 1, append_a_byte, "SHA-256 mismatch", id="default-version-tampered"),
    pytest.param("line", 1, remove_card, "no card.json", id="card-missing"),
    pytest.param("line", 1, card_not_json, "invalid card.json", id="card-not-json"),
    pytest.param("line", 1, card_failing_its_schema, "invalid card.json", id="card-bad-task"),
    pytest.param("line", 1, card_with_other_name, "card says other v1", id="card-other-name"),
    pytest.param("line", 1, card_with_other_version, "card says line v7", id="card-other-version"),
    pytest.param("line", 1, remove_artifact, "no model.joblib", id="artifact-missing"),
    pytest.param(
        "line",
        1,
        garbage_artifact_with_matching_hash,
        "cannot load model.joblib",
        id="artifact-not-a-pickle",
    ),
    pytest.param(
        "line", 1, artifact_without_predict, "no predict method", id="artifact-no-predict"
    ),
    pytest.param(
        "line",
        1,
        card_with_an_extra_feature,
        "model expects 2 features, card lists 3",
        id="feature-count-differs",
    ),
    pytest.param(
        "flowers", 2, card_with_other_classes, "target.classes differ", id="classes-differ"
    ),
    pytest.param(
        "pets", 1, card_with_renamed_frame_column, "feature_names_in_", id="frame-column-renamed"
    ),
    pytest.param(
        "pets",
        1,
        card_example_outside_its_schema,
        "example fails its own schema",
        id="card-example-invalid",
    ),
    pytest.param(
        "line", 1, model_answering_nan, "cannot predict its example", id="model-answers-nan"
    ),
    pytest.param("line", 1, card_with_a_nan_bound, "minimum", id="card-nan-bound"),
]


@pytest.mark.parametrize(("name", "version", "breakage", "reason"), BREAKAGES)
def test_broken_version_is_refused_and_the_rest_keep_serving(
    store: Path, name: str, version: int, breakage: Callable[[Path], None], reason: str
) -> None:
    breakage(store / name / str(version))

    registry = loaded(store)

    # flowers' traffic.json also becomes a problem: it names the refused version
    assert set(registry.problems) - {f"{name}/traffic.json"} == {f"{name}/{version}"}
    assert reason in registry.problems[f"{name}/{version}"]
    assert registry.ready is False
    assert registry.entry(name).unavailable == {version: registry.problems[f"{name}/{version}"]}
    with pytest.raises(ModelUnavailable, match=reason):
        registry.get(name, version)
    others = ALL_VERSIONS - {(name, version)}
    assert served(registry) == others
    for other_name, other_version in others:
        assert registry.get(other_name, other_version).version == other_version


def test_tampered_single_version_model_has_no_default(store: Path) -> None:
    append_a_byte(line_dir(store))

    registry = loaded(store)

    with pytest.raises(ModelUnavailable, match="no loadable version"):
        registry.get("line")
    assert registry.get("flowers").version == 1
    assert registry.get("pets").version == 1


def test_tampered_default_version_falls_back_to_a_served_one(store: Path) -> None:
    append_a_byte(store / "flowers" / "1")

    registry = loaded(store)

    assert registry.get("flowers").version == 2


def test_missing_store_directory_is_not_ready(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    registry = loaded(missing)

    assert registry.ready is False
    assert registry.problems == {str(missing): "model store directory does not exist"}
    assert registry.entries() == []


def test_empty_store_is_not_ready(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()

    registry = loaded(empty)

    assert registry.ready is False
    assert registry.entries() == []


@pytest.mark.parametrize(
    "folder",
    ["latest", "0", "00", "-1", "1.5", "v2", " 2", "²", "١"],
    ids=[
        "word",
        "zero",
        "double-zero",
        "negative",
        "decimal",
        "prefixed",
        "leading-space",
        "superscript-two",
        "arabic-indic-one",
    ],
)
def test_version_folders_that_are_not_positive_integers_are_ignored(
    store: Path, folder: str
) -> None:
    (store / "line" / folder).mkdir()

    registry = loaded(store)

    assert registry.problems == {}
    assert registry.ready is True
    assert sorted(registry.entry("line").versions) == [1]
    assert registry.entry("line").unavailable == {}


def test_files_and_hidden_folders_in_the_store_are_ignored(store: Path) -> None:
    (store / ".cache").mkdir()
    (store / "README.md").write_text("not a model")
    (store / "line" / "notes.txt").write_text("not a version")

    registry = loaded(store)

    assert registry.problems == {}
    assert served(registry) == ALL_VERSIONS


def test_model_folder_with_an_invalid_name_is_a_problem(store: Path) -> None:
    (store / "Bad Name" / "1").mkdir(parents=True)

    registry = loaded(store)

    assert "invalid model name" in registry.problems["Bad Name"]
    assert registry.ready is False
    assert served(registry) == ALL_VERSIONS


# -- skops artifacts --------------------------------------------------------------------------


def test_skops_artifact_of_a_plain_estimator_loads(tmp_path: Path) -> None:
    store = tmp_path / "models"
    x, y = flower_data()
    estimator = LogisticRegression(max_iter=1000).fit(x, y)
    write_skops_model(store, estimator, name="safe")

    registry = loaded(store)

    assert registry.problems == {}
    model = registry.get("safe")
    assert model.card.artifact == "model.skops"
    assert type(model.estimator) is LogisticRegression
    np.testing.assert_array_equal(model.estimator.predict_proba(x), estimator.predict_proba(x))


def test_skops_artifact_with_a_custom_type_is_refused_as_untrusted(tmp_path: Path) -> None:
    store = tmp_path / "models"
    x, y = flower_data()
    write_skops_model(store, TinyClassifier(max_iter=1000).fit(x, y), name="custom")
    write_skops_model(store, LogisticRegression(max_iter=1000).fit(x, y), name="safe")

    registry = loaded(store)

    reason = registry.problems["custom/1"]
    assert "untrusted" in reason
    assert TINY_TYPE in reason
    with pytest.raises(ModelUnavailable, match="untrusted"):
        registry.get("custom")
    assert registry.get("safe").version == 1


def test_skops_artifact_with_a_custom_type_loads_when_trusted(tmp_path: Path) -> None:
    store = tmp_path / "models"
    x, y = flower_data()
    estimator = TinyClassifier(max_iter=1000).fit(x, y)
    write_skops_model(store, estimator, name="custom")

    registry = loaded(store, trusted_types=[TINY_TYPE])

    assert registry.problems == {}
    model = registry.get("custom")
    assert isinstance(model.estimator, TinyClassifier)
    np.testing.assert_array_equal(model.estimator.predict(x), estimator.predict(x))


def test_trusting_another_type_does_not_trust_the_custom_one(tmp_path: Path) -> None:
    store = tmp_path / "models"
    x, y = flower_data()
    write_skops_model(store, TinyClassifier(max_iter=1000).fit(x, y), name="custom")

    registry = loaded(store, trusted_types=["tests.app.serving.test_registry.SomethingElse"])

    assert "untrusted" in registry.problems["custom/1"]


# -- reloading --------------------------------------------------------------------------------


def test_reload_swaps_in_a_new_snapshot(store: Path) -> None:
    registry = ModelRegistry(store, max_rows=50)
    first = registry.load()
    assert registry.generation == 1
    kept = registry.get("flowers", 2)

    x, y = flower_data()
    write_model(
        store,
        LogisticRegression(C=10.0, max_iter=1000).fit(x, y),
        name="flowers",
        version=3,
        task="classification",
        features=flower_features(),
        classes=FLOWER_CLASSES,
    )
    second = registry.load()

    assert registry.generation == 2
    assert second is not first
    assert sorted(first.entries["flowers"].versions) == [1, 2]
    assert sorted(second.entries["flowers"].versions) == [1, 2, 3]
    assert registry.get("flowers", 3).version == 3
    # traffic.json still sends the unpinned traffic to version 1
    assert registry.get("flowers").version == 1
    # a model handed out before the reload is still a working model
    assert (
        kept.estimator.predict(x[:1]).tolist()
        == registry.get("flowers", 2).estimator.predict(x[:1]).tolist()
    )


def test_reload_drops_models_removed_from_disk(store: Path) -> None:
    registry = loaded(store)
    assert registry.get("line").version == 1

    for path in sorted(line_dir(store).iterdir()):
        path.unlink()
    line_dir(store).rmdir()
    (store / "line").rmdir()
    registry.load()

    assert registry.generation == 2
    with pytest.raises(ModelNotFound):
        registry.get("line")
    assert served(registry) == ALL_VERSIONS - {("line", 1)}


def test_reload_picks_up_a_repaired_artifact(tmp_path: Path) -> None:
    store = build_store(tmp_path / "models")
    artifact = line_dir(store) / "model.joblib"
    good = artifact.read_bytes()
    artifact.write_bytes(good + b"\0")
    registry = loaded(store)
    assert "line/1" in registry.problems

    artifact.write_bytes(good)
    registry.load()

    assert registry.problems == {}
    assert registry.ready is True
    assert registry.get("line").version == 1


def test_clear_empties_the_registry(store: Path) -> None:
    registry = loaded(store)

    registry.clear()

    assert registry.ready is False
    assert registry.entries() == []

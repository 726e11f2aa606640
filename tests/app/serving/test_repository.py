"""The model repository in one process (app.serving.repository): the index of a real store, and
loads and unloads through the real registry, on stores written to tmp_path."""

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sklearn.linear_model import LinearRegression

from app.config import Settings
from app.errors import Forbidden, LoadFailed, ModelNotFound, ServiceError, Unauthorized
from app.serving.registry import ModelRegistry
from app.serving.repository import (
    READY,
    UNAVAILABLE,
    UNLOADED,
    UNLOADED_REASON,
    InProcessRepository,
    RepositoryEntry,
    authorize_write,
    index_of,
)
from schemas.cards import FeatureSpec
from tests.conftest import write_model


def tamper(version_dir: Path) -> None:
    with (version_dir / "model.joblib").open("ab") as artifact:
        artifact.write(b"tampered")


def write_line(store: Path, name: str, version: int = 1) -> Path:
    xs = np.arange(20, dtype=float).reshape(10, 2)
    return write_model(
        store,
        LinearRegression().fit(xs, xs @ np.array([2.0, -1.0]) + version),
        name=name,
        version=version,
        task="regression",
        features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
    )


@pytest.fixture
def registry(store: Path) -> ModelRegistry:
    loaded = ModelRegistry(store, max_rows=50)
    loaded.load()
    return loaded


@pytest.fixture
def repository(registry: ModelRegistry) -> InProcessRepository:
    return InProcessRepository(registry)


def loaded_gauge(name: str, version: int) -> float | None:
    return REGISTRY.get_sample_value(
        "modelport_model_loaded", {"model": name, "version": str(version)}
    )


def states(repository: InProcessRepository) -> dict[tuple[str, int | None], str]:
    return {(row.name, row.version): row.state for row in repository.index()}


# -- the index --------------------------------------------------------------------------------


def test_the_index_lists_every_version_and_folder_with_its_state_and_reason(store: Path) -> None:
    tamper(store / "flowers" / "2")
    (store / "drafts").mkdir()  # a model folder with no version folder yet
    (store / "Bad Name" / "1").mkdir(parents=True)
    registry = ModelRegistry(store, max_rows=50)
    registry.unloaded = frozenset({"pets"})
    registry.load()

    rows = index_of(registry.snapshot)

    assert [(row.name, row.version, row.state) for row in rows] == [
        ("Bad Name", None, UNAVAILABLE),
        ("drafts", None, UNAVAILABLE),
        ("flowers", 1, READY),
        ("flowers", 2, UNAVAILABLE),
        ("line", 1, READY),
        ("pets", 1, UNLOADED),
    ]
    reasons = {(row.name, row.version): row.reason for row in rows}
    assert "invalid model name" in reasons[("Bad Name", None)]
    assert "no version folders" in reasons[("drafts", None)]
    assert reasons[("flowers", 1)] == ""
    assert reasons[("flowers", 2)].startswith("SHA-256 mismatch")
    assert reasons[("pets", 1)] == UNLOADED_REASON


def test_ready_only_lists_only_the_versions_serving(
    store: Path, repository: InProcessRepository
) -> None:
    asyncio.run(repository.unload("pets"))

    assert [(row.name, row.version) for row in repository.index(ready_only=True)] == [
        ("flowers", 1),
        ("flowers", 2),
        ("line", 1),
    ]


def test_an_unloaded_model_with_no_version_folder_is_one_name_level_row(
    store: Path, repository: InProcessRepository
) -> None:
    (store / "drafts").mkdir()
    asyncio.run(repository.unload("drafts"))

    assert [row for row in repository.index() if row.name == "drafts"] == [
        RepositoryEntry("drafts", None, UNLOADED, UNLOADED_REASON)
    ]


# -- unload and load --------------------------------------------------------------------------


def test_unload_stops_serving_and_keeps_the_server_ready(
    registry: ModelRegistry, repository: InProcessRepository
) -> None:
    asyncio.run(repository.unload("flowers"))

    with pytest.raises(ModelNotFound, match="unloaded"):
        registry.get("flowers")
    assert states(repository)[("flowers", 1)] == UNLOADED
    assert states(repository)[("flowers", 2)] == UNLOADED
    assert registry.ready is True
    assert "flowers" not in {entry.name for entry in registry.entries()}
    assert loaded_gauge("flowers", 1) == 0


def test_a_server_whose_every_model_is_unloaded_is_still_ready(
    registry: ModelRegistry, repository: InProcessRepository
) -> None:
    for name in ("flowers", "line", "pets"):
        asyncio.run(repository.unload(name))

    assert registry.loaded_models() == []
    assert registry.ready is True


def test_unloading_a_broken_model_makes_the_server_ready(store: Path) -> None:
    tamper(store / "line" / "1")
    registry = ModelRegistry(store, max_rows=50)
    registry.load()
    assert registry.ready is False

    asyncio.run(InProcessRepository(registry).unload("line"))

    assert registry.ready is True
    assert registry.problems == {}


def test_load_serves_an_unloaded_model_again(
    registry: ModelRegistry, repository: InProcessRepository
) -> None:
    asyncio.run(repository.unload("line"))
    asyncio.run(repository.load("line"))

    assert registry.get("line").version == 1
    assert states(repository)[("line", 1)] == READY
    assert loaded_gauge("line", 1) == 1


def test_load_reads_only_that_model_and_the_others_keep_their_loaded_versions(
    store: Path, registry: ModelRegistry, repository: InProcessRepository
) -> None:
    before = {(m.name, m.version): m for m in registry.loaded_models()}
    write_line(store, "line", version=2)

    asyncio.run(repository.load("line"))

    after = {(m.name, m.version): m for m in registry.loaded_models()}
    assert set(after) == set(before) | {("line", 2)}
    assert after[("flowers", 1)] is before[("flowers", 1)]
    assert after[("pets", 1)] is before[("pets", 1)]
    assert after[("line", 1)] is not before[("line", 1)]  # read from the store again
    assert registry.get("line").version == 2
    assert registry.generation == 2  # the docs are rebuilt for the new snapshot


def test_a_model_copied_into_the_store_serves_once_loaded(
    store: Path, registry: ModelRegistry, repository: InProcessRepository
) -> None:
    staging = store.parent / "staging"
    write_line(staging, "fresh")
    shutil.move(staging / "fresh", store / "fresh")
    with pytest.raises(ModelNotFound):
        registry.get("fresh")

    asyncio.run(repository.load("fresh"))

    assert registry.get("fresh").version == 1


def test_a_model_whose_every_version_fails_does_not_load_and_says_why(
    store: Path, registry: ModelRegistry, repository: InProcessRepository
) -> None:
    write_line(store, "wreck")
    tamper(store / "wreck" / "1")

    with pytest.raises(LoadFailed, match="version 1: SHA-256 mismatch") as failed:
        asyncio.run(repository.load("wreck"))

    assert failed.value.status_code == 400
    assert states(repository)[("wreck", 1)] == UNAVAILABLE


def test_a_folder_without_versions_does_not_load(
    store: Path, repository: InProcessRepository
) -> None:
    (store / "drafts").mkdir()

    with pytest.raises(LoadFailed, match="no version folders"):
        asyncio.run(repository.load("drafts"))


@pytest.mark.parametrize("name", ["nope", "../models/line", "..", "line/1", "Bad Name", ""])
def test_names_not_in_the_store_are_not_found(
    store: Path, repository: InProcessRepository, name: str
) -> None:
    (store / "Bad Name").mkdir()
    for write in (repository.load, repository.unload):
        with pytest.raises(ModelNotFound):
            asyncio.run(write(name))


def test_unloading_an_unloaded_model_changes_nothing(
    registry: ModelRegistry, repository: InProcessRepository
) -> None:
    asyncio.run(repository.unload("pets"))
    asyncio.run(repository.unload("pets"))

    assert registry.unloaded == frozenset({"pets"})
    assert states(repository)[("pets", 1)] == UNLOADED


def test_a_model_unloaded_stays_unloaded_through_a_whole_store_reload(
    registry: ModelRegistry, repository: InProcessRepository
) -> None:
    asyncio.run(repository.unload("pets"))

    registry.load()  # what SIGHUP does

    assert states(repository)[("pets", 1)] == UNLOADED
    with pytest.raises(ModelNotFound, match="unloaded"):
        registry.get("pets")


# -- who may write ----------------------------------------------------------------------------

KEY = "s3cret-key"


@pytest.mark.parametrize(
    ("api_key", "writes", "offered", "refused"),
    [
        (None, None, None, Forbidden),  # the default: off
        (None, None, "anything", Forbidden),
        (None, True, None, None),
        (None, False, None, Forbidden),
        (KEY, None, KEY, None),  # a key guards them: on, with the key
        (KEY, None, None, Unauthorized),
        (KEY, None, "wrong", Unauthorized),
        (KEY, True, KEY, None),
        (KEY, True, None, Unauthorized),
        (KEY, False, KEY, Forbidden),
        (KEY, False, None, Unauthorized),  # the key is checked first: 401 before 403
    ],
)
def test_who_may_load_and_unload(
    api_key: str | None, writes: bool | None, offered: str | None, refused: type | None
) -> None:
    settings = Settings(
        api_key=None if api_key is None else SecretStr(api_key), repository_writes=writes
    )
    if refused is None:
        authorize_write(settings, offered)
        return
    with pytest.raises(ServiceError) as raised:
        authorize_write(settings, offered)
    assert type(raised.value) is refused
    if refused is Forbidden:
        assert raised.value.status_code == 403
        assert "MODELPORT_REPOSITORY_WRITES" in str(raised.value.detail)

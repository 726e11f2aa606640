"""The model catalogue: GET /models, /models/{name}, /models/{name}/versions/{version}."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from schemas.cards import ModelCard


def names(response_json: dict[str, Any]) -> list[str]:
    return [item["name"] for item in response_json["data"]]


def assert_envelope(response_json: dict[str, Any], kind: str) -> Any:
    assert set(response_json) == {"error", "detail"}
    assert response_json["error"] == kind
    return response_json["detail"]


def test_list_models(client: TestClient) -> None:
    response = client.get("/models")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert names(body) == ["flowers", "line", "pets"]
    flowers = body["data"][0]
    assert flowers == {
        "name": "flowers",
        "task": "classification",
        "description": "test model flowers",
        "input_kind": "tabular",
        "default_version": 1,
        "versions": [1, 2],
    }
    line = body["data"][1]
    assert (line["task"], line["default_version"], line["versions"]) == ("regression", 1, [1])


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        pytest.param("flow", ["flowers"], id="name-substring"),
        pytest.param("FLOWERS", ["flowers"], id="name-uppercase"),
        pytest.param("PeT", ["pets"], id="name-mixed-case"),
        pytest.param("model l", ["line"], id="description-only"),
        pytest.param("TEST MODEL", ["flowers", "line", "pets"], id="description-uppercase"),
        pytest.param("e", ["flowers", "line", "pets"], id="one-letter"),
        pytest.param("zebra", [], id="no-match"),
        pytest.param("", ["flowers", "line", "pets"], id="empty"),
    ],
)
def test_search_is_a_case_insensitive_substring_of_name_or_description(
    client: TestClient, search: str, expected: list[str]
) -> None:
    response = client.get("/models", params={"search": search})

    assert response.status_code == 200
    assert names(response.json()) == expected
    assert response.json()["count"] == len(expected)


@pytest.mark.parametrize(
    ("task", "expected"),
    [("classification", ["flowers", "pets"]), ("regression", ["line"])],
)
def test_task_filter(client: TestClient, task: str, expected: list[str]) -> None:
    response = client.get("/models", params={"task": task})

    assert response.status_code == 200
    assert names(response.json()) == expected
    assert all(item["task"] == task for item in response.json()["data"])


def test_search_and_task_combine(client: TestClient) -> None:
    response = client.get("/models", params={"search": "test", "task": "regression"})

    assert response.status_code == 200
    assert names(response.json()) == ["line"]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        pytest.param({"task": "clustering"}, ["query", "task"], id="unknown-task"),
        pytest.param({"task": "Classification"}, ["query", "task"], id="task-wrong-case"),
        pytest.param({"search": "x" * 101}, ["query", "search"], id="search-too-long"),
    ],
)
def test_invalid_query_is_a_422_envelope(
    client: TestClient, params: dict[str, str], loc: list[str]
) -> None:
    response = client.get("/models", params=params)

    assert response.status_code == 422
    detail = assert_envelope(response.json(), "InvalidInput")
    assert [issue["loc"] for issue in detail] == [loc]
    assert all(set(issue) == {"loc", "msg", "type"} for issue in detail)


def test_read_model(client: TestClient, store: Path) -> None:
    response = client.get("/models/flowers")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "flowers"
    assert body["default_version"] == 1
    assert body["versions"] == [1, 2]
    assert body["unavailable_versions"] == {}
    assert body["traffic"] == {"1": 90.0, "2": 10.0}
    on_disk = json.loads((store / "flowers" / "1" / "card.json").read_text())
    assert ModelCard.model_validate(body["card"]) == ModelCard.model_validate(on_disk)
    assert body["card"]["version"] == 1


def test_read_model_without_traffic_split(client: TestClient) -> None:
    response = client.get("/models/pets")

    assert response.status_code == 200
    assert response.json()["traffic"] is None
    assert response.json()["default_version"] == 1
    assert [f["name"] for f in response.json()["card"]["features"]] == ["colour", "weight", "age"]


def test_read_model_version(client: TestClient, store: Path) -> None:
    response = client.get("/models/flowers/versions/2")

    assert response.status_code == 200
    card = response.json()
    assert card["name"] == "flowers"
    assert card["version"] == 2
    on_disk = json.loads((store / "flowers" / "2" / "card.json").read_text())
    assert ModelCard.model_validate(card) == ModelCard.model_validate(on_disk)


@pytest.mark.parametrize(
    "path",
    ["/models/nope", "/models/nope/versions/1", "/models/flowers/versions/3"],
    ids=["unknown-model", "unknown-model-version", "unknown-version"],
)
def test_unknown_model_or_version_is_a_404_envelope(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    detail = assert_envelope(response.json(), "ModelNotFound")
    assert isinstance(detail, str)


@pytest.mark.parametrize(
    ("version", "type_"),
    [
        pytest.param("abc", "int_parsing", id="word"),
        pytest.param("1.5", "int_parsing", id="decimal"),
        pytest.param("0", "greater_than_equal", id="zero"),
        pytest.param("-1", "greater_than_equal", id="negative"),
    ],
)
def test_invalid_version_is_a_422_envelope(client: TestClient, version: str, type_: str) -> None:
    response = client.get(f"/models/flowers/versions/{version}")

    assert response.status_code == 422
    detail = assert_envelope(response.json(), "InvalidInput")
    assert isinstance(detail, list)
    assert detail == [{"loc": ["path", "version"], "msg": detail[0]["msg"], "type": type_}]
    assert detail[0]["msg"]

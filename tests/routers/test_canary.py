"""Canary routing: the traffic split as a function of the session (ModelEntry.route), and the
session cookie through the real stack: issued once, sticky across requests and app instances,
overridden by an explicit version, absent for models without a split."""

import dataclasses
import re
import secrets
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.serving.registry import ModelEntry, ModelRegistry
from schemas.cards import TrafficSplit
from tests.conftest import FLOWER_FEATURES, build_store, flower_rows
from tests.routers.test_predict import assert_class_predictions, oracle

COOKIE = "modelport_session"
SESSION_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,128}")
SESSIONS = 10_000
ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module (overrides conftest's per-test one): these tests only read it,
    and fitting its models is the slow part of each test's setup."""
    return build_store(tmp_path_factory.mktemp("store") / "models")


@pytest.fixture(scope="module")
def flowers(store: Path) -> ModelEntry:
    registry = ModelRegistry(store, max_rows=50)
    registry.load()
    return registry.entry("flowers")


def session_routed_to(entry: ModelEntry, version: int) -> str:
    """A valid session id that `entry` routes to `version`, found by trying candidates."""
    candidates = (f"probe-{i:06d}" for i in range(100_000))
    return next(session for session in candidates if entry.route(session) == version)


def shares(entry: ModelEntry, sessions: list[str]) -> dict[int | None, float]:
    counts = Counter(entry.route(session) for session in sessions)
    return {version: count / len(sessions) for version, count in counts.items()}


SESSION_IDS: dict[str, Callable[[], list[str]]] = {
    "sequential": lambda: [f"session-{i}" for i in range(SESSIONS)],
    "random": lambda: [secrets.token_urlsafe(16) for _ in range(SESSIONS)],
}


# -- the split as a function ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SESSION_IDS))
def test_sessions_are_split_90_10(flowers: ModelEntry, kind: str) -> None:
    assert flowers.split
    assert flowers.traffic == TrafficSplit(weights={1: 90, 2: 10})

    split = shares(flowers, SESSION_IDS[kind]())

    assert set(split) == {1, 2}
    assert split[1] == pytest.approx(0.90, abs=0.02)
    assert split[2] == pytest.approx(0.10, abs=0.02)


def test_route_is_a_pure_function_of_the_session(flowers: ModelEntry, store: Path) -> None:
    sessions = [f"session-{i}" for i in range(500)]
    other = ModelRegistry(store, max_rows=50)
    other.load()

    first = [flowers.route(s) for s in sessions]

    assert [flowers.route(s) for s in sessions] == first
    assert [other.entry("flowers").route(s) for s in sessions] == first


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        pytest.param({1: 100, 2: 0}, {1: 1.0}, id="v2-weight-0"),
        pytest.param({1: 0, 2: 100}, {2: 1.0}, id="v1-weight-0"),
        pytest.param({1: 90, 2: 10, 3: 50}, {1: 0.9, 2: 0.1}, id="v3-not-served"),
        pytest.param({1: 50, 3: 50}, {1: 1.0}, id="only-v1-served"),
        pytest.param({1: 1, 2: 1}, {1: 0.5, 2: 0.5}, id="even"),
    ],
)
def test_weights_that_cannot_take_traffic_are_left_out(
    flowers: ModelEntry, weights: dict[int, float], expected: dict[int, float]
) -> None:
    entry = dataclasses.replace(flowers, traffic=TrafficSplit(weights=weights))

    split = shares(entry, SESSION_IDS["sequential"]())

    assert set(split) == set(expected)
    for version, share in expected.items():
        assert split[version] == pytest.approx(share, abs=0.02)
    assert entry.split == (len(expected) > 1)


# -- the cookie over HTTP ---------------------------------------------------------------------


def cookie_attributes(response: httpx2.Response) -> dict[str, str]:
    """The session cookie's Set-Cookie header as {"value": ..., attribute: value}."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    name_value, *attributes = (part.strip() for part in headers[0].split(";"))
    name, _, value = name_value.partition("=")
    assert name == COOKIE
    parsed = {"value": value}
    for attribute in attributes:
        key, _, setting = attribute.partition("=")
        parsed[key.lower()] = setting
    return parsed


def version_of(response: httpx2.Response) -> int:
    assert response.status_code == 200, response.text
    version = int(response.headers["x-model-version"])
    if response.headers["content-type"].startswith("application/json"):
        assert response.json()["model_version"] == version
    return version


def test_a_new_client_gets_a_session_cookie(
    client: TestClient, settings: Settings, flowers: ModelEntry
) -> None:
    response = client.post("/models/flowers/predict", json=ROW)

    version = version_of(response)
    cookie = cookie_attributes(response)
    assert SESSION_PATTERN.fullmatch(cookie["value"])
    assert cookie["httponly"] == ""
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(settings.cookie_max_age) == str(30 * 24 * 3600)
    assert "secure" not in cookie
    assert "domain" not in cookie
    assert version == flowers.route(cookie["value"])


def test_secure_and_max_age_follow_the_settings(store: Path, flowers: ModelEntry) -> None:
    app = create_app(Settings(model_dir=store, cookie_secure=True, cookie_max_age=3600))
    with TestClient(app) as client:
        response = client.post("/models/flowers/predict", json=ROW)

    version = version_of(response)
    cookie = cookie_attributes(response)
    assert "secure" in cookie
    assert cookie["max-age"] == "3600"
    assert cookie["httponly"] == "" and cookie["samesite"].lower() == "lax"
    assert version == flowers.route(cookie["value"])


@pytest.mark.parametrize("version", [1, 2])
def test_the_same_cookie_always_gets_the_same_version(
    client: TestClient, store: Path, flowers: ModelEntry, version: int
) -> None:
    session = session_routed_to(flowers, version)
    client.cookies.set(COOKIE, session)

    replies = [client.post("/models/flowers/predict", json=ROW) for _ in range(20)]
    # Another worker or replica: an independent app over the same store, no shared state.
    with TestClient(create_app(Settings(model_dir=store))) as replica:
        replica.cookies.set(COOKIE, session)
        replies += [replica.post("/models/flowers/predict", json=ROW) for _ in range(5)]

    assert [version_of(reply) for reply in replies] == [version] * 25
    assert all("set-cookie" not in reply.headers for reply in replies)


def test_an_issued_cookie_keeps_its_client_on_its_version(client: TestClient) -> None:
    first = client.post("/models/flowers/predict", json=ROW)
    issued = cookie_attributes(first)["value"]

    later = [client.post("/models/flowers/predict", json=ROW) for _ in range(10)]

    assert {version_of(reply) for reply in later} == {version_of(first)}
    assert all("set-cookie" not in reply.headers for reply in later)
    assert client.cookies[COOKIE] == issued


@pytest.mark.parametrize(
    "malformed",
    [
        pytest.param("x", id="one-char"),
        pytest.param("abcdefg", id="seven-chars"),
        pytest.param("a" * 500, id="500-chars"),
        pytest.param("../", id="dot-dot-slash"),
        pytest.param("../../../../etc/passwd", id="path"),
        pytest.param("%00%00%00%00%00", id="percent-nul"),
        pytest.param("a.b.c.d.e.f.g.h", id="dots"),
        pytest.param("", id="empty"),
    ],
)
def test_a_malformed_cookie_is_replaced(
    client: TestClient, flowers: ModelEntry, malformed: str
) -> None:
    client.cookies.set(COOKIE, malformed)

    response = client.post("/models/flowers/predict", json=ROW)

    version = version_of(response)
    cookie = cookie_attributes(response)
    assert cookie["value"] != malformed
    assert SESSION_PATTERN.fullmatch(cookie["value"])
    assert version == flowers.route(cookie["value"])


def upload_rows(rows: list[list[float]]) -> dict[str, Any]:
    lines = [",".join(FLOWER_FEATURES)] + [",".join(map(str, row)) for row in rows]
    return {"file": ("rows.csv", "\r\n".join(lines).encode(), "text/csv")}


def test_a_v2_cookie_gets_v2_everywhere(
    client: TestClient, store: Path, flowers: ModelEntry
) -> None:
    client.cookies.set(COOKIE, session_routed_to(flowers, 2))
    rows = flower_rows()
    v2 = oracle(store, "flowers", 2)
    fields = dict(zip(FLOWER_FEATURES, map(str, rows[0]), strict=True))

    as_json = client.post("/models/flowers/predict", json={"instances": rows})
    as_file = client.post("/models/flowers/predict/file", files=upload_rows(rows))
    as_csv = client.post(
        "/models/flowers/predict/file", files=upload_rows(rows), headers={"accept": "text/csv"}
    )
    as_form = client.post("/models/flowers/predict/form", data={**fields, "top_k": "3"})
    page = client.get("/models/flowers/form")

    replies = [as_json, as_file, as_csv, as_form]
    assert [version_of(reply) for reply in replies] == [2] * len(replies)
    assert all("set-cookie" not in reply.headers for reply in [*replies, page])
    assert_class_predictions(as_json.json()["predictions"], v2, np.array(rows))
    assert_class_predictions(as_file.json()["predictions"], v2, np.array(rows))
    expected = v2.predict_proba(np.array(rows[:1]))[0]
    assert {
        item["label"]: item["probability"] for item in as_form.json()["predictions"][0]["top"]
    } == (pytest.approx(dict(zip(v2.classes_.tolist(), expected.tolist(), strict=True)), abs=1e-12))
    assert page.status_code == 200
    assert "<title>flowers v2 " in page.text


def test_the_form_page_pins_a_new_visitor_to_the_version_it_shows(
    client: TestClient, flowers: ModelEntry
) -> None:
    """The page is rendered from the version the split assigns; without the cookie that
    assignment is lost, and the visitor's submission is routed afresh."""
    page = client.get("/models/flowers/form")

    assert page.status_code == 200
    shown = re.search(r"<title>flowers v(\d+) ", page.text)
    assert shown is not None
    cookie = cookie_attributes(page)
    assert SESSION_PATTERN.fullmatch(cookie["value"])
    assert int(shown.group(1)) == flowers.route(cookie["value"])


def test_the_file_route_sets_the_cookie_on_csv_replies(
    client: TestClient, flowers: ModelEntry
) -> None:
    response = client.post(
        "/models/flowers/predict/file",
        files=upload_rows(flower_rows(2)),
        headers={"accept": "text/csv"},
    )

    assert response.headers["content-type"].startswith("text/csv")
    version = version_of(response)
    assert version == flowers.route(cookie_attributes(response)["value"])


@pytest.mark.parametrize("pinned", [1, 2])
@pytest.mark.parametrize("cookie_version", [None, 1, 2])
def test_an_explicit_version_wins_and_sets_no_cookie(
    client: TestClient, flowers: ModelEntry, pinned: int, cookie_version: int | None
) -> None:
    if cookie_version is not None:
        client.cookies.set(COOKIE, session_routed_to(flowers, cookie_version))

    response = client.post(f"/models/flowers/versions/{pinned}/predict", json=ROW)

    assert version_of(response) == pinned
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/models/line/predict", {"json": {"instances": [[1.0, 2.0]]}}),
        ("POST", "/models/pets/predict", {"json": {"instances": [["black", 4.0, 3]]}}),
        ("POST", "/models/line/predict/form", {"data": {"a": "1", "b": "2"}}),
        ("POST", "/models/line/predict/file", {"files": {"file": ("r.csv", b"a,b\n1,2\n")}}),
    ],
)
def test_models_without_a_split_set_no_cookie(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    response = client.request(method, path, **kwargs)

    assert version_of(response) == 1
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("name", ["line", "pets"])
def test_form_pages_of_models_without_a_split_set_no_cookie(client: TestClient, name: str) -> None:
    response = client.get(f"/models/{name}/form")

    assert response.status_code == 200
    assert "set-cookie" not in response.headers


def test_fresh_clients_see_both_versions_and_always_get_a_cookie(
    client: TestClient, flowers: ModelEntry
) -> None:
    versions: Counter[int] = Counter()
    issued = set()
    for _ in range(300):
        client.cookies.clear()
        response = client.post("/models/flowers/predict", json=ROW)
        version = version_of(response)
        session = cookie_attributes(response)["value"]
        assert version == flowers.route(session)
        versions[version] += 1
        issued.add(session)

    assert set(versions) == {1, 2}
    assert len(issued) == 300

"""The repository API against the real `modelport serve` (gunicorn master, 2 uvicorn workers):
the index with states and reasons, unload and load seen by every worker (and kept through a
SIGHUP), a model copied into the store served after a load, loads and unloads under load with no
failed request, models still loaded once in the master and shared by the workers afterwards,
tritonclient's repository calls, the `modelport models` verbs, and who may write."""

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from benchmarks.memory import read_memory
from benchmarks.targets import RELOADED_WORKER_PRIVATE_MB
from schemas.cards import FeatureSpec
from tests.conftest import flower_data, flower_features, write_model
from tests.e2e.conftest import SUMMARY, Server, run_cli, start_server, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROW = [5.1, 3.5, 1.4, 0.2]
LINE_FEATURES = [FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")]
KEY = "repository-key-9"
WAIT = 90  # seconds: a bound for a slow CI machine, never reached when all goes well


def write_line(store: Path, name: str, version: int = 1, slope: float = 2.0) -> LinearRegression:
    xs = np.random.default_rng(version).uniform(-5, 5, size=(12, 2))
    estimator = LinearRegression().fit(xs, xs @ np.array([slope, -1.0]) + version)
    write_model(
        store, estimator, name=name, version=version, task="regression", features=LINE_FEATURES
    )
    return estimator


def write_big_model(store: Path) -> int:
    """A model far larger than a worker's own memory (a few extremely randomised trees grown
    to the last sample): loaded in a worker, it would show in that worker's private memory."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, size=(120_000, 4))
    estimator = ExtraTreesRegressor(n_estimators=4, random_state=0).fit(
        x, x.sum(axis=1) + rng.normal(0, 1, len(x))
    )
    features = [FeatureSpec(name=f"x{i}", dtype="float") for i in range(4)]
    version_dir = write_model(
        store, estimator, name="big", task="regression", features=features, example=[1, 2, 3, 4]
    )
    return (version_dir / "model.joblib").stat().st_size


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    store = tmp_path_factory.mktemp("repository") / "models"
    x, y = flower_data()
    write_model(
        store,
        LogisticRegression(max_iter=1000).fit(x, y),
        name="flowers",
        task="classification",
        features=flower_features(),
        classes=["setosa", "versicolor", "virginica"],
        example=ROW,
    )
    write_line(store, "line")
    write_line(store, "tampered", 1)
    write_line(store, "tampered", 2)
    with (store / "tampered" / "2" / "model.joblib").open("ab") as artifact:
        artifact.write(b"tampered")
    (store / "drafts").mkdir()  # a model folder with no version folder yet
    return store, write_big_model(store)


@pytest.fixture(scope="module")
def server(store: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        store[0], tmp_path_factory.mktemp("logs") / "serve.log", repository_writes="true"
    )
    yield running
    stop_server(running)


def post(server: Server, path: str, **options: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=WAIT, **options)


def write(server: Server, verb: str, name: str, **options: Any) -> httpx.Response:
    return post(server, f"/v2/repository/models/{name}/{verb}", **options)


def index(server: Server) -> dict[tuple[str, str | None], tuple[str, str]]:
    reply = post(server, "/v2/repository/index")
    assert reply.status_code == 200, reply.text
    return {
        (row["name"], row.get("version")): (row["state"], row["reason"]) for row in reply.json()
    }


def infer_statuses(server: Server, name: str, rows: list[list[float]], count: int = 16) -> set[int]:
    """Statuses of `count` concurrent inference requests, each on a new connection (so both
    workers take some)."""
    body = {
        "inputs": [
            {"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}
        ]
    }

    def one(_: int) -> int:
        return post(server, f"/v2/models/{name}/infer", json=body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return set(pool.map(one, range(count)))


def settled_workers(server: Server, count: int = 2) -> list[int]:
    """The worker pids once the retired ones have exited."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if len(pids) == count:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"workers did not settle: {server.worker_pids()}")


def test_the_index_lists_every_version_with_its_state_and_reason(server: Server) -> None:
    rows = index(server)

    assert {key: state for key, (state, _) in rows.items()} == {
        ("big", "1"): "READY",
        ("drafts", None): "UNAVAILABLE",
        ("flowers", "1"): "READY",
        ("line", "1"): "READY",
        ("tampered", "1"): "READY",
        ("tampered", "2"): "UNAVAILABLE",
    }
    assert rows[("tampered", "2")][1].startswith("SHA-256 mismatch")
    assert rows[("drafts", None)][1] == "no version folders (1, 2, ...) in it"
    ready = post(server, "/v2/repository/index", json={"ready": True}).json()
    assert all(row["state"] == "READY" for row in ready) and len(ready) == 4


def test_unload_reaches_every_worker_and_outlives_a_sighup_then_load_serves_again(
    server: Server,
) -> None:
    assert infer_statuses(server, "flowers", [ROW]) == {200}

    assert write(server, "unload", "flowers").status_code == 200

    assert infer_statuses(server, "flowers", [ROW]) == {404}
    assert index(server)[("flowers", "1")] == ("UNLOADED", "unloaded by the repository API")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'modelport_model_loaded{model="flowers",version="1"} 0.0' in metrics

    # A plain SIGHUP (`modelport reload`) reloads the store and keeps the unload.
    before = set(settled_workers(server))
    os.kill(server.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and set(server.worker_pids()) & before:
        time.sleep(0.1)
    assert not set(server.worker_pids()) & before, "SIGHUP did not replace the workers"
    assert infer_statuses(server, "flowers", [ROW]) == {404}
    assert index(server)[("flowers", "1")][0] == "UNLOADED"

    assert write(server, "load", "flowers").status_code == 200

    assert infer_statuses(server, "flowers", [ROW]) == {200}
    assert index(server)[("flowers", "1")] == ("READY", "")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'modelport_model_loaded{model="flowers",version="1"} 1.0' in metrics


def test_unloading_the_broken_model_leaves_the_server_ready(server: Server) -> None:
    assert httpx.get(f"{server.url}/readyz").status_code == 503  # tampered v2 is refused

    assert write(server, "unload", "tampered").status_code == 200

    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert write(server, "load", "tampered").status_code == 200  # v1 loads: 200
    assert httpx.get(f"{server.url}/readyz").status_code == 503
    assert index(server)[("tampered", "2")][0] == "UNAVAILABLE"


def test_a_model_copied_into_the_store_serves_after_load(
    server: Server, store: tuple[Path, int]
) -> None:
    staging = store[0].parent / "staging"
    estimator = write_line(staging, "fresh", slope=0.5)
    (staging / "fresh").rename(store[0] / "fresh")
    assert infer_statuses(server, "fresh", [[1.0, 2.0]]) == {404}

    assert write(server, "load", "fresh").status_code == 200

    assert infer_statuses(server, "fresh", [[1.0, 2.0]]) == {200}
    reply = post(server, "/models/fresh/predict", json={"instances": [[1.0, 2.0]]})
    expected = float(estimator.predict(np.array([[1.0, 2.0]]))[0])
    assert reply.json()["predictions"][0]["value"] == pytest.approx(expected)


def test_a_model_whose_every_version_fails_is_a_400_with_the_reason(
    server: Server, store: tuple[Path, int]
) -> None:
    write_line(store[0], "wreck")
    with (store[0] / "wreck" / "1" / "model.joblib").open("ab") as artifact:
        artifact.write(b"x")

    reply = write(server, "load", "wreck")

    assert reply.status_code == 400
    assert reply.json()["error"].startswith(
        "Model 'wreck' failed to load: version 1: SHA-256 mismatch"
    )
    assert write(server, "load", "nope").status_code == 404
    assert write(server, "unload", "wreck").status_code == 200  # back to a ready server


def test_loads_and_unloads_under_load_fail_no_request(
    server: Server, record_property: Callable[[str, object], None]
) -> None:
    """Clients keep predicting with another model, on kept-alive connections and on new ones,
    while a model is unloaded and loaded again: every request answers, with the right answer."""
    expected = post(server, "/models/line/predict", json={"instances": [[1.0, 2.0]]}).json()
    stop = threading.Event()
    answered: list[int] = []
    failures: list[str] = []

    def client(keep_alive: bool) -> None:
        with httpx.Client(base_url=server.url, timeout=WAIT) as kept:
            while not stop.is_set():
                try:
                    if keep_alive:
                        reply = kept.post("/models/line/predict", json={"instances": [[1.0, 2.0]]})
                    else:
                        reply = post(
                            server, "/models/line/predict", json={"instances": [[1.0, 2.0]]}
                        )
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                answered.append(reply.status_code)
                if reply.status_code != 200 or reply.json() != expected:
                    failures.append(f"{reply.status_code}: {reply.text[:200]}")

    threads = [threading.Thread(target=client, args=(n % 2 == 0,)) for n in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        writes = [write(server, verb, "flowers").status_code for verb in ("unload", "load")]
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=WAIT)
    seconds = time.monotonic() - started

    record_property(
        SUMMARY,
        f"{len(answered)} predictions in {seconds:.1f} s during an unload and a load: "
        f"{len(failures)} failed",
    )
    assert writes == [200, 200]
    assert failures == []
    assert len(answered) > 0


def test_models_stay_loaded_once_in_the_master_after_unload_and_load(
    server: Server, store: tuple[Path, int], record_property: Callable[[str, object], None]
) -> None:
    artifact_mb = store[1] / 1024 / 1024
    assert artifact_mb > 2 * RELOADED_WORKER_PRIVATE_MB  # a copy in a worker would show

    assert write(server, "unload", "big").status_code == 200
    assert infer_statuses(server, "big", [[1, 2, 3, 4]]) == {404}
    assert write(server, "load", "big").status_code == 200
    assert infer_statuses(server, "big", [[1, 2, 3, 4]], count=40) == {200}

    # Both workers have just answered with the model: one holding a copy of its own would
    # have it in its private memory (pages no other process maps).
    workers = [read_memory(pid, "worker") for pid in settled_workers(server)]
    record_property(
        SUMMARY,
        f"big model {artifact_mb:.0f} MB on disk, loaded again: "
        + ", ".join(
            f"worker {w.pid} private {w.private_mb:.1f} MB of {w.rss_mb:.0f} MB resident"
            for w in workers
        ),
    )
    for worker in workers:
        assert worker.private_mb <= RELOADED_WORKER_PRIVATE_MB, worker


def test_concurrent_writes_from_several_clients_all_apply(server: Server) -> None:
    names = ["flowers", "line", "tampered"]

    def apply(verb: str, name: str) -> int:
        reply = write(server, verb, name)
        for _ in range(5):  # a write that met a worker being replaced is told to retry
            if reply.status_code != 503:
                break
            assert reply.headers["retry-after"] == "1"
            time.sleep(1)
            reply = write(server, verb, name)
        return reply.status_code

    for verb, state in (("unload", "UNLOADED"), ("load", "READY")):
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            statuses = list(pool.map(partial(apply, verb), names))
        assert statuses == [200] * len(names)
        rows = index(server)
        assert [rows[(name, "1")][0] for name in names] == [state] * len(names)


def test_tritonclient_lists_unloads_and_loads(server: Server) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))

    listed = {
        (row["name"], row.get("version")): row["state"]
        for row in client.get_model_repository_index()
    }
    assert listed[("flowers", "1")] == "READY"
    client.unload_model("flowers")
    assert not client.is_model_ready("flowers")
    client.load_model("flowers")
    assert client.is_model_ready("flowers")


def test_the_models_verbs_of_the_cli(server: Server) -> None:
    url = ("--url", server.url)

    listed = run_cli("models", "index", *url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "REASON"]
    assert ["flowers", "1", "READY"] in [line.split() for line in lines]
    assert any(line.startswith("tampered  2") and "SHA-256 mismatch" in line for line in lines)

    unloaded = run_cli("models", "unload", "flowers", *url)
    assert unloaded.returncode == 0, unloaded.stderr
    assert unloaded.stdout.startswith("unloaded flowers")
    assert infer_statuses(server, "flowers", [ROW], count=4) == {404}

    loaded = run_cli("models", "load", "flowers", *url)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[1].split() == ["flowers", "1", "READY"]

    missing = run_cli("models", "load", "nope", *url)
    assert missing.returncode == 1
    assert "404: Model 'nope' is not in the model store" in missing.stderr
    ready = run_cli("models", "index", "--ready", *url)
    assert "UNAVAILABLE" not in ready.stdout and "READY" in ready.stdout


def test_writes_are_refused_unless_turned_on_or_guarded_by_the_key(
    tmp_path: Path,
) -> None:
    store = tmp_path / "models"
    write_line(store, "line")

    closed = start_server(store, tmp_path / "closed.log")
    try:
        reply = write(closed, "unload", "line")
        assert reply.status_code == 403
        assert "MODELPORT_REPOSITORY_WRITES=true" in reply.json()["error"]
        refused = run_cli("models", "unload", "line", "--url", closed.url)
        assert refused.returncode == 1 and "403" in refused.stderr
        assert run_cli("models", "index", "--url", closed.url).returncode == 0
    finally:
        stop_server(closed)

    keyed = start_server(store, tmp_path / "keyed.log", api_key=KEY)
    try:
        assert write(keyed, "unload", "line").status_code == 401
        with_key = run_cli("models", "unload", "line", "--url", keyed.url, "--api-key", KEY)
        assert with_key.returncode == 0, with_key.stderr
        assert index(keyed)[("line", "1")][0] == "UNLOADED"
    finally:
        stop_server(keyed)

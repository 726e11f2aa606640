"""Models loaded once in the gunicorn master and shared with forked workers: the workers answer
from the master's copy, models that run native thread pools (OpenMP) still work after the fork,
and SIGHUP makes the master reload the store before forking new workers."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from tests.conftest import flower_data, flower_features, write_model
from tests.e2e.conftest import Server, start_server, stop_server


def write_boosted_model(store: Path, version: int) -> HistGradientBoostingClassifier:
    """HistGradientBoosting predicts with OpenMP threads: the load-time self-check runs it in
    the master before the fork, and the workers must still predict with it after."""
    x, y = flower_data()
    estimator = HistGradientBoostingClassifier(max_iter=20 + version, random_state=0).fit(x, y)
    write_model(
        store,
        estimator,
        name="boosted",
        version=version,
        task="classification",
        features=flower_features(),
        classes=["setosa", "versicolor", "virginica"],
        example=[5.1, 3.5, 1.4, 0.2],
    )
    return estimator


def predict_from_every_worker(server: Server, rows: list[list[float]]) -> set[str]:
    """Answers to 40 concurrent requests on fresh connections (both workers take some); each
    must be the in-process answer. Returns the X-Model-Version values seen."""

    def one(_: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/models/boosted/predict", json={"instances": rows}, timeout=30
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(one, range(40)))
    assert all(reply.status_code == 200 for reply in replies), replies[0].text
    return {reply.headers["x-model-version"] for reply in replies}


def test_workers_answer_from_the_masters_models_and_a_reload_brings_a_new_version(
    tmp_path: Path,
) -> None:
    store = tmp_path / "models"
    first = write_boosted_model(store, 1)
    x, _ = flower_data()
    rows = np.abs(x[:5]).tolist()
    server = start_server(store, tmp_path / "serve.log")
    try:
        assert "loaded model boosted v1" in server.log.read_text()  # in the master, once
        assert predict_from_every_worker(server, rows) == {"1"}
        reply = httpx.post(f"{server.url}/models/boosted/predict", json={"instances": rows})
        labels = [item["label"] for item in reply.json()["predictions"]]
        assert labels == first.predict(np.asarray(rows)).tolist()
        workers = set(server.worker_pids())

        second = write_boosted_model(store, 2)
        os.kill(server.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (set(server.worker_pids()) & workers):
            time.sleep(0.2)
        assert not set(server.worker_pids()) & workers, "the old workers were not replaced"

        assert predict_from_every_worker(server, rows) == {"2"}  # the master reloaded
        reply = httpx.post(f"{server.url}/models/boosted/predict", json={"instances": rows})
        labels = [item["label"] for item in reply.json()["predictions"]]
        assert labels == second.predict(np.asarray(rows)).tolist()
        assert "reloading the model store in the master" in server.log.read_text()
    finally:
        stop_server(server)

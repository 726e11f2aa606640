"""Operating the real server: metrics summed across gunicorn workers, the JSON access log, and
the process lifecycle — SIGHUP reload (`modelport reload`), SIGTERM drain, a SIGKILLed worker.

Every test that signals a server starts its own, on its own copy of the store, and stops it."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from schemas.cards import ModelCard
from tests.e2e.conftest import (
    BIN,
    REPO,
    Server,
    free_port,
    run_cli,
    start_server,
    stop_server,
)
from tests.e2e.slow_model import MAGIC, SLEEP, target, write_sleepy_model

pytestmark = pytest.mark.e2e

ROW = [5.1, 3.5, 1.4, 0.2]
PINNED_ROUTE = "/models/{model_name}/versions/{version}/predict"
IRIS_V1 = "/models/iris/versions/1/predict"
FRESH = {"Connection": "close"}  # one connection per request: any worker may take it
GRACEFUL_TIMEOUT = 30  # the default of MODELPORT_GRACEFUL_TIMEOUT


def port_of(server: Server) -> str:
    return server.url.rsplit(":", 1)[1]


def scrape(server: Server, name: str, **labels: str) -> float:
    """Sum of the samples of `name` at /metrics whose labels include `labels` (0 when absent)."""
    reply = httpx.get(f"{server.url}/metrics", headers=FRESH, timeout=30)
    assert reply.status_code == 200, reply.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def predict_fresh(url: str, path: str = IRIS_V1, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}{path}", json={"instances": [ROW]}, headers={**FRESH, **headers}, timeout=30
    )


def stored_versions(store: Path) -> list[tuple[str, str]]:
    return sorted(
        (card.parent.parent.name, card.parent.name) for card in store.glob("*/*/card.json")
    )


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


# --- metrics and logs on a fresh server -----------------------------------------------------


@dataclass
class Observed:
    server: Server
    metrics_dir: Path


@pytest.fixture(scope="module")
def observed(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A fresh 2-worker server whose Prometheus multiprocess directory (which the gunicorn config
    honours when set) is known, so each worker's own samples can be read too."""
    root = tmp_path_factory.mktemp("observed")
    metrics_dir = root / "prometheus"
    store = shutil.copytree(trained_store, root / "models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        server = start_server(store, root / "serve.log")
    try:
        yield Observed(server, metrics_dir)
    finally:
        stop_server(server)


def predictions_by_worker(observed: Observed, pids: list[int]) -> dict[int, float]:
    """iris v1 predictions counted by each worker's own multiprocess file."""
    counts = {}
    for pid in pids:
        path = observed.metrics_dir / f"counter_{pid}.db"
        families = MultiProcessCollector.merge([str(path)]) if path.exists() else []  # type: ignore[no-untyped-call]
        counts[pid] = sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "modelport_predictions_total"
            and sample.labels == {"model": "iris", "version": "1"}
        )
    return counts


def test_metrics_count_every_prediction_whichever_worker_answered(observed: Observed) -> None:
    server = observed.server
    pids = server.worker_pids()
    assert len(pids) == 2
    predictions_before = scrape(server, "modelport_predictions_total", model="iris", version="1")
    requests_before = scrape(
        server, "modelport_requests_total", route=PINNED_ROUTE, method="POST", status="200"
    )
    by_worker_before = predictions_by_worker(observed, pids)

    sent = 0
    # Rounds of 40 over fresh connections from 4 threads, until both workers have served some
    # (nearly always the first round; bounded at 5).
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            replies = list(pool.map(lambda _: predict_fresh(server.url), range(40)))
            assert [r.status_code for r in replies] == [200] * 40
            sent += 40
            served = predictions_by_worker(observed, pids)
            if all(served[pid] > by_worker_before[pid] for pid in pids):
                break

    predictions_after = scrape(server, "modelport_predictions_total", model="iris", version="1")
    requests_after = scrape(
        server, "modelport_requests_total", route=PINNED_ROUTE, method="POST", status="200"
    )
    served = predictions_by_worker(observed, pids)
    assert sorted(server.worker_pids()) == sorted(pids)  # no worker restarted meanwhile
    assert all(served[pid] > by_worker_before[pid] for pid in pids), served
    assert predictions_after - predictions_before == sent
    assert sum(served.values()) - sum(by_worker_before.values()) == sent
    assert requests_after - requests_before == sent
    assert scrape(server, "modelport_predicted_rows_total", model="iris", version="1") >= sent


def test_metrics_show_every_bundled_version_loaded_and_label_routes_by_template(
    observed: Observed,
) -> None:
    server = observed.server
    versions = stored_versions(server.store)
    assert ("iris", "2") in versions and len(versions) == 6
    loaded = {
        (name, version): scrape(server, "modelport_model_loaded", model=name, version=version)
        for name, version in versions
    }
    assert loaded == dict.fromkeys(versions, 1.0)
    assert all(
        scrape(server, "modelport_model_load_seconds", model=name, version=version) > 0
        for name, version in versions
    )
    assert predict_fresh(server.url).status_code == 200
    assert httpx.get(f"{server.url}/no/such/path", headers=FRESH).status_code == 404

    text = httpx.get(f"{server.url}/metrics", headers=FRESH).text
    routes = {
        sample.labels["route"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelport_requests_total"
    }
    assert {PINNED_ROUTE, "/healthz", "unmatched"} <= routes
    assert not any(route.startswith(("/models/iris", "/no/")) for route in routes), routes


def access_log_lines(server: Server) -> list[dict[str, Any]]:
    """The server's JSON access-log lines (its other log lines are gunicorn's and the app's)."""
    records = []
    for line in server.log.read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)  # a torn or interleaved line would fail here
            records.append(record)
    return records


def test_access_log_has_one_json_line_per_request_with_its_id(observed: Observed) -> None:
    server = observed.server
    ids = [f"lifecycle-{i}" for i in range(12)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(lambda i: predict_fresh(server.url, **{"X-Request-ID": i}), ids))
    missing = httpx.post(
        f"{server.url}/models/nope/predict",
        json={"instances": [ROW]},
        headers={**FRESH, "X-Request-ID": "lifecycle-404"},
    )
    replaced = predict_fresh(server.url, **{"X-Request-ID": "not an id <b>"})

    assert [r.status_code for r in replies] == [200] * len(ids)
    assert [r.headers["x-request-id"] for r in replies] == ids
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "lifecycle-404"
    fresh_id = replaced.headers["x-request-id"]
    assert replaced.status_code == 200 and fresh_id != "not an id <b>"

    def lines_for(request_id: str) -> list[dict[str, Any]]:
        return [r for r in access_log_lines(server) if r["request_id"] == request_id]

    wait_for(lambda: len(lines_for(fresh_id)) == 1, 10, "the last request's log line")
    for request_id in ids:
        [record] = lines_for(request_id)
        assert record["method"] == "POST"
        assert (record["route"], record["path"]) == (PINNED_ROUTE, IRIS_V1)
        assert (record["status"], record["model"], record["version"]) == (200, "iris", 1)
        assert isinstance(record["latency_ms"], float) and isinstance(record["time"], str)
    [not_found] = lines_for("lifecycle-404")
    assert (not_found["status"], not_found["model"], not_found["version"]) == (404, "nope", None)
    assert lines_for(fresh_id)[0]["path"] == IRIS_V1
    assert "not an id" not in server.log.read_text()


# --- lifecycle: each test starts (and stops) its own server ----------------------------------


@dataclass
class Load:
    """Predictions sent one after another over fresh connections, every outcome recorded."""

    url: str
    outcomes: list[int | str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, limit: int = 2000, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and len(self.outcomes) < limit:
            if time.monotonic() > deadline:
                break
            try:
                self.outcomes.append(predict_fresh(self.url).status_code)
            except httpx.HTTPError as exc:
                self.outcomes.append(type(exc).__name__)
            time.sleep(0.005)  # paced, so the request bound outlasts a reload


def add_version(store: Path, name: str, source: int, version: int) -> None:
    """Copy a version directory under a new number: same artifact, card renumbered."""
    target_dir = shutil.copytree(store / name / str(source), store / name / str(version))
    card = ModelCard.model_validate_json((target_dir / "card.json").read_bytes())
    renumbered = card.model_copy(update={"version": version})
    (target_dir / "card.json").write_text(renumbered.model_dump_json(indent=2))


def test_reload_replaces_workers_and_serves_a_new_version_without_failing_a_request(
    trained_store: Path, tmp_path: Path
) -> None:
    store = shutil.copytree(trained_store, tmp_path / "models")
    server = start_server(store, tmp_path / "serve.log")
    load = Load(server.url)
    thread = threading.Thread(target=load.run, daemon=True)
    try:
        before = set(server.worker_pids())
        v1_reply = predict_fresh(server.url)
        assert v1_reply.status_code == 200
        thread.start()
        wait_for(lambda: len(load.outcomes) >= 20, 10, "the load to start")

        add_version(store, "iris", 1, 3)
        reload = run_cli("reload", env={"MODELPORT_PORT": port_of(server)})
        assert reload.returncode == 0, reload.stderr
        assert f"pid {server.process.pid}" in reload.stdout

        def reloaded() -> bool:
            pids = server.worker_pids()
            if len(pids) != 2 or set(pids) & before:
                return False
            listings = [httpx.get(f"{server.url}/models/iris", headers=FRESH) for _ in range(4)]
            return all(3 in reply.json()["versions"] for reply in listings)

        wait_for(reloaded, 60, "both workers to be replaced and list iris v3")
        confirmed_at = len(load.outcomes)
        v3_reply = predict_fresh(server.url, "/models/iris/versions/3/predict")
        wait_for(lambda: len(load.outcomes) >= confirmed_at + 20, 10, "load after the reload")
        load.stop.set()
        thread.join(timeout=30)
        # Counts of the retired workers survive them: every v1 prediction of this server.
        counted = scrape(server, "modelport_predictions_total", model="iris", version="1")
        loaded = scrape(server, "modelport_model_loaded", model="iris", version="3")
    finally:
        load.stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
        stop_server(server)

    assert v3_reply.status_code == 200, v3_reply.text
    assert v3_reply.json()["model_version"] == 3
    assert v3_reply.json()["predictions"] == v1_reply.json()["predictions"]  # same artifact
    failed = [outcome for outcome in load.outcomes if outcome != 200]
    assert not failed, f"{len(failed)} of {len(load.outcomes)} requests failed: {failed[:10]}"
    assert counted == len(load.outcomes) + 1 and loaded == 1
    assert "Handling signal: hup" in server.log.read_text()


def test_sigterm_drains_the_in_flight_request_then_exits_cleanly(tmp_path: Path) -> None:
    store = tmp_path / "models"
    write_sleepy_model(store)
    server = start_server(store, tmp_path / "serve.log")
    row = [MAGIC, 1.0]
    outcome: dict[str, Any] = {}

    def slow_request() -> None:
        started = time.monotonic()
        try:
            outcome["reply"] = httpx.post(
                f"{server.url}/models/sleepy/predict", json={"instances": [row]}, timeout=60
            )
        except httpx.HTTPError as exc:
            outcome["error"] = repr(exc)
        outcome["took"] = time.monotonic() - started
        outcome["done_at"] = time.monotonic()

    thread = threading.Thread(target=slow_request, daemon=True)
    try:
        quick = httpx.post(f"{server.url}/models/sleepy/predict", json={"instances": [[1.0, 2.0]]})
        assert quick.status_code == 200, quick.text
        thread.start()
        time.sleep(1.0)  # the request is in the model's SLEEP-second predict by now
        assert "reply" not in outcome and "error" not in outcome
        signalled_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=GRACEFUL_TIMEOUT + 10)
        code = server.process.wait(timeout=GRACEFUL_TIMEOUT + 15)
    finally:
        stop_server(server)
        if thread.is_alive():
            thread.join(timeout=10)

    assert "error" not in outcome, outcome["error"]
    reply = outcome["reply"]
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == [{"value": pytest.approx(target([row])[0], rel=1e-9)}]
    assert outcome["took"] >= SLEEP and outcome["done_at"] > signalled_at
    assert code == 0
    assert "Handling signal: term" in server.log.read_text()


def test_a_killed_worker_is_replaced_and_requests_keep_being_answered(
    trained_store: Path, tmp_path: Path
) -> None:
    store = shutil.copytree(trained_store, tmp_path / "models")
    server = start_server(store, tmp_path / "serve.log")
    try:
        before = server.worker_pids()
        assert len(before) == 2
        victim = before[0]  # a child of the master this test started (worker_pids checks ppid)
        os.kill(victim, signal.SIGKILL)
        during: list[int | str] = []

        def replaced() -> bool:
            try:
                during.append(predict_fresh(server.url).status_code)
            except httpx.HTTPError as exc:
                during.append(type(exc).__name__)
            pids = server.worker_pids()
            return len(pids) == 2 and victim not in pids

        wait_for(replaced, 30, "the master to replace the killed worker")
        after = [predict_fresh(server.url).status_code for _ in range(20)]
        pids_after = server.worker_pids()
        master_alive = server.process.poll() is None
    finally:
        stop_server(server)

    assert master_alive
    assert len(set(pids_after) - set(before)) == 1 and victim not in pids_after
    assert 200 in during, during  # the surviving worker kept answering meanwhile
    assert after == [200] * 20


def reload_in_own_session(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`modelport reload` in a session of its own: whatever a bad PID file makes it signal, the
    signal cannot reach beyond the process this test started."""
    return subprocess.run(
        [str(BIN / "modelport"), "reload"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    "content", [None, "", "not-a-pid\n", "0\n"], ids=["absent", "empty", "garbage", "zero"]
)
def test_reload_without_a_running_server_fails_with_a_clear_message(
    tmp_path: Path, content: str | None
) -> None:
    pid_file = tmp_path / "modelport.pid"
    if content is not None:
        pid_file.write_text(content)

    result = reload_in_own_session({"MODELPORT_PID_FILE": str(pid_file)})

    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "modelport reload: no running server found" in result.stderr
    assert str(pid_file) in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_reload_looks_for_the_default_pid_file_of_the_configured_port() -> None:
    port = free_port()
    default = Path(f"/tmp/modelport-{port}.pid")
    if default.exists():
        pytest.skip(f"{default} exists: not ours to signal")

    result = run_cli("reload", env={"MODELPORT_PORT": str(port)})

    assert result.returncode == 1
    assert str(default) in result.stderr and "Traceback" not in result.stderr

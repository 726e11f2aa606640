"""deploy/grafana/modelport.json: its structure, and every panel's query run by Debian's real
Prometheus against a real `modelport serve` it scrapes.

Grafana is not in Debian, so Grafana itself never loads the file here: the structure is checked
against Grafana's documented dashboard JSON model, and the queries against Prometheus, with the
dashboard's variables filled in as Grafana would fill them.
"""

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import Counter, Gauge, Histogram

from app import metrics
from tests.conftest import build_store, flower_rows, pet_rows
from tests.e2e.conftest import REPO, Server, free_port, start_server, stop_server
from tests.e2e.slow_model import MAGIC, write_sleepy_model

DASHBOARD = REPO / "deploy" / "grafana" / "modelport.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Labelled by route, not model: the only metrics the model variable cannot filter.
HTTP_METRICS = frozenset({"modelport_requests_total", "modelport_request_duration_seconds"})
SCRAPE_INTERVAL_SECONDS = 1
# What Grafana puts in $__rate_interval for a datasource with the default 15 s scrape interval
# (four intervals); it covers every scrape this test makes.
RATE_INTERVAL = "1m"
# The models the traffic reaches, as Grafana writes the values picked in a multi-value variable
# into a regex matcher.
SELECTED_MODELS = "(flowers|pets|sleepy)"
TRAFFIC_ROUNDS = 3

Doc = dict[str, Any]


def load_dashboard() -> Doc:
    dashboard: Doc = json.loads(DASHBOARD.read_text())
    return dashboard


def query_panels(dashboard: Doc) -> list[Doc]:
    """Every panel that queries (rows only group), including those inside collapsed rows."""
    found = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bmodelport_[a-z_]+\b", expr))


def family_of(sample: str) -> str:
    """The family a sample name belongs to: histograms add _bucket, _sum and _count."""
    return re.sub(r"_(bucket|sum|count)$", "", sample)


def exported_samples() -> set[str]:
    """The sample names app/metrics.py exports (prometheus_client drops a counter's _total from
    its name and adds it back to the sample)."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Histogram):
            names.update(f"{value._name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def substitute(expr: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$model", SELECTED_MODELS)


# --- the file ---------------------------------------------------------------------------------


def test_dashboard_follows_grafanas_json_model() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "modelport"
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert "id" not in dashboard  # Grafana assigns it on import; a fixed one would clash
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels] + [
        inner["id"] for panel in panels for inner in panel.get("panels", [])
    ]
    assert all(isinstance(panel_id, int) for panel_id in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for row in range(grid["y"], grid["y"] + grid["h"]):
            for column in range(grid["x"], grid["x"] + grid["w"]):
                assert (row, column) not in cells, f"{panel['title']} overlaps {cells[row, column]}"
                cells[row, column] = panel["title"]
    for panel in query_panels(dashboard):
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({target["refId"] for target in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["title"]


def test_datasource_and_model_are_variables() -> None:
    """No datasource uid of the exporting Grafana: the dashboard imports into any Grafana, and
    the panels follow the datasource and models picked at the top."""
    dashboard = load_dashboard()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query"
    assert model["datasource"] == DATASOURCE
    assert model["multi"] is True and model["includeAll"] is True
    # Grafana's Prometheus function for a variable's values, run by the test below as the
    # label-values call it stands for.
    assert model["query"] == "label_values(modelport_model_loaded, model)"

    def datasources(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "datasource" in node:
                yield node["datasource"]
            for value in node.values():
                yield from datasources(value)
        elif isinstance(node, list):
            for value in node:
                yield from datasources(value)

    builtin = {"type": "grafana", "uid": "-- Grafana --"}  # the annotations' own
    assert all(ds in (DATASOURCE, builtin) for ds in datasources(dashboard))
    not_following = [
        f"{panel['title']}: {metric}{matchers}"
        for panel in query_panels(dashboard)
        for target in panel["targets"]
        for metric, matchers in re.findall(r"\b(modelport_[a-z_]+)(\{[^}]*\})?", target["expr"])
        if family_of(metric) not in HTTP_METRICS and 'model=~"$model"' not in matchers
    ]
    assert not_following == [], "every metric with a model label must follow the variable"


def test_every_metric_charted_exists() -> None:
    exported = exported_samples()
    unknown = {
        name
        for panel in query_panels(load_dashboard())
        for target in panel["targets"]
        for name in metric_names(target["expr"])
        if name not in exported
    }
    assert unknown == set()


# --- the queries, against a real Prometheus -----------------------------------------------------


def require_prometheus() -> str:
    """Debian's prometheus. Skips without it, except under CI=true (.ci/run installs it)."""
    binary = shutil.which("prometheus")
    if binary is None:
        reason = "prometheus is not installed (apt-get install --no-install-recommends prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: .ci/run installs it")
        pytest.skip(reason)
    return binary


class Prometheus:
    """A Prometheus on a loopback port scraping one target, its storage in a temporary dir."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {
                        "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                        "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                    },
                    "scrape_configs": [
                        {
                            "job_name": "modelport",
                            "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    "--log.level=warn",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> Doc:
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body: Doc = reply.json()
        return body

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready within {timeout} s:\n{self.log.read_text()}")

    def last_scrape(self) -> float:
        """When the last successful scrape started (0 before the first). `timestamp()` gives a
        sample's own time only when applied to a selector: on an expression (`up == 1`) it
        gives the evaluation time."""
        query = 'timestamp(up{job="modelport"}) and up{job="modelport"} == 1'
        found = self.api("query", query=query)["data"]["result"]
        return float(found[0]["value"][1]) if found else 0.0

    def wait_scrape_after(self, moment: float, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.last_scrape() <= moment:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no scrape after {moment} within {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def drive_round(client: httpx.Client) -> None:
    """Predictions on two models (one row and many), over both HTTP surfaces, and some 4xx."""
    flowers, pets = flower_rows(), pet_rows()
    answers = [
        client.post("/models/flowers/predict", json={"instances": flowers[:1]}),
        client.post("/models/flowers/predict", json={"instances": flowers}),
        client.post("/models/pets/predict", json={"instances": pets}),
        client.post(
            "/v2/models/flowers/infer",
            json={
                "inputs": [
                    {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": flowers[:2]}
                ]
            },
        ),
    ]
    assert [answer.status_code for answer in answers] == [200] * len(answers), answers[-1].text
    assert client.post("/models/nope/predict", json={"instances": [[1.0]]}).status_code == 404
    wrong_width = client.post("/models/pets/predict", json={"instances": [[1.0]]})
    assert wrong_width.status_code == 422


def hold_a_queue(pool: ThreadPoolExecutor, url: str) -> list[Future[httpx.Response]]:
    """Requests queued behind a slow (SLEEP s) estimator call on the one worker, with a deadline shorter
    than their wait: admission control (issue 18) refuses them (429) or times them out (504),
    and its refusal and deadline metrics appear. Without it they wait their turn (200)."""

    def post(first: float, timeout: str | None) -> httpx.Response:
        headers = {"X-Request-Timeout": timeout} if timeout else {}
        return httpx.post(
            f"{url}/models/sleepy/predict",
            json={"instances": [[first, 1.0]]},
            headers=headers,
            timeout=30,
        )

    holding = pool.submit(post, MAGIC, None)
    time.sleep(1)  # the slow call has started: these queue behind it
    return [holding, *(pool.submit(post, 1.0, "0.5") for _ in range(3))]


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[Server, Prometheus]]:
    binary = require_prometheus()
    store = build_store(tmp_path / "models")
    write_sleepy_model(store)
    port = free_port()
    # Started first: Prometheus hands new targets to its scrapers only every 5 s, so its
    # first scrape comes about 5 s after it starts; the server starts meanwhile.
    prometheus = Prometheus(binary, tmp_path, f"127.0.0.1:{port}")
    try:
        # One worker: the requests of hold_a_queue reach the same queue.
        server = start_server(store, tmp_path / "serve.log", port=port, workers="1")
        try:
            prometheus.wait_ready()
            yield server, prometheus
        finally:
            stop_server(server)
    finally:
        prometheus.stop()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_every_panel_query_returns_data(scraped: tuple[Server, Prometheus]) -> None:
    server, prometheus = scraped
    with server.client() as client, ThreadPoolExecutor(max_workers=4) as pool:
        held = hold_a_queue(pool, server.url)
        for _ in range(TRAFFIC_ROUNDS):
            drive_round(client)
            # Every round lands in its own scrape, so every counter has grown between two samples.
            prometheus.wait_scrape_after(time.time())
        assert {answer.result(timeout=30).status_code for answer in held} <= {200, 429, 504}
    prometheus.wait_scrape_after(time.time())

    loaded = prometheus.api("label/model/values", **{"match[]": "modelport_model_loaded"})
    assert {"flowers", "pets", "line", "sleepy"} <= set(loaded["data"])  # the model variable

    empty = []
    for panel in query_panels(load_dashboard()):
        for target in panel["targets"]:
            expr = substitute(target["expr"])
            assert "$" not in expr, f"{panel['title']}: unsubstituted variable in {expr}"
            answer = prometheus.api("query", query=expr)
            assert answer["status"] == "success", f"{panel['title']}: {expr}: {answer}"
            values = [float(series["value"][1]) for series in answer["data"]["result"]]
            if not any(math.isfinite(value) for value in values):
                empty.append(f"{panel['title']} [{target['refId']}]: {expr} -> {values}")
    assert empty == [], "panels without data:\n" + "\n".join(empty)

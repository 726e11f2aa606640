"""`make bench-quick` end to end: the harness drives every configuration and writes its results.

No speed thresholds: this proves the benchmark runs and that every server answered every
request correctly, on whatever machine runs the suite.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGURATIONS = {"flask", "naive", "constant", "bare", "modelport"}
SCENARIOS = {"iris-64", "forest-64", "hist-64", "iris-1", "forest-1", "hist-1"}
# Issue 16's targets for modelport: scenario -> (description, bound, direction) of each.
THROUGHPUT_TARGETS = {
    "iris-64": {("≥ 0.9× constant route", 0.9, "at_least")},
    "forest-64": {("≥ 0.8× constant route", 0.8, "at_least"), ("≥ 30× Flask", 30, "at_least")},
    "hist-64": set(),  # the issue sets none for hist-cancer
    "iris-1": {("p50 ≤ 1.5× constant route", 1.5, "at_most")},
    "forest-1": {("p50 ≤ 2× constant route", 2.0, "at_most")},
    "hist-1": set(),
}
MODELS = {"iris", "breast-cancer", "hist-cancer"}
FAST_BACKENDS = {"numpy-linear", "numpy-trees"}

pytestmark = pytest.mark.e2e


def _require_load_tools() -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"the benchmark needs {' and '.join(missing)} (apt-get install wrk util-linux)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide them (.ci/run installs wrk)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    _require_load_tools()
    output = tmp_path_factory.mktemp("bench")
    # Servers and load on different cores when there are two; sharing one still proves the run.
    cores = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cores[0], cores[-1]
    command = [
        sys.executable, "-m", "benchmarks", "--quick",
        "--output-dir", str(output),
        "--cache-dir", str(tmp_path_factory.mktemp("forest-cache")),
        "--server-cpu", str(server_cpu),
        "--client-cpu", str(client_cpu),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return output, json.loads((output / "latest.json").read_text())


def test_every_configuration_answered_every_request(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    _, results = quick_run
    scenarios = {scenario["key"]: scenario for scenario in results["throughput"]}
    assert set(scenarios) == SCENARIOS
    for key, scenario in scenarios.items():
        configurations = {c["key"]: c for c in scenario["configurations"]}
        assert set(configurations) == CONFIGURATIONS, key
        for name, configuration in configurations.items():
            assert configuration["rounds"], (key, name)
            for run in configuration["rounds"]:
                assert run["requests"] > 0, (key, name)
                assert run["non_2xx"] == 0, (key, name, run)
                assert run["socket_errors"] == 0, (key, name, run)
            assert set(configuration["ratios"]) == {"flask", "naive", "constant", "bare"}
        assert not scenario["left_out"], key  # the Flask prototype and naive port serve them all


def test_issue_16_targets_are_checked(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    for scenario in results["throughput"]:
        by_key = {c["key"]: c for c in scenario["configurations"]}
        # Checked, whatever the verdict, and only for modelport.
        found = {
            (check["description"], check["bound"], check["direction"])
            for check in by_key["modelport"]["targets"]
        }
        assert found == THROUGHPUT_TARGETS[scenario["key"]], scenario["key"]
        for name, configuration in by_key.items():
            if name != "modelport":
                assert not configuration["targets"], (scenario["key"], name)
    bulk = {timing["key"]: timing["target"] for timing in results["bulk"]["timings"]}
    assert bulk["modelport_json"]["bound"] == 1.3
    assert bulk["modelport_csv"]["bound"] == 1.2
    added = [
        check["bound"]
        for check in results["memory"]["targets"]
        if "each worker beyond the first adds" in check["description"]
    ]
    assert added == [15.0]


def test_backends_read_from_modelport(quick_run: tuple[Path, dict[str, Any]]) -> None:
    output, results = quick_run
    backends = {backend["model"]: backend for backend in results["backends"]}
    assert set(backends) == MODELS
    for model, backend in backends.items():
        assert backend["version"] >= 1, model
        # A fast backend, or scikit-learn with the reason it serves instead.
        assert backend["name"] in FAST_BACKENDS or backend["reason"], (model, backend)
    markdown = (output / "latest.md").read_text()
    line = next(line for line in markdown.splitlines() if line.startswith("Backends "))
    for model, backend in backends.items():
        assert f"{model} v{backend['version']} {backend['name']}" in line


def test_bulk_requests_answered_every_row(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    timings = {timing["key"]: timing for timing in results["bulk"]["timings"]}
    assert {"predict", "modelport_json", "modelport_records", "modelport_csv"} <= set(timings)
    for key, timing in timings.items():
        assert timing["failures"] == 0, key
        assert timing["seconds"] and all(s > 0 for s in timing["seconds"]), key
    assert timings["modelport_json"]["target"] is not None
    assert timings["modelport_csv"]["target"] is not None


def test_stream_answered_every_row_in_order(quick_run: tuple[Path, dict[str, Any]]) -> None:
    output, results = quick_run
    stream = results["stream"]
    assert stream["model"] == "breast-cancer"
    assert stream["rows"] == stream["rows_answered"] >= 50_000
    assert stream["in_order"] and stream["problem"] is None
    assert stream["rss_samples"] > 0 and 0 < stream["rss_before_mb"] <= stream["rss_max_mb"]
    assert stream["rows_per_s"] > 0 and stream["predict_rows_per_s"] > 0
    assert {(check["bound"], check["direction"]) for check in stream["targets"]} == {
        (150.0, "at_most"),
        (0.7, "at_least"),
    }
    assert (
        "rows streamed to breast-cancer in one request (issue 21)"
        in (output / "latest.md").read_text()
    )


def test_memory_section_is_sane(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    memory = results["memory"]
    stages = {stage["key"]: stage for stage in memory["stages"]}
    assert set(stages) == {"one_worker", "two_workers", "after_reload"}
    for key, stage in stages.items():
        roles = [process["role"] for process in stage["processes"]]
        assert roles.count("master") == 1, key
        assert roles.count("worker") == stage["workers"], key
        assert stage["warmed"], key
        for process in stage["processes"]:
            # A Python process serving a model maps megabytes, and cannot own more than it maps.
            assert 1 < process["pss_mb"] <= process["rss_mb"] < 4096, (key, process)
            assert 0 < process["private_mb"] <= process["rss_mb"], (key, process)
    assert stages["one_worker"]["served_version"] == 1
    assert memory["reload_ok"], "after SIGHUP with v2 in the store, v2 should be served"
    assert len(memory["targets"]) == 1
    assert memory["reload_check"]["bound"] == 25.0


def test_table_and_chart_written(quick_run: tuple[Path, dict[str, Any]]) -> None:
    output, results = quick_run
    assert results["meta"]["mode"] == "quick"
    assert results["meta"]["rounds_dropped"]["count"] == 0
    assert len(results["meta"]["load_average_at_start"]) == 3
    markdown = (output / "latest.md").read_text()
    header = markdown.split("### Summary", 1)[0]
    assert "Load average at start " in header
    assert "0 rounds dropped" in header
    assert "issue 16's targets" in markdown
    assert "| **modelport** |" in markdown
    assert "Targets met:" in markdown
    assert (output / "latest.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(output.glob("*.tmp"))


def test_overload_scenario_ran(quick_run: tuple[Path, dict[str, Any]]) -> None:
    output, results = quick_run
    overload = results["overload"]
    saturating = overload["saturation_connections"]
    assert overload["model"] == "breast-cancer"
    assert saturating in [step["connections"] for step in overload["steps"]]
    for key in ("saturation", "overload", "storm"):
        view = overload[key]
        assert view["requests"] > 0 and view["ok"]["count"] > 0, (key, view)
        # Every reply matched to its request, and only 200, 429 and 504 among them.
        assert view["unmatched"] == 0 and view["other"] == 0, (key, view)
        assert view["other_5xx"] == 0 and view["socket_errors"] == 0, (key, view)
        # The server's own timing of the same replies, from its access log.
        assert view["server_latency"]["200"]["count"] > 0, (key, view)
    assert overload["saturation"]["timeout_s"] is None
    assert overload["overload"]["connections"] == 3 * saturating
    assert overload["overload"]["timeout_s"] > 0 and overload["overload"]["honours_retry_after"]
    assert not overload["storm"]["honours_retry_after"]
    # Checked, whatever the verdict on this machine.
    assert [check["description"] for check in overload["targets"]] == [
        "admitted p99 ≤ 2× p99 at saturation",
        "replies after their deadline",
        "refusals' p99 ≤ 5 ms",
        "5xx other than 504",
    ]
    assert "### Overload: the breast-cancer forest" in (output / "latest.md").read_text()


def test_explain_section_checks_issue_19s_targets(quick_run: tuple[Path, dict[str, Any]]) -> None:
    output, results = quick_run
    explain = results["explain"]
    for key in ("explain", "predict", "without_logging", "with_logging"):
        assert explain[key], key
        for run in explain[key]:
            assert run["requests"] > 0, key
            assert run["non_2xx"] == 0 and run["socket_errors"] == 0, (key, run)
    # Every request to the logging server was logged (warm-up and readiness probes included).
    assert explain["logged_records"] >= sum(run["requests"] for run in explain["with_logging"])
    found = {
        (check["description"], check["bound"], check["direction"]) for check in explain["targets"]
    }
    assert found == {
        ("forest explain p50 ≤ 3× predict p50", 3.0, "at_most"),
        ("iris throughput with payload logging ≥ 0.9× without", 0.9, "at_least"),
    }
    assert "### Explanations and payload logging" in (output / "latest.md").read_text()

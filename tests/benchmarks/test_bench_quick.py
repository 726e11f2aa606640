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
SCENARIOS = {"iris-64", "forest-64", "iris-1"}

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
        timeout=240,
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
        assert configurations["modelport"]["targets"], key  # checked, whatever the verdict


def test_bulk_requests_answered_every_row(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    timings = {timing["key"]: timing for timing in results["bulk"]["timings"]}
    assert {"predict", "modelport_json", "modelport_records", "modelport_csv"} <= set(timings)
    for key, timing in timings.items():
        assert timing["failures"] == 0, key
        assert timing["seconds"] and all(s > 0 for s in timing["seconds"]), key
    assert timings["modelport_json"]["target"] is not None
    assert timings["modelport_csv"]["target"] is not None


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
    assert len(memory["targets"]) == 2


def test_table_and_chart_written(quick_run: tuple[Path, dict[str, Any]]) -> None:
    output, results = quick_run
    assert results["meta"]["mode"] == "quick"
    markdown = (output / "latest.md").read_text()
    assert "| **modelport** |" in markdown
    assert "Targets met:" in markdown
    assert (output / "latest.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(output.glob("*.tmp"))

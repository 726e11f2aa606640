"""End-to-end fixtures: a real `modelport serve` (gunicorn + uvicorn workers) on a free loopback port."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import pytest

from tests.conftest import fit_pets_pipeline
from tests.e2e.container import Podman, missing_requirements

logger = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "modelport"), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    store: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def worker_pids(self) -> list[int]:
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                children.append(int(stat.parent.name))
        return children


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def read_reply(conn: socket.socket) -> tuple[bytes, bytes]:
    """Status line and headers, and the body (by Content-Length), of one HTTP reply read from a
    raw socket. A reset ends the read: whatever arrived before it is returned."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        return data, b""
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    try:
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        pass
    return head, body


def start_server(
    store: Path, log: Path, *, port: int | str | None = None, **settings: str
) -> Server:
    """`port`: one chosen beforehand (a scraper configured before the server starts); else a
    free one. (Typed to accept a string too, so callers may pass on `**settings` of strings.)"""
    port = int(port) if port else free_port()
    env = {
        **os.environ,
        "MODELPORT_HOST": "127.0.0.1",
        "MODELPORT_PORT": str(port),
        "MODELPORT_MODEL_DIR": str(store),
        "MODELPORT_WORKERS": "2",
        **{f"MODELPORT_{key.upper()}": value for key, value in settings.items()},
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(BIN / "modelport"), "serve"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log=log, store=store)
    workers = int(env["MODELPORT_WORKERS"])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"modelport serve exited with {process.returncode}:\n{log.read_text()}"
            )
        try:
            # Workers are forked from a master that has loaded the store, so the first answers
            # before the last is forked: wait for all of them, so tests see a settled set.
            answered = httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200
            if answered and len(server.worker_pids()) == workers:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"modelport serve did not answer within 90 s:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled examples, built by the real CLI, plus a user's DataFrame pipeline imported by it."""
    store = tmp_path_factory.mktemp("e2e") / "models"
    trained = run_cli("train", "--model-dir", str(store))
    assert trained.returncode == 0, trained.stderr
    artifact = store.parent / "pets.joblib"
    joblib.dump(fit_pets_pipeline(), artifact)
    imported = run_cli("import", str(artifact), "--name", "pets", "--model-dir", str(store))
    assert imported.returncode == 0, imported.stderr
    return store


@pytest.fixture(scope="session")
def server(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(trained_store, tmp_path_factory.mktemp("logs") / "serve.log")
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """The product image, built once per session from a local Debian base with wheels from the
    host, for every test that runs it (test_container, test_kube_play); all storage removed
    afterwards."""
    if missing := missing_requirements():
        reason = "cannot build the container image here; needs " + "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI installs these (.ci/run): never skip there
        pytest.skip(reason)
    podman = Podman(tmp_path_factory.mktemp("container"))
    try:
        podman.import_base()
        podman.build(podman.build_context())
        yield podman
    finally:
        with podman.timed("teardown"):
            podman.remove()
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in podman.durations.items())
        logger.info("container steps: %s", steps)


SUMMARY = "summary"  # a test's `record_property(SUMMARY, ...)` lines are shown after the run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each test's one-line summaries (request counts, seeds, timings), passed or failed."""
    lines = [
        f"{report.nodeid}: {value}"
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "") == "call"
        for name, value in report.user_properties
        if name == SUMMARY
    ]
    if lines:
        terminalreporter.write_sep("-", "e2e summaries")
        for line in lines:
            terminalreporter.write_line(line)

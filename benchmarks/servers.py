"""Start the servers under test on a loopback port, pinned to one core, and stop them by PID."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

logger = logging.getLogger("benchmarks")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
UVICORN_WORKER = "uvicorn_worker.UvicornWorker"


class ServerError(RuntimeError):
    """A server did not start, or did not answer as it should."""


def run_modelport(*args: str, timeout: float) -> None:
    """One `modelport` CLI command (train, import), as a user runs it; ServerError if it fails."""
    done = subprocess.run(
        [str(BIN / "modelport"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ServerError(f"modelport {args[0]} failed:\n{done.stdout}\n{done.stderr}")


@dataclass(frozen=True)
class Configuration:
    """One way of serving the models. `gunicorn_app` is a `module:app` path served by plain
    gunicorn; None means modelport itself, through `modelport serve`."""

    key: str
    label: str
    gunicorn_app: str | None = None
    worker_class: str = UVICORN_WORKER


FLASK = Configuration("flask", "Flask prototype", "benchmarks.apps.flask_prototype:app", "sync")
NAIVE = Configuration("naive", "naive FastAPI port", "benchmarks.apps.naive_fastapi:app")
CONSTANT = Configuration(
    "constant", "ceiling: FastAPI constant route", "benchmarks.apps.constant_fastapi:app"
)
BARE_ASGI = Configuration("bare", "ceiling: bare ASGI + orjson", "benchmarks.apps.bare_asgi:app")
MODELPORT = Configuration("modelport", "modelport")


@dataclass
class RunningServer:
    configuration: Configuration
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return child_pids(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: fields start after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return sorted(children)


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of `pid` in clock ticks, or -1 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return -1
    return int(fields[11]) + int(fields[12])  # utime and stime (fields 14 and 15 of stat)


def _clean_environment() -> dict[str, str]:
    # A MODELPORT_* setting from the caller's shell (an API key, a row limit) would change what
    # is measured: every server gets exactly the settings given here.
    return {key: value for key, value in os.environ.items() if not key.startswith("MODELPORT_")}


def start_server(
    configuration: Configuration,
    *,
    store: Path,
    cpu: int,
    log_dir: Path,
    workers: int = 1,
    access_log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> RunningServer:
    """Start `configuration` with `workers` workers, master and workers pinned to `cpu`
    (`env`: settings of modelport's own, e.g. payload logging or a gRPC port).
    `access_log`: where modelport's stdout (its JSON access log) goes; by default nowhere.

    Returns once the process is running; call `wait_ready` before sending load.
    """
    port = free_port()
    extra = dict(env or {})
    env = _clean_environment() | {"MODELPORT_MODEL_DIR": str(store), "PYTHONPATH": str(REPO)}
    if configuration.gunicorn_app is None:
        env |= {
            "MODELPORT_HOST": HOST,
            "MODELPORT_PORT": str(port),
            "MODELPORT_WORKERS": str(workers),
            "MODELPORT_PID_FILE": str(log_dir / f"modelport-{port}.pid"),
            # Its gRPC port only where a section asks for one: a fixed default port would be
            # shared (SO_REUSEPORT) by every modelport the harness starts.
            "MODELPORT_GRPC_PORT": "0",
        } | extra
        command = [str(BIN / "modelport"), "serve"]
        # Not the repository: pydantic-settings would read a developer's .env there.
        cwd = log_dir
    else:
        command = [
            sys.executable, "-m", "gunicorn", configuration.gunicorn_app,
            "--workers", str(workers),
            "--worker-class", configuration.worker_class,
            "--bind", f"{HOST}:{port}",
            # gunicorn's control socket defaults to one path under $HOME that concurrent
            # servers would fight over; nothing here uses it.
            "--no-control-socket",
            "--log-level", "warning",
        ]  # fmt: skip
        cwd = REPO
    log = log_dir / f"{configuration.key}-{port}.log"
    with log.open("wb") as sink, ExitStack() as stack:
        # taskset execs the server, so the PID is gunicorn's master; its workers inherit the
        # pinning. stdout is modelport's JSON access log, which would only fill the disk unless
        # asked for.
        stdout = stack.enter_context(access_log.open("wb")) if access_log else subprocess.DEVNULL
        process = subprocess.Popen(
            ["taskset", "-c", str(cpu), *command],
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=sink,
        )
    logger.info(
        "started %s (pid %d) on port %d, core %d", configuration.label, process.pid, port, cpu
    )
    return RunningServer(configuration, f"http://{HOST}:{port}", process, log)


def wait_ready(
    server: RunningServer,
    path: str,
    body: bytes,
    *,
    timeout_s: float = 120,
) -> httpx.Response:
    """Poll until `POST path` answers 200; the first such response is returned.

    Refused connections mean the server is still booting; a server that does answer, but
    wrongly, ten times in a row is broken, and waiting longer would only delay saying so.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    wrong_answers = 0
    request_headers = {"Content-Type": "application/json"}
    while time.monotonic() < deadline and wrong_answers < 10:
        if server.process.poll() is not None:
            raise ServerError(
                f"{server.configuration.label} exited with {server.process.returncode}:\n"
                f"{server.log_tail()}"
            )
        try:
            response = httpx.post(
                f"{server.url}{path}", content=body, headers=request_headers, timeout=30
            )
            if response.status_code == 200:
                return response
            last = f"{response.status_code} {response.text[:300]}"
            wrong_answers += 1
        except httpx.ConnectError as exc:
            last = repr(exc)
        except httpx.TransportError as exc:
            last = repr(exc)
            wrong_answers += 1
        time.sleep(0.2)
    raise ServerError(
        f"{server.configuration.label} did not answer 200 on {path} (last: {last}):\n"
        f"{server.log_tail()}"
    )


def wait_workers_settled(
    server: RunningServer, workers: int, *, timeout_s: float = 120, quiet_s: float = 0.5
) -> list[int]:
    """Wait until the master has `workers` children and none is busy any more (loading models):
    one worker may answer while its sibling is still loading."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if len(pids) == workers:
            before = {pid: cpu_ticks(pid) for pid in pids}
            time.sleep(quiet_s)
            after = {pid: cpu_ticks(pid) for pid in pids}
            # An idle worker uses well under one tick (10 ms) in half a second.
            if all(0 <= after[pid] - before[pid] <= 1 for pid in pids):
                return pids
        else:
            time.sleep(0.2)
    raise ServerError(
        f"{server.configuration.label}: {workers} idle workers not seen within {timeout_s:.0f} s "
        f"(children: {server.worker_pids()}):\n{server.log_tail()}"
    )


def wait_idle(
    servers: Sequence[RunningServer], *, quiet_s: float = 0.1, timeout_s: float = 60
) -> bool:
    """Wait until no process of `servers` uses CPU. After a wrk run stops, a server may still be
    working through the requests it had queued (64 forest predictions take a while); that work
    would steal the shared core from the next configuration's run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [pid for server in servers for pid in (server.pid, *server.worker_pids())]
        before = {pid: cpu_ticks(pid) for pid in pids}
        time.sleep(quiet_s)
        # At most one tick (10 ms) in the window: idle, or nearly.
        if all(cpu_ticks(pid) - ticks <= 1 for pid, ticks in before.items()):
            return True
    logger.warning("servers still busy after %.0f s; measuring anyway", timeout_s)
    return False


def descendant_pids(parent: int) -> list[int]:
    found = []
    pending = [parent]
    while pending:
        children = child_pids(pending.pop())
        found += children
        pending += children
    return found


def stop_server(server: RunningServer) -> None:
    """SIGTERM the master, which stops its workers. Whatever it started and left behind (or all
    of it, if it ignores SIGTERM for 30 s) is then SIGKILLed, so no server outlives the run."""
    if server.process.poll() is not None:
        return
    family = descendant_pids(server.pid)
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        logger.warning("%s ignored SIGTERM; killing it", server.configuration.label)
        server.process.kill()
        server.process.wait(timeout=10)
    for pid in family:
        if cpu_ticks(pid) >= 0:  # still running
            logger.warning("%s left pid %d behind; killing it", server.configuration.label, pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

"""The product image: hadolint-clean, built offline with podman, run as Kubernetes would run it
(read-only root, tmpfs /tmp and /dev/shm, non-root), answering over HTTP and gRPC, and stopping
cleanly on SIGTERM."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import free_port
from tests.e2e.container import IMAGE, REPO, Container, Podman

# The first test to use the image (tests/e2e/conftest.py `podman`, built once per session) waits
# for debootstrap, wheels and the build (~2 minutes).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

APP_UID = 10001
GRACE_SECONDS = 30  # gunicorn's graceful_timeout (MODELPORT_GRACEFUL_TIMEOUT) is 30 s too
BUNDLED_VERSIONS = {"breast-cancer": [1], "diabetes": [1], "digits": [1], "iris": [1, 2]}
# Every process in the container with its real, effective, saved and filesystem UIDs.
PROCESSES = """
import json, pathlib
found = {}
for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
        status = (proc / "status").read_text().splitlines()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\\0", b" ").decode().strip()
    except OSError:
        continue
    uids = next(line.split()[1:] for line in status if line.startswith("Uid:"))
    found[proc.name] = {"uids": [int(uid) for uid in uids], "cmdline": cmdline}
print(json.dumps(found))
"""


def test_dockerfile_is_hadolint_clean() -> None:
    linted = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")


@pytest.fixture(scope="module")
def container(podman: Podman) -> Iterator[Container]:
    port = free_port()
    running = Container(podman, "modelport-e2e", f"http://127.0.0.1:{port}", free_port())
    try:
        podman.start(running.name, port, running.grpc_port)
        podman.wait_ready(running.name, running.url)
        yield running
    finally:
        podman("rm", "--force", "--time", "0", running.name, check=False)


@pytest.fixture
def serving(container: Container) -> Container:
    """The container, started again if a test stopped it (podman start reuses its filesystem)."""
    if not container.podman.running(container.name):
        container.podman("start", container.name)
        container.podman.wait_ready(container.name, container.url)
    return container


def test_build_installed_only_the_host_wheels(podman: Podman) -> None:
    assert "Looking in links: /src/wheels" in podman.build_log
    assert "Looking in indexes" not in podman.build_log  # PIP_NO_INDEX reached pip


def test_the_image_serves_with_its_native_hot_path(serving: Container) -> None:
    """The build stage compiled app/native into the installed package; the runtime stage has
    no compiler and needs none."""
    assert "modelport: built /opt/venv/lib/" in serving.podman.build_log
    assert "native hot path: /opt/venv/lib/" in serving.podman.logs(serving.name)


def test_ready_with_every_bundled_model(serving: Container) -> None:
    ready = httpx.get(f"{serving.url}/readyz", timeout=10)
    listed = httpx.get(f"{serving.url}/models", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"] == 5
    assert listed.status_code == 200, listed.text
    assert {m["name"]: m["versions"] for m in listed.json()["data"]} == BUNDLED_VERSIONS


def test_predicts_iris(serving: Container) -> None:
    reply = httpx.post(
        f"{serving.url}/models/iris/predict",
        json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"][0]["label"] == "setosa"


def test_serves_grpc_health_checks(serving: Container) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{serving.grpc_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_every_process_runs_as_the_app_user(serving: Container) -> None:
    listed = serving.exec("python3", "-c", PROCESSES)
    assert listed.returncode == 0, listed.stderr
    processes = json.loads(listed.stdout)
    gunicorn = {pid for pid, p in processes.items() if "gunicorn" in p["cmdline"]}
    assert "1" in gunicorn  # the master is PID 1 and gets SIGTERM itself
    assert len(gunicorn) >= 3  # master and MODELPORT_WORKERS (2) workers
    assert {uid for p in processes.values() for uid in p["uids"]} == {APP_UID}


def test_root_filesystem_is_read_only_and_owned_by_root(serving: Container) -> None:
    assert serving.inspect()["HostConfig"]["ReadonlyRootfs"] is True
    as_root = serving.exec("touch", "/srv/models/probe", user="0")
    assert as_root.returncode != 0
    assert "Read-only file system" in as_root.stderr
    as_app = serving.exec("touch", "/srv/models/iris/probe")
    assert as_app.returncode != 0
    # Even on a writable root, the app user could change neither its code nor its models.
    writable = serving.exec(
        "find", "/srv/models", "/opt/venv", "!", "-type", "l",
        "(", "!", "-user", "0", "-o", "-perm", "/022", ")", "-print",
    )  # fmt: skip
    assert (writable.returncode, writable.stdout) == (0, "")
    scratch = serving.exec("sh", "-c", "echo x > /tmp/probe && echo x > /dev/shm/probe")
    assert scratch.returncode == 0, scratch.stderr
    assert httpx.get(f"{serving.url}/readyz", timeout=10).status_code == 200


def test_image_metadata(serving: Container) -> None:
    image = json.loads(serving.podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    assert config["Cmd"] == ["modelport", "serve"]  # exec form: no shell between PID 1 and TERM
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert config["StopSignal"] == "SIGTERM"
    assert config["WorkingDir"] == "/srv"
    assert {"8000/tcp", "8081/tcp"} <= set(config["ExposedPorts"])
    assert {
        "PYTHONUNBUFFERED=1",
        "MODELPORT_HOST=0.0.0.0",
        "MODELPORT_MODEL_DIR=/srv/models",
    } <= set(config["Env"])
    check = image["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    assert "/readyz" in check[-1]
    assert serving.inspect()["Config"]["Cmd"] == ["modelport", "serve"]
    # The image's own check passes against this container (on MODELPORT_PORT, not 8000).
    health = serving.podman("healthcheck", "run", serving.name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr


def test_sigterm_stops_gracefully(serving: Container) -> None:
    handled_before = serving.podman.logs(serving.name).count("Handling signal: term")
    start = time.monotonic()
    serving.podman("stop", "--time", str(GRACE_SECONDS), serving.name, timeout=GRACE_SECONDS + 60)
    elapsed = time.monotonic() - start
    # podman sends SIGKILL only once the grace period is over: an exit before it was gunicorn's.
    assert elapsed < GRACE_SECONDS
    state = serving.inspect()["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    log = serving.podman.logs(serving.name)
    assert log.count("Handling signal: term") == handled_before + 1
    assert "Shutting down: Master" in log

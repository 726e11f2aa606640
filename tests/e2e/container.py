"""Build and run the product image the way CI can: podman without Docker, registry or network.

The base is a Debian 12 root filesystem made by debootstrap and imported into podman; pip in the
build installs only wheels made here on the host (whose pip trusts the proxy; the image must not).
All podman state lives under one work directory, removed afterwards: vfs copies whole layers.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/modelport-base"
IMAGE = "localhost/modelport:test"
# Debian 12's python3: the host's wheels must be built for the same minor version.
BASE_PYTHON = (3, 11)
TOOLS = ("podman", "runc", "debootstrap", "tar", "umount")
# The build context: what the Dockerfile copies, plus wheels/ (made by `build_context`).
CONTEXT = (
    "app",
    "routers",
    "schemas",
    "pyproject.toml",
    "constraints.txt",
    "README.md",
    "Dockerfile",
    ".dockerignore",
)


def missing_requirements() -> list[str]:
    """What this machine lacks to build and run the image, in words."""
    missing = []
    if tools := [tool for tool in TOOLS if shutil.which(tool) is None]:
        missing.append(f"{', '.join(tools)} (apt-get install podman buildah runc debootstrap)")
    if os.geteuid() != 0:
        missing.append("root (debootstrap and rootful podman)")
    if sys.version_info[:2] != BASE_PYTHON:
        missing.append(
            f"Python {BASE_PYTHON[0]}.{BASE_PYTHON[1]} on the host (wheels for Debian 12's python3)"
        )
    return missing


def _tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def run(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        stdin=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:8])} … exited {result.returncode}:\n"
            f"{_tail(result.stdout)}\n{_tail(result.stderr)}"
        )
    return result


def containers_conf(workdir: Path) -> str:
    """Defaults for what podman starts without command-line flags (a pod's infra container, the
    network `kube play` creates)."""
    return f"""\
[containers]
# Without them a container fails to start here ("error setting rlimit type 7"); `podman run`
# gets the same as --ulimit flags.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"

[network]
# Rootful podman keeps networks in /etc/containers/networks: this keeps the one kube play
# creates with the rest of the state, removed afterwards.
network_config_dir = "{workdir / "networks"}"
"""


@dataclass
class Podman:
    """Rootful podman whose storage, run state and temporary files all live under `workdir`."""

    workdir: Path
    durations: dict[str, float] = field(default_factory=dict)
    build_log: str = ""

    def __post_init__(self) -> None:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (self.workdir / "containers.conf").write_text(containers_conf(self.workdir))

    @property
    def env(self) -> dict[str, str]:
        # Image copies and build contexts go to $TMPDIR (else /var/tmp): keep them here too.
        return {
            **os.environ,
            "TMPDIR": str(self.workdir / "tmp"),
            "CONTAINERS_CONF": str(self.workdir / "containers.conf"),
        }

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.workdir / "storage"),
            "--runroot", str(self.workdir / "run"),
            "--tmpdir", str(self.workdir / "libpod"),
            "--storage-driver", "vfs",  # no overlay inside this sandbox
            "--runtime", "runc",  # crun fails here on rlimits and hybrid cgroups
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            *args,
        ]  # fmt: skip

    def __call__(
        self,
        *args: str,
        timeout: float = 120,
        stdin: IO[bytes] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run(self.argv(*args), timeout=timeout, env=self.env, stdin=stdin, check=check)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.durations[step] = time.monotonic() - start
        logger.info("container %s: %.1f s", step, self.durations[step])

    # -- building ---------------------------------------------------------------------------------

    def import_base(self) -> None:
        """A Debian 12 minbase with python3 and venv, as `BASE_IMAGE` (no image can be pulled)."""
        rootfs = self.workdir / "rootfs"
        with self.timed("debootstrap"):
            run(
                [
                    "debootstrap", "--variant=minbase", "--include=python3,python3-venv,gcc,libc6-dev",
                    "bookworm", str(rootfs),
                ],
                timeout=600,
            )  # fmt: skip
        with self.timed("import base"):
            tar = subprocess.Popen(
                [
                    "tar", "-C", str(rootfs),
                    "--exclude=./var/cache/apt/archives/*.deb", "--exclude=./var/lib/apt/lists/*",
                    "-c", ".",
                ],
                stdout=subprocess.PIPE,
            )  # fmt: skip
            assert tar.stdout is not None
            try:
                self("import", "-", BASE_IMAGE, stdin=tar.stdout, timeout=300)
            finally:
                tar.stdout.close()
                tar.wait(timeout=60)
            assert tar.returncode == 0, f"tar exited {tar.returncode}"
            remove_tree(rootfs)

    def build_context(self) -> Path:
        """The repo's sources plus wheels/: every runtime dependency and the build backend."""
        context = self.workdir / "context"
        context.mkdir()
        for name in CONTEXT:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(
                    source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy2(source, context / name)
        project = tomllib.loads((REPO / "pyproject.toml").read_text())
        requirements = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
        with self.timed("pip wheel"):
            run(
                [
                    sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                    "-c", str(REPO / "constraints.txt"),
                    "--wheel-dir", str(context / "wheels"),
                    *requirements,
                ],
                timeout=600,
            )  # fmt: skip
        return context

    def build(self, context: Path) -> None:
        """`podman build` from the local base, pip installing only the wheels in the context."""
        with self.timed("podman build"):
            built = self(
                "build",
                "--isolation=chroot",
                "--network=host",  # chroot isolation allows no other; pip is kept off it below
                "--pull=never",
                "--format=docker",  # OCI image configs have no HEALTHCHECK
                "--layers=false",  # vfs copies every layer whole: commit one per stage
                "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                "--build-arg", "PIP_NO_INDEX=1",
                "--build-arg", "PIP_FIND_LINKS=/src/wheels",
                "--tag", IMAGE,
                str(context),
                timeout=900,
            )  # fmt: skip
        self.build_log = built.stdout + built.stderr
        size = int(self("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
        logger.info("container image %s: %.0f MB", IMAGE, size / 1e6)

    # -- running ----------------------------------------------------------------------------------

    def start(self, name: str, port: int, grpc_port: int) -> None:
        """Run the image as Kubernetes would: read-only root, tmpfs /tmp and /dev/shm; on the host
        network, bound to loopback only, on ports of its own (gRPC's too)."""
        with self.timed("podman run"):
            self(
                "run", "--detach", "--name", name,
                "--network=host",
                "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
                "--env", "MODELPORT_HOST=127.0.0.1", "--env", f"MODELPORT_PORT={port}",
                "--env", f"MODELPORT_GRPC_PORT={grpc_port}",
                IMAGE,
                timeout=300,
            )  # fmt: skip

    def logs(self, name: str) -> str:
        result = self("logs", name, check=False)
        return result.stdout + result.stderr

    def running(self, name: str) -> bool:
        state = self("inspect", "--format", "{{.State.Running}}", name, check=False)
        return state.stdout.strip() == "true"

    def wait_ready(self, name: str, url: str, timeout: float = 90) -> None:
        with self.timed("ready"):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not self.running(name):
                    raise RuntimeError(f"container {name} exited:\n{_tail(self.logs(name))}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"{name} not ready within {timeout} s:\n{_tail(self.logs(name))}")

    def remove(self) -> None:
        """Remove every pod, every container and all storage (several GB with vfs)."""
        self("pod", "rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        names = self("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
        for name in names:
            self("rm", "--force", "--time", "0", name, check=False, timeout=60)
        remove_tree(self.workdir)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (/proc/self/mounts escapes spaces as \\040)."""
    root = str(path.resolve())
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1])
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree, after unmounting what is left mounted below (a failed debootstrap's /proc, a
    container's shm); refuses if anything stays mounted, rather than delete through a mount."""
    if not path.exists():
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=60, check=False)
    if remaining := _mounts_under(path):
        raise RuntimeError(f"still mounted, not removing {path}: {remaining}")
    shutil.rmtree(path)


@dataclass
class Container:
    """One running container of the image, reached over loopback at `url`."""

    podman: Podman
    name: str
    url: str
    grpc_port: int

    def exec(self, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        options = ["--user", user] if user else []
        return self.podman("exec", *options, self.name, *argv, check=False)

    def inspect(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self.podman("inspect", self.name).stdout)
        return found[0]

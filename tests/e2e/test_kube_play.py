"""deploy/k8s's Deployment, started by `podman kube play` with the image test_container.py runs
(built once per session): the pod becomes ready, every probe's path answers, and it predicts.

podman 4.3 is not a kubelet: `kube_play_variant` makes the few changes it needs, each with its
reason, and docs/deployment.md lists what podman does not do with the rest.
"""

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import free_port
from tests.e2e.container import IMAGE, REPO, Podman

# The first test to use the image waits for its build (tests/e2e/conftest.py `podman`).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

Doc = dict[str, Any]

DEPLOYMENT = REPO / "deploy" / "k8s" / "base" / "deployment.yaml"
# podman names a Deployment's pod <deployment>-pod-0 and its containers <pod>-<container>.
POD = "modelport-pod-0"
CONTAINER = f"{POD}-modelport"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def server_container(pod_spec: Doc) -> Doc:
    found: Doc = next(c for c in pod_spec["containers"] if c["name"] == "modelport")
    return found


def kube_play_variant(deployment: Doc, host_ports: dict[str, int]) -> Doc:
    """The Deployment as podman 4.3 can start it here; everything else, probes included, as is.

    `host_ports` maps each container port's name to the loopback port that publishes it."""
    variant = copy.deepcopy(deployment)
    pod_spec = variant["spec"]["template"]["spec"]
    container = server_container(pod_spec)
    # The image built here: there is no registry to pull from.
    container["image"] = IMAGE
    container["imagePullPolicy"] = "Never"
    # kube play (4.3) has no --publish: it publishes a container port only when it has a
    # hostPort. On loopback only; every port, or podman binds the others on all interfaces.
    for port in container["ports"]:
        port["hostPort"] = host_ports[port["name"]]
        port["hostIP"] = "127.0.0.1"
    # podman 4.3 makes an emptyDir a directory copied from the image, ignoring `medium: Memory`
    # and fsGroup: /dev/shm would be root's, mode 0755, and gunicorn (UID 10001) could not
    # create its worker heartbeat files there (the master dies). Without the volume the
    # container keeps podman's own /dev/shm: a tmpfs, mode 1777, as the kubelet's emptyDir is
    # writable by the pod.
    shm = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != shm]
    pod_spec["volumes"] = [volume for volume in pod_spec["volumes"] if volume["name"] != shm]
    return variant


@dataclass
class PlayedPod:
    podman: Podman
    url: str
    manifest: Doc
    host_ports: dict[str, int]

    def inspect(self) -> Doc:
        found: list[Doc] = json.loads(self.podman("container", "inspect", CONTAINER).stdout)
        return found[0]

    def logs(self) -> str:
        result = self.podman("logs", CONTAINER, check=False)
        return result.stdout + result.stderr


def wait_ready(pod: PlayedPod, timeout: float = 180) -> None:
    """Until /readyz answers 200; fails at once, with the logs, if the container restarted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = pod.inspect()
        if state["RestartCount"] or not state["State"]["Running"]:
            pytest.fail(f"{CONTAINER} exited or restarted:\n{pod.logs()[-6000:]}")
        try:
            if httpx.get(f"{pod.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{CONTAINER} not ready within {timeout} s:\n{pod.logs()[-6000:]}")


@pytest.fixture(scope="module")
def played(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlayedPod]:
    deployment: Doc = yaml.safe_load(DEPLOYMENT.read_text())
    container = server_container(deployment["spec"]["template"]["spec"])
    host_ports = {port["name"]: free_port() for port in container["ports"]}
    manifest = tmp_path_factory.mktemp("kube") / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(kube_play_variant(deployment, host_ports), sort_keys=False))
    pod = PlayedPod(podman, f"http://127.0.0.1:{host_ports['http']}", deployment, host_ports)
    try:
        with podman.timed("kube play"):
            # Without systemd, podman logs that it cannot schedule the liveness healthcheck's
            # timer (stderr) and starts the pod all the same.
            podman("kube", "play", str(manifest), timeout=300)
        with podman.timed("kube play ready"):
            wait_ready(pod)
        yield pod
    finally:
        with podman.timed("kube down"):
            podman("kube", "down", str(manifest), check=False, timeout=300)


def test_the_pod_becomes_ready_and_predicts(played: PlayedPod) -> None:
    ready = httpx.get(f"{played.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["models"] == 5
    reply = httpx.post(
        f"{played.url}/models/iris/predict",
        json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"][0]["label"] == "setosa"


def grpc_health_status(target: str, service: str) -> str:
    """What the kubelet's gRPC probe asks: grpc.health.v1 Check on `service`."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_every_probe_path_answers(played: PlayedPod) -> None:
    """podman runs no readiness or startup probe, and no liveness probe without systemd: ask
    each probe on the port it names, as the kubelet would (HTTP GET, or gRPC health checking)."""
    container = server_container(played.manifest["spec"]["template"]["spec"])
    by_number = {port["containerPort"]: port["name"] for port in container["ports"]}
    names = {port["name"] for port in container["ports"]}
    for probe in PROBES:
        if "grpc" in container[probe]:
            request = container[probe]["grpc"]
            name = by_number[request["port"]]  # a gRPC probe names its port by number
            target = f"127.0.0.1:{played.host_ports[name]}"
            status = grpc_health_status(target, request.get("service", ""))
            assert status == "SERVING", f"{probe} gRPC health on {name}: {status}"
            continue
        request = container[probe]["httpGet"]
        name = request["port"] if request["port"] in names else by_number[request["port"]]
        url = f"http://127.0.0.1:{played.host_ports[name]}{request['path']}"
        answer = httpx.get(url, timeout=10)
        assert answer.status_code == 200, f"{probe} {request['path']}: {answer.text}"


def test_the_pod_runs_as_the_manifest_says(played: PlayedPod) -> None:
    container = server_container(played.manifest["spec"]["template"]["spec"])
    inspected = played.inspect()
    pod_security = played.manifest["spec"]["template"]["spec"]["securityContext"]
    user = f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"
    assert inspected["Config"]["User"] == user
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert "no-new-privileges" in inspected["HostConfig"]["SecurityOpt"]
    assert inspected["HostConfig"]["Memory"] == 1024**3  # limits.memory: 1Gi
    assert container["resources"]["limits"]["memory"] == "1Gi"
    env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert {item["name"]: item["value"] for item in container["env"]}.items() <= env.items()
    # The pod's infra container holds the network namespace, and so the published ports.
    pod = json.loads(played.podman("pod", "inspect", POD).stdout)
    bindings = pod["InfraConfig"]["PortBindings"]
    assert bindings, pod["InfraConfig"]
    assert {binding["HostIp"] for ports in bindings.values() for binding in ports} == {"127.0.0.1"}
    mounts = {mount["Destination"] for mount in inspected["Mounts"]}
    assert "/tmp" in mounts  # the emptyDir, kept
    scratch = played.podman(
        "exec", CONTAINER, "sh", "-c", "echo x > /tmp/probe && echo x > /dev/shm/probe", check=False
    )
    assert scratch.returncode == 0, scratch.stderr


def test_the_variant_changes_only_what_podman_needs() -> None:
    deployment: Doc = yaml.safe_load(DEPLOYMENT.read_text())
    variant = kube_play_variant(deployment, {"http": 18000, "grpc": 18001})
    original = server_container(deployment["spec"]["template"]["spec"])
    played = server_container(variant["spec"]["template"]["spec"])
    for probe in PROBES:
        assert played[probe] == original[probe]
    for kept in ("securityContext", "resources", "env", "lifecycle", "args", "command"):
        assert played.get(kept) == original.get(kept), kept
    assert (
        variant["spec"]["template"]["spec"]["securityContext"]
        == (deployment["spec"]["template"]["spec"]["securityContext"])
    )
    assert [m["mountPath"] for m in played["volumeMounts"]] == ["/tmp"]


def test_manifest_is_the_one_kustomize_renders() -> None:
    """The base kustomization adds labels only: playing deployment.yaml plays what is applied."""
    kustomization = yaml.safe_load((DEPLOYMENT.parent / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "labels"}
    assert Path(DEPLOYMENT.name) in {Path(r) for r in kustomization["resources"]}

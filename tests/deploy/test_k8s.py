"""The Kubernetes manifests in deploy/k8s.

Each kustomization is rendered with `kubectl kustomize` (offline), every document is validated
with kubernetes-validate in strict mode (unknown fields and unknown apiVersions fail), and the
rendered objects are checked for what the service needs: probes, hardening, writable paths,
graceful termination, autoscaling, disruption budget and routing.
"""

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

Doc = dict[str, Any]

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "overlay": K8S / "overlays" / "example"}
KSERVE_EXAMPLE = K8S / "kserve" / "inferenceservice.yaml"
KSERVE_GRPC_EXAMPLE = K8S / "kserve" / "inferenceservice-grpc.yaml"

# The oldest Kubernetes release the manifests target and the newest schema kubernetes-validate
# bundles. Fixed on purpose: the package's "latest" moves with every upgrade.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# The image's non-root user and the port it listens on.
IMAGE_UID = 10001
CONTAINER_PORT = 8000
GRPC_PORT = 8081
OVERLAY_NAMESPACE = "ml-serving"


# --- rendering and validation ---------------------------------------------------------------


def _kustomize_command(directory: Path) -> list[str]:
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize", str(directory)]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build", str(directory)]
    reason = "neither kubectl nor kustomize is on PATH: cannot render deploy/k8s"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _load_all(text: str) -> list[Doc]:
    docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def _render(directory: Path) -> list[Doc]:
    result = subprocess.run(
        _kustomize_command(directory), capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(f"rendering {directory} failed ({result.returncode}):\n{result.stderr}")
    docs = _load_all(result.stdout)
    assert docs, f"{directory} rendered no objects"
    return docs


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: _render(directory) for name, directory in KUSTOMIZATIONS.items()}


def _validate(doc: Doc, version: str) -> None:
    """Strict validation; raises on unknown fields, wrong types and unknown kinds/apiVersions."""
    kubernetes_validate.validate(doc, version, strict=True)


def _describe(doc: Doc) -> str:
    return f"{doc.get('apiVersion')} {doc.get('kind')} {doc.get('metadata', {}).get('name')}"


# --- helpers over rendered objects -----------------------------------------------------------


def _one(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def _pod_spec(docs: list[Doc]) -> Doc:
    spec: Doc = _one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def _pod_labels(docs: list[Doc]) -> dict[str, str]:
    labels: dict[str, str] = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _container(docs: list[Doc]) -> Doc:
    containers: list[Doc] = _pod_spec(docs)["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _env_value(container: Doc, name: str) -> str:
    entry = _env(container).get(name)
    assert entry is not None and "value" in entry, f"{name} is not set to a literal value"
    return str(entry["value"])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """True when a non-empty label selector matches an object with `labels`."""
    return bool(selector) and selector.items() <= labels.items()


def _container_port(container: Doc, port: int | str) -> int:
    """Resolve a probe's or Service's target port (number or name) to the container's port."""
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"port {port!r} is not a port of container {container['name']}")


def _security(docs: list[Doc], key: str) -> Any:
    """The effective security setting: the container's, else the pod's."""
    container_level = _container(docs).get("securityContext", {})
    if key in container_level:
        return container_level[key]
    return _pod_spec(docs).get("securityContext", {}).get(key)


def _prestop_sleep_seconds(container: Doc) -> int:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    assert pre_stop, "no preStop hook: the pod would stop while endpoints still route to it"
    if "sleep" in pre_stop:  # the native sleep action
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert len(command) == 2 and Path(command[0]).name == "sleep", command
    return int(command[1])


VARIANTS = pytest.mark.parametrize("variant", sorted(KUSTOMIZATIONS))


# --- schema validation ----------------------------------------------------------------------


@VARIANTS
def test_renders_the_expected_objects(rendered: dict[str, list[Doc]], variant: str) -> None:
    kinds = sorted(doc["kind"] for doc in rendered[variant])
    expected = ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    if variant == "overlay":
        expected.append("Namespace")
    assert kinds == sorted(expected)


@VARIANTS
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_document_validates_strictly(
    rendered: dict[str, list[Doc]], variant: str, version: str
) -> None:
    problems = []
    for doc in rendered[variant]:
        try:
            _validate(doc, version)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path) or "(top)"
            problems.append(f"{_describe(doc)}: at {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{_describe(doc)}: {exc.message}")
    # Reported outside the handlers: the exceptions' own text embeds whole schemas.
    assert not problems, f"invalid for Kubernetes {version}:\n" + "\n".join(problems)


def _with(doc: Doc, path: str, value: Any) -> Doc:
    """A deep copy of `doc` with `value` set at dotted `path` (numbers index lists)."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.replicaz", 2),
        ("spec.template.spec.containers.0.readinesProbe", {}),
        ("spec.template.spec.containers.0.securityContext.readOnlyRootFilesytem", True),
        ("spec.template.spec.terminationGracePeriodSeconds", "45"),
    ],
)
def test_validator_rejects_misspelled_and_mistyped_fields(
    rendered: dict[str, list[Doc]], path: str, value: Any
) -> None:
    broken = _with(_one(rendered["base"], "Deployment"), path, value)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken, KUBERNETES_VERSIONS[0])


def test_validator_rejects_unknown_api_versions(rendered: dict[str, list[Doc]]) -> None:
    # autoscaling/v2beta2 was removed in Kubernetes 1.26: a schema-less kind must fail, not pass.
    hpa = copy.deepcopy(_one(rendered["base"], "HorizontalPodAutoscaler"))
    hpa["apiVersion"] = "autoscaling/v2beta2"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate(hpa, KUBERNETES_VERSIONS[0])


# --- what the service needs ------------------------------------------------------------------


@VARIANTS
def test_probes(rendered: dict[str, list[Doc]], variant: str) -> None:
    container = _container(rendered[variant])
    paths = {}
    for probe in ("startupProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert _container_port(container, http_get["port"]) == CONTAINER_PORT
        paths[probe] = http_get["path"]
    # Readiness reflects the models; liveness never does, or a refused model would restart-loop
    # the pod. The startup probe kills the container when it fails, just like liveness, so it
    # checks that the server answers (models loaded, or refused) rather than readiness.
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz"}
    # Readiness by gRPC health checking: the server's own service name (""), SERVING once every
    # model loaded (as /readyz), on the port the gRPC service listens on.
    readiness = container["readinessProbe"]
    assert set(readiness) & {"httpGet", "tcpSocket", "exec", "grpc"} == {"grpc"}
    assert readiness["grpc"].get("service", "") == ""
    assert _container_port(container, readiness["grpc"]["port"]) == GRPC_PORT
    assert int(_env_value(container, "MODELPORT_GRPC_PORT")) == GRPC_PORT
    startup = container["startupProbe"]
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget >= 120, "the startup probe must leave time to load every model"


@VARIANTS
def test_runs_as_non_root_with_a_read_only_root(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    docs = rendered[variant]
    assert _security(docs, "runAsNonRoot") is True
    assert _security(docs, "runAsUser") == IMAGE_UID
    assert _security(docs, "readOnlyRootFilesystem") is True
    assert _security(docs, "allowPrivilegeEscalation") is False
    assert _security(docs, "capabilities") == {"drop": ["ALL"]}
    assert _security(docs, "seccompProfile") == {"type": "RuntimeDefault"}
    assert _pod_spec(docs)["automountServiceAccountToken"] is False


@VARIANTS
def test_writable_paths_are_empty_dirs(rendered: dict[str, list[Doc]], variant: str) -> None:
    volumes = {volume["name"]: volume for volume in _pod_spec(rendered[variant])["volumes"]}
    mounts = {
        mount["mountPath"]: volumes[mount["name"]]
        for mount in _container(rendered[variant])["volumeMounts"]
    }
    # /tmp: temp files and the prometheus multiprocess directory; /dev/shm: gunicorn heartbeats.
    for path in ("/tmp", "/dev/shm"):
        assert path in mounts, f"{path} is not writable under a read-only root filesystem"
        assert "emptyDir" in mounts[path], f"{path} must be an emptyDir"
        assert not mounts[path].get("readOnly")
    assert mounts["/dev/shm"]["emptyDir"].get("medium") == "Memory"
    assert all(volume["emptyDir"].get("sizeLimit") for volume in mounts.values())


@VARIANTS
def test_termination_outlasts_prestop_and_graceful_timeout(
    rendered: dict[str, list[Doc]], variant: str
) -> None:
    container = _container(rendered[variant])
    sleep = _prestop_sleep_seconds(container)
    graceful = int(_env_value(container, "MODELPORT_GRACEFUL_TIMEOUT"))
    grace = _pod_spec(rendered[variant])["terminationGracePeriodSeconds"]
    assert sleep >= 3, "the preStop pause must give endpoints time to drop the pod"
    assert grace > sleep + graceful


@VARIANTS
def test_server_settings(rendered: dict[str, list[Doc]], variant: str) -> None:
    container = _container(rendered[variant])
    assert _env_value(container, "MODELPORT_HOST") == "0.0.0.0"
    assert int(_env_value(container, "MODELPORT_PORT")) == CONTAINER_PORT
    assert _env_value(container, "MODELPORT_MODEL_DIR") == "/srv/models"
    assert int(_env_value(container, "MODELPORT_WORKERS")) >= 1
    # A Service named "modelport" would otherwise inject MODELPORT_PORT=tcp://... into the pod.
    assert _pod_spec(rendered[variant])["enableServiceLinks"] is False


@VARIANTS
def test_resources(rendered: dict[str, list[Doc]], variant: str) -> None:
    resources = _container(rendered[variant])["resources"]
    # The HPA's CPU utilization is measured against the request: it must be there.
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


@VARIANTS
def test_hpa_scales_the_deployment_on_cpu(rendered: dict[str, list[Doc]], variant: str) -> None:
    docs = rendered[variant]
    hpa = _one(docs, "HorizontalPodAutoscaler")
    deployment = _one(docs, "Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    cpu = [
        metric["resource"]["target"]
        for metric in hpa["spec"]["metrics"]
        if metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    ]
    assert cpu and cpu[0]["type"] == "Utilization" and 0 < cpu[0]["averageUtilization"] <= 100
    # The HPA owns the replica count; a fixed one would be reset on every apply.
    assert "replicas" not in deployment["spec"]


@VARIANTS
def test_selectors_match_the_pods(rendered: dict[str, list[Doc]], variant: str) -> None:
    docs = rendered[variant]
    pods = _pod_labels(docs)
    deployment_selector = _one(docs, "Deployment")["spec"]["selector"]
    assert set(deployment_selector) == {"matchLabels"}
    assert _selects(deployment_selector["matchLabels"], pods)
    pdb = _one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert set(pdb["spec"]["selector"]) == {"matchLabels"}
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pods)
    assert ("maxUnavailable" in pdb["spec"]) != ("minAvailable" in pdb["spec"])
    assert _selects(_one(docs, "Service")["spec"]["selector"], pods)


@VARIANTS
def test_service_targets_the_container_ports(rendered: dict[str, list[Doc]], variant: str) -> None:
    service = _one(rendered[variant], "Service")
    assert service["spec"]["type"] == "ClusterIP"
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert sorted(ports) == ["grpc", "http"]
    container = _container(rendered[variant])
    for name, number, target in (("http", 80, CONTAINER_PORT), ("grpc", GRPC_PORT, GRPC_PORT)):
        port = ports[name]
        assert port["port"] == number
        assert _container_port(container, port.get("targetPort", port["port"])) == target
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"  # gRPC: HTTP/2 without TLS


def test_overlay_sets_namespace_image_and_secret(rendered: dict[str, list[Doc]]) -> None:
    base, overlay = rendered["base"], rendered["overlay"]
    assert all("namespace" not in doc["metadata"] for doc in base)
    namespaced = [doc for doc in overlay if doc["kind"] != "Namespace"]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {OVERLAY_NAMESPACE}
    assert _one(overlay, "Namespace")["metadata"]["name"] == OVERLAY_NAMESPACE

    base_image = _container(base)["image"]
    overlay_image = _container(overlay)["image"]
    assert base_image == "modelport:latest"
    assert overlay_image != base_image
    assert "/" in overlay_image and not overlay_image.endswith(":latest")

    api_key = _env(_container(overlay))["MODELPORT_API_KEY"]
    assert "value" not in api_key, "the API key must come from a Secret, not the manifest"
    assert api_key["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "MODELPORT_API_KEY" not in _env(_container(base))


# --- the KServe example (a CRD: no schema, so outside the kustomization) ---------------------

# InferenceService predictor fields that are not PodSpec fields (KServe's ComponentExtensionSpec).
KSERVE_COMPONENT_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}


def _kserve_example(path: Path = KSERVE_EXAMPLE) -> Doc:
    (doc,) = _load_all(path.read_text())
    return doc


def _kserve_container(isvc: Doc) -> Doc:
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    containers: list[Doc] = isvc["spec"]["predictor"]["containers"]
    (container,) = containers
    assert container["name"] == "kserve-container"
    assert container["image"].split(":")[0].endswith("modelport")
    return container


def test_kserve_example_is_a_v2_custom_predictor() -> None:
    isvc = _kserve_example()
    container = _kserve_container(isvc)
    # A custom predictor declares its protocol with the PROTOCOL variable.
    assert _env_value(container, "PROTOCOL") == "v2"
    assert int(_env_value(container, "MODELPORT_PORT")) == CONTAINER_PORT
    assert _container_port(container, CONTAINER_PORT) == CONTAINER_PORT
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # Kept out of every kustomization: kubernetes-validate has no schema for the CRD.
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert "kserve" not in kustomization.read_text()
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate(isvc, KUBERNETES_VERSIONS[-1])


def test_kserve_grpc_example_exposes_the_grpc_port() -> None:
    container = _kserve_container(_kserve_example(KSERVE_GRPC_EXAMPLE))
    assert _env_value(container, "PROTOCOL") == "grpc-v2"
    # KServe exposes one port of a predictor: the gRPC one, named for the protocol.
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("grpc-port", GRPC_PORT)
    assert int(_env_value(container, "MODELPORT_GRPC_PORT")) == GRPC_PORT
    assert container["readinessProbe"]["grpc"] == {"port": GRPC_PORT}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


@pytest.mark.parametrize("example", [KSERVE_EXAMPLE, KSERVE_GRPC_EXAMPLE], ids=["rest", "grpc"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kserve_example_pod_part_validates_strictly(example: Path, version: str) -> None:
    # The predictor inlines a PodSpec: validate that part strictly, as a Pod.
    predictor = _kserve_example(example)["spec"]["predictor"]
    pod_spec = {
        key: value for key, value in predictor.items() if key not in KSERVE_COMPONENT_FIELDS
    }
    _validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod_spec}, version
    )

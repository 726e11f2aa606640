"""The gRPC port of a real `modelport serve` (gunicorn, two workers, each serving gRPC on the one
port), driven by unmodified clients: Triton's `tritonclient.grpc` in its defaults (raw tensors)
and KServe's `InferenceGRPCClient` (typed contents and raw tensors). Every answer must equal REST
v2's for the same rows; hostile calls get their status codes and the server keeps serving; the
health service, reflection, shared REST + gRPC batches and a graceful SIGTERM are shown here too.

The clients run in processes of their own (tests/e2e/triton_grpc_client.py,
kserve_grpc_client.py): each registers the protocol's messages under the same names as modelport
does, so neither can be imported beside modelport.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from sklearn import datasets

from app.codecs.grpc.proto import grpc_predict_v2_pb2 as pb
from app.codecs.grpc.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import pets_frame
from tests.e2e.conftest import Server, free_port, start_server, stop_server
from tests.e2e.slow_model import MAGIC, write_sleepy_model
from tests.e2e.test_v2_clients import kserve_python

pytestmark = pytest.mark.e2e

KEY = "grpc-e2e-key"
MESSAGE_LIMIT = 1 << 20  # MODELPORT_GRPC_MAX_MESSAGE_BYTES of the server under test
HERE = Path(__file__).resolve().parent


def matrix(name: str, rows: Any, datatype: str = "FP64") -> list[dict[str, Any]]:
    array = np.asarray(rows)
    return [
        {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.tolist()}
    ]


def pets_tensors() -> list[dict[str, Any]]:
    sample = pets_frame()[0].head(6)
    return [
        {"name": "colour", "datatype": "BYTES", "shape": [6], "data": sample["colour"].tolist()},
        {"name": "weight", "datatype": "FP64", "shape": [6], "data": sample["weight"].tolist()},
        {"name": "age", "datatype": "FP64", "shape": [6], "data": sample["age"].astype(float).tolist()},
    ]  # fmt: skip


# Every model of the trained store (the bundled examples and an imported pipeline), a few rows each.
INPUTS: dict[str, list[dict[str, Any]]] = {
    "iris": matrix("input-0", datasets.load_iris().data[::15]),
    "breast-cancer": matrix("input-0", datasets.load_breast_cancer().data[::100]),
    "diabetes": matrix("input-0", datasets.load_diabetes().data[::90]),
    "digits": matrix("input-0", datasets.load_digits().data[::400].astype(np.int64), "INT64"),
    "pets": pets_tensors(),
}


@dataclass
class Served(Server):
    """A server with its gRPC port too."""

    grpc_port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def serve_with_grpc(store: Path, log: Path, **settings: str) -> Served:
    port = free_port()
    running = start_server(store, log, grpc_port=str(port), **settings)
    return Served(**vars(running), grpc_port=port)


@pytest.fixture(scope="module")
def served(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = serve_with_grpc(
        trained_store,
        tmp_path_factory.mktemp("grpc-logs") / "serve.log",
        api_key=KEY,
        grpc_max_message_bytes=str(MESSAGE_LIMIT),
    )
    yield running
    stop_server(running)


def drive(python: Path, script: str, target: str, calls: list[dict[str, Any]]) -> list[Any]:
    run = subprocess.run(
        [str(python), str(HERE / script)],
        input=json.dumps({"url": target, "calls": calls}),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    results: list[Any] = json.loads(run.stdout)
    return results


def triton(server: Served, calls: list[dict[str, Any]]) -> list[Any]:
    return drive(Path(sys.executable), "triton_grpc_client.py", server.target, calls)


def kserve(server: Served, calls: list[dict[str, Any]]) -> list[Any]:
    python = kserve_python()
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail("KServe's client is missing: `make test` builds .venv-kserve")
        pytest.skip("KServe's client is not installed (run `make test`, which builds .venv-kserve)")
    return drive(python, "kserve_grpc_client.py", server.target, calls)


def ok(result: dict[str, Any]) -> Any:
    assert "ok" in result, result
    return result["ok"]


def rest_outputs(server: Server, model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """REST v2's outputs for the same tensors (JSON), pinned to nothing: the default version."""
    with server.client() as http:
        reply = http.post(
            f"/v2/models/{model}/infer", json={"inputs": inputs}, headers={"X-API-Key": KEY}
        )
    assert reply.status_code == 200, reply.text
    return {output["name"]: output for output in reply.json()["outputs"]}


def assert_equal_to_rest(server: Server, model: str, answer: dict[str, Any]) -> None:
    expected = rest_outputs(server, model, INPUTS[model])
    assert answer["model_name"] == model
    assert sorted(answer["outputs"]) == sorted(expected)
    for name, output in expected.items():
        got = answer["outputs"][name]
        assert (got["datatype"], [int(d) for d in got["shape"]]) == (
            output["datatype"],
            output["shape"],
        )
        assert got["data"] == output["data"], (model, name)  # the same floats, bit for bit


INFER = [{"op": "infer", "model": model, "inputs": inputs, "id": f"call-{model}"} for model, inputs in INPUTS.items()]  # fmt: skip


# -- Triton's client ------------------------------------------------------------------------------
def test_tritonclient_health_and_metadata_equal_rest(served: Served) -> None:
    calls = [
        {"op": "live"},
        {"op": "ready"},
        {"op": "model_ready", "model": "iris"},
        {"op": "model_ready", "model": "iris", "version": "2"},
        {"op": "server_metadata"},
        *({"op": "model_metadata", "model": model} for model in INPUTS),
    ]
    live, ready, iris, iris_2, server_meta, *metadata = [ok(r) for r in triton(served, calls)]
    assert (live, ready, iris, iris_2) == (True, True, True, True)
    assert (server_meta["name"], server_meta["version"]) == ("modelport", "0.1.0")
    with served.client() as http:
        for model, meta in zip(INPUTS, metadata, strict=True):
            rest = http.get(f"/v2/models/{model}").json()
            for field in ("inputs", "outputs"):
                for tensor in meta[field]:
                    tensor["shape"] = [
                        int(d) for d in tensor["shape"]
                    ]  # MessageToJson: int64 as str
            assert {key: meta[key] for key in ("name", "versions", "platform", "inputs", "outputs")} == {
                key: rest[key] for key in ("name", "versions", "platform", "inputs", "outputs")
            }  # fmt: skip


def test_tritonclient_infer_on_every_model_equals_rest(served: Served) -> None:
    headers = {"x-api-key": KEY}
    answers = triton(served, [{**call, "headers": headers} for call in INFER])
    for model, result in zip(INPUTS, answers, strict=True):
        answer = ok(result)
        assert answer["id"] == f"call-{model}"
        assert_equal_to_rest(served, model, answer)


def test_hostile_calls_get_their_codes_and_the_server_keeps_serving(served: Served) -> None:
    headers = {"x-api-key": KEY}
    iris = INPUTS["iris"][0]
    valid: dict[str, Any] = {"op": "infer", "model": "iris", "inputs": [iris], "headers": headers}
    too_big = np.zeros((MESSAGE_LIMIT // 32 + 1, 4)).tolist()  # 4 x 8 bytes a row: past the limit
    hostile: dict[str, dict[str, Any]] = {
        "wrong shape": {**valid, "inputs": matrix("input-0", [[5.1, 3.5, 1.4]])},
        "wrong datatype": {**valid, "inputs": [{**iris, "datatype": "BYTES", "data": ["a"] * 40, "shape": [10, 4]}]},
        "wrong element count": {**valid, "inputs": [{**iris, "declared_shape": [20, 4]}]},
        "too many rows": {**valid, "inputs": matrix("input-0", np.ones((10_001, 4)).tolist())},
        "oversize message": {**valid, "inputs": matrix("input-0", too_big)},
        "unknown model": {**valid, "model": "nope"},
        "unknown version": {**valid, "version": "9"},
        "no key": {**valid, "headers": None},
        "wrong key": {**valid, "headers": {"x-api-key": "guess"}},
    }  # fmt: skip
    expected = {
        "wrong shape": "INVALID_ARGUMENT",
        "wrong datatype": "INVALID_ARGUMENT",
        "wrong element count": "INVALID_ARGUMENT",
        "too many rows": "INVALID_ARGUMENT",
        "oversize message": "RESOURCE_EXHAUSTED",
        "unknown model": "NOT_FOUND",
        "unknown version": "NOT_FOUND",
        "no key": "UNAUTHENTICATED",
        "wrong key": "UNAUTHENTICATED",
    }
    calls: list[dict[str, Any]] = [call for case in hostile.values() for call in (case, valid)]
    results = triton(served, calls)
    workers = served.worker_pids()
    for index, case in enumerate(hostile):
        refusal, after = results[2 * index], results[2 * index + 1]
        assert "error" in refusal, (case, refusal)
        assert refusal["error"]["status"] == f"StatusCode.{expected[case]}", (case, refusal)
        assert "Traceback" not in refusal["error"]["message"]
        assert ok(after)["outputs"]["predict"]["data"], case  # and the next call is answered
    assert served.process.poll() is None and sorted(served.worker_pids()) == sorted(workers)


# -- KServe's client ------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True], ids=["typed-contents", "raw"])
def test_kserve_client_infer_on_every_model_equals_rest(served: Served, binary: bool) -> None:
    headers = [["x-api-key", KEY]]
    calls: list[dict[str, Any]] = [
        {"op": "live"},
        {"op": "ready"},
        {"op": "model_ready", "model": "iris"},
        {"op": "model_metadata", "model": "diabetes"},
        *({**call, "binary": binary, "headers": headers} for call in INFER),
    ]
    live, ready, iris, diabetes, *answers = [ok(r) for r in kserve(served, calls)]
    assert (live, ready, iris) == (True, True, True)
    with served.client() as http:
        rest = http.get("/v2/models/diabetes").json()
    assert diabetes == {key: rest[key] for key in diabetes}
    for model, answer in zip(INPUTS, answers, strict=True):
        assert answer["id"] == f"call-{model}"
        assert_equal_to_rest(served, model, answer)


# -- health, reflection ---------------------------------------------------------------------------
def test_health_checks_and_reflection(served: Served) -> None:
    with grpc.insecure_channel(served.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "iris", "pets"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = reflection.ServerReflectionInfo(iter([listing]), timeout=10)
    services = {service.name for service in reply.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


# -- one data plane: shared batches, graceful shutdown --------------------------------------------
def sleepy_call(first: float) -> Any:
    message = pb.ModelInferRequest(model_name="sleepy")
    tensor = message.inputs.add(name="input-0", datatype="FP64", shape=[1, 2])
    tensor.contents.fp64_contents.extend([first, 1.0])
    return message


def shared_batches(server: Server, protocols: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelport_shared_batches_total"
        and sample.labels.get("model") == "sleepy"
        and sample.labels.get("protocols") == protocols
    )


@pytest.fixture
def sleepy_server(tmp_path: Path) -> Iterator[Served]:
    """One worker (batches are per worker), a model that holds a magic row for 3 s, and a batch
    window of 50 ms, so the calls queued behind a held one are sure to share one call."""
    store = tmp_path / "models"
    write_sleepy_model(store)
    running = serve_with_grpc(store, tmp_path / "serve.log", workers="1", batch_max_wait_ms="50")
    yield running
    stop_server(running)


def test_rest_and_grpc_requests_share_a_batch(sleepy_server: Served) -> None:
    results: dict[str, Any] = {}

    def rest(key: str, first: float) -> None:
        body = {"instances": [[first, 1.0]]}
        results[key] = httpx.post(
            f"{sleepy_server.url}/models/sleepy/predict", json=body, timeout=30
        )

    holder = threading.Thread(target=rest, args=("held", MAGIC))
    holder.start()
    time.sleep(1.0)  # the held call is in the model now; what comes next queues behind it
    queued_rest = threading.Thread(target=rest, args=("rest", 2.0))
    queued_rest.start()
    with grpc.insecure_channel(sleepy_server.target) as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(sleepy_call(3.0), timeout=30)
    holder.join()
    queued_rest.join()
    assert results["held"].status_code == results["rest"].status_code == 200
    assert results["rest"].json()["predictions"] == [{"value": pytest.approx(6.0)}]
    assert list(answer.outputs[0].contents.fp64_contents) == pytest.approx([8.0])
    # One estimator call served both: a batch of the two protocols.
    assert shared_batches(sleepy_server, "grpc+http") >= 1


def test_sigterm_lets_a_call_in_flight_finish(sleepy_server: Served) -> None:
    with grpc.insecure_channel(sleepy_server.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        held = stub.ModelInfer.future(sleepy_call(MAGIC), timeout=30)
        time.sleep(1.0)  # in the model, 2 s to go
        sleepy_server.process.send_signal(signal.SIGTERM)
        answer = held.result()
    assert list(answer.outputs[0].contents.fp64_contents) == pytest.approx([2 * MAGIC + 2])
    assert sleepy_server.process.wait(timeout=30) == 0


def test_a_reload_hands_the_grpc_port_over_without_a_refused_call(tmp_path: Path) -> None:
    """On SIGHUP the master forks new workers and at once stops the old ones. gRPC's listeners are
    the workers' own (HTTP's is the master's), so the old ones keep the port until a new one
    listens (app.server.handover): no call is refused for want of a listener (UNAVAILABLE),
    on new connections or on one kept open, through the whole reload. What remains is gRPC's
    own race at a server's stop: a call reaching an old worker as it stops, before it is handed
    to the server, is cancelled by gRPC's core (CANCELLED), as a request racing the close of an
    HTTP keep-alive connection is reset. A few such calls, and nothing else."""
    store = tmp_path / "models"
    write_sleepy_model(store)
    server = serve_with_grpc(store, tmp_path / "serve.log")
    outcomes: dict[str, list[str]] = {"new connections": [], "one connection": []}
    done = threading.Event()

    def call_until_done(kind: str) -> None:
        channel = grpc.insecure_channel(server.target)
        while not done.is_set():
            if kind == "new connections":
                channel.close()
                channel = grpc.insecure_channel(server.target)
            try:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                stub.ModelInfer(sleepy_call(1.0), timeout=10)
                outcomes[kind].append("OK")
            except grpc.RpcError as exc:
                outcomes[kind].append(f"{exc.code().name}: {exc.details()}")
            time.sleep(0.005)
        channel.close()

    callers = [threading.Thread(target=call_until_done, args=(kind,)) for kind in outcomes]
    try:
        for caller in callers:
            caller.start()
        old = set(server.worker_pids())
        time.sleep(0.5)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = set(server.worker_pids())
            if len(workers) == 2 and not workers & old:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the workers were not replaced:\n{server.log.read_text()}")
        time.sleep(1.0)  # and the new ones serve a while
    finally:
        done.set()
        for caller in callers:
            caller.join(timeout=30)
        stop_server(server)
    for kind, seen in outcomes.items():
        failed = [outcome for outcome in seen if outcome != "OK"]
        assert len(seen) - len(failed) > 10, (kind, seen[:5])
        assert {outcome.split(":")[0] for outcome in failed} <= {"CANCELLED"}, (kind, failed)
        assert len(failed) <= 5, (kind, failed)  # at most a call or two per old worker stopping


# -- the model repository extension ---------------------------------------------------------------
def test_tritonclient_repository_index_unload_and_load(served: Served) -> None:
    """Triton's repository calls over gRPC: the index as REST's, writes refused without the key,
    and an unload then a load of one model (the master reloads it; the workers share it), after
    which it serves again. Each step is a new client, so a new connection: a connection opened
    before a load or unload may still reach a retiring worker until it stops (docs/api.md)."""
    with served.client() as http:
        rest_index = http.post("/v2/repository/index", json={}, headers={"X-API-Key": KEY}).json()
    keyed = {"x-api-key": KEY}
    index, no_key = triton(
        served, [{"op": "index", "headers": keyed}, {"op": "unload", "model": "iris"}]
    )
    rows = ok(index)["models"]
    assert [(row["name"], row.get("version", ""), row["state"]) for row in rows] == [
        (row["name"], str(row.get("version", "")), row["state"]) for row in rest_index
    ]
    assert no_key["error"]["status"] == "StatusCode.UNAUTHENTICATED", no_key
    infer = {"op": "infer", "model": "iris", "inputs": INPUTS["iris"], "headers": keyed}
    try:
        ok(triton(served, [{"op": "unload", "model": "iris", "headers": keyed}])[0])
        (refused,) = triton(served, [infer])
        assert refused["error"]["status"] == "StatusCode.NOT_FOUND", refused
        assert "unloaded" in refused["error"]["message"]
        (state,) = triton(served, [{"op": "index", "headers": keyed}])
        assert {row["state"] for row in ok(state)["models"] if row["name"] == "iris"} == {
            "UNLOADED"
        }
    finally:
        ok(triton(served, [{"op": "load", "model": "iris", "headers": keyed}])[0])
    (served_again,) = triton(served, [infer])
    assert_equal_to_rest(served, "iris", ok(served_again))


def test_loading_an_unknown_model_is_not_found(served: Served) -> None:
    (unknown_model,) = triton(
        served, [{"op": "load", "model": "no-such-model", "headers": {"x-api-key": KEY}}]
    )
    assert unknown_model["error"]["status"] == "StatusCode.NOT_FOUND", unknown_model

"""The gRPC surface (app.grpc) in-process: the real server (`start_grpc`, or the app's lifespan) on
127.0.0.1 with a port of its own, called through real gRPC channels with the protocol's stubs, on
real models from a real store. Answers are compared with the data plane's own output for the same
rows (`run`); tests/e2e/test_grpc.py compares them with REST's, through unmodified clients."""

import asyncio
import io
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from app.access_log import ACCESS_LOG
from app.codecs.grpc.proto import grpc_predict_v2_pb2 as pb
from app.codecs.grpc.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from app.config import Settings
from app.grpc.server import start_grpc
from app.grpc.servicer import call_deadline
from app.main import create_app
from app.metrics import TURN_METRICS
from app.serving.dataplane import DataPlane
from app.serving.model import run
from app.serving.schema import Row
from tests.conftest import build_store
from tests.e2e.conftest import free_port
from tests.e2e.slow_model import MAGIC, write_sleepy_model

Result = TypeVar("Result")
Code = grpc.StatusCode
INFER = "/inference.GRPCInferenceService/ModelInfer"
FLOWER = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = build_store(tmp_path_factory.mktemp("grpc") / "models")
    write_sleepy_model(store)
    return store


def settings_for(store: Path, **overrides: Any) -> Settings:
    return Settings(
        model_dir=store, max_rows=50, grpc_port=0, grpc_max_message_bytes=64 * 1024, **overrides
    )


def loaded(settings: Settings) -> DataPlane:
    """The data plane an app builds (load hooks: backends, micro-batching), its store loaded."""
    dataplane: DataPlane = create_app(settings).state.dataplane
    dataplane.registry.load()
    return dataplane


@pytest.fixture(scope="module")
def dataplane(store: Path) -> DataPlane:
    return loaded(settings_for(store))


@asynccontextmanager
async def serving(dataplane: DataPlane, settings: Settings) -> AsyncIterator[Any]:
    server = await start_grpc(dataplane, settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def session(
    dataplane: DataPlane, settings: Settings, scenario: Callable[[Any], Awaitable[Result]]
) -> Result:
    """Run `scenario(channel)` against a server of its own, on an event loop of its own."""

    async def run_it() -> Result:
        async with serving(dataplane, settings) as channel:
            return await scenario(channel)

    return asyncio.run(run_it())


def flowers_request(rows: list[list[float]], model: str = "flowers", **fields: Any) -> Any:
    message = pb.ModelInferRequest(model_name=model, **fields)
    tensor = message.inputs.add(name="input-0", datatype="FP64", shape=[len(rows), len(rows[0])])
    tensor.contents.fp64_contents.extend(np.ravel(rows).tolist())
    return message


async def failure(call: Awaitable[Any]) -> tuple[Any, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details()


# -- the protocol's calls -------------------------------------------------------------------------
def test_liveness_readiness_and_metadata(dataplane: DataPlane, store: Path) -> None:
    async def scenario(channel: Any) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
        server = await stub.ServerMetadata(pb.ServerMetadataRequest())
        assert (server.name, server.version) == ("modelport", "0.1.0")
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="flowers"))).ready
        assert (await stub.ModelReady(pb.ModelReadyRequest(name="flowers", version="2"))).ready
        meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="flowers"))
        assert (meta.name, list(meta.versions), meta.platform) == (
            "flowers",
            ["1", "2"],
            "scikit-learn",
        )
        assert [(t.name, list(t.shape)) for t in meta.outputs] == [
            ("predict", [-1]),
            ("predict_proba", [-1, 3]),
        ]
        for call in (
            stub.ModelReady(pb.ModelReadyRequest(name="nope")),
            stub.ModelMetadata(pb.ModelMetadataRequest(name="flowers", version="3")),
        ):
            assert (await failure(call))[0] is Code.NOT_FOUND
        code, details = await failure(
            stub.ModelMetadata(pb.ModelMetadataRequest(name="flowers", version="two"))
        )
        assert code is Code.INVALID_ARGUMENT and "positive integer" in details

    session(dataplane, settings_for(store), scenario)


def test_infer_answers_what_the_model_answers(dataplane: DataPlane, store: Path) -> None:
    rows = [FLOWER, [6.6, 3.0, 5.5, 2.0]]
    raw = pb.ModelInferRequest(model_name="flowers", model_version="2")
    raw.inputs.add(name="input-0", datatype="FP32", shape=[2, 4])
    raw.raw_input_contents.append(np.asarray(rows, dtype="<f4").tobytes())

    async def scenario(channel: Any) -> tuple[Any, Any]:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return await stub.ModelInfer(flowers_request(rows, id="t-1")), await stub.ModelInfer(raw)

    typed, binary = session(dataplane, settings_for(store), scenario)
    default = dataplane.model("flowers")
    expected = run(default, [tuple(row) for row in rows])
    assert (typed.model_version, typed.id) == (str(default.version), "t-1")
    assert [label.decode() for label in typed.outputs[0].contents.bytes_contents] == list(
        expected.predictions
    )
    assert expected.probabilities is not None
    assert list(typed.outputs[1].contents.fp64_contents) == expected.probabilities.ravel().tolist()
    pinned = dataplane.model("flowers", 2)
    as_float32: list[Row] = [tuple(np.asarray(row, dtype=np.float32).tolist()) for row in rows]
    assert binary.model_version == "2" and not binary.outputs[0].contents.bytes_contents
    proba = np.frombuffer(binary.raw_output_contents[1], dtype="<f8").reshape(2, 3)
    np.testing.assert_array_equal(proba, run(pinned, as_float32).probabilities)


def test_every_refusal_has_its_code_and_the_server_keeps_serving(
    dataplane: DataPlane, store: Path
) -> None:
    cases = [
        (flowers_request([FLOWER], model="nope"), Code.NOT_FOUND, "not found"),
        (flowers_request([FLOWER], model_version="7"), Code.NOT_FOUND, "no version 7"),
        (flowers_request([FLOWER], model_version="0"), Code.INVALID_ARGUMENT, "positive integer"),
        (flowers_request([FLOWER[:3]]), Code.INVALID_ARGUMENT, "[N, 4]"),
        (flowers_request([[1.0] * 4] * 51), Code.INVALID_ARGUMENT, "Too many rows"),
        (flowers_request([[float("inf"), 3.5, 1.4, 0.2]]), Code.INVALID_ARGUMENT, "finite"),
    ]
    wrong_type = flowers_request([FLOWER])
    wrong_type.inputs[0].datatype = "BYTES"
    cases.append((wrong_type, Code.INVALID_ARGUMENT, "is a number"))
    wrong_count = flowers_request([FLOWER])
    wrong_count.inputs[0].shape[:] = [2, 4]
    cases.append((wrong_count, Code.INVALID_ARGUMENT, "needs 8 elements"))

    async def scenario(channel: Any) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for message, code, needle in cases:
            found, details = await failure(stub.ModelInfer(message))
            assert found is code and needle in details, (code, needle, found, details)
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest())
        assert {(row.name, row.state) for row in index.models} >= {("flowers", "READY")}
        # Writes are off without a key or MODELPORT_REPOSITORY_WRITES=true.
        refused = await failure(
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="flowers"))
        )
        assert refused[0] is Code.PERMISSION_DENIED, refused
        assert len((await stub.ModelInfer(flowers_request([FLOWER]))).outputs) == 2

    session(dataplane, settings_for(store), scenario)


def test_oversize_messages_are_refused_with_resource_exhausted(
    dataplane: DataPlane, store: Path
) -> None:
    async def scenario(channel: Any) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        big = flowers_request([[1.0] * 4] * 50)
        big.id = "x" * (70 * 1024)  # past the 64 KiB limit set for this server
        code, details = await failure(stub.ModelInfer(big))
        assert code is Code.RESOURCE_EXHAUSTED and "larger than max" in details
        assert (await stub.ModelInfer(flowers_request([FLOWER]))).outputs

    session(dataplane, settings_for(store), scenario)


def test_the_api_key_is_needed_for_inference_only(store: Path) -> None:
    settings = settings_for(store, api_key="s3cret")

    async def scenario(channel: Any) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        message = flowers_request([FLOWER])
        for metadata in ((), (("x-api-key", "wrong"),), (("x-api-key", "s3cret "),)):
            code, details = await failure(stub.ModelInfer(message, metadata=metadata))
            assert code is Code.UNAUTHENTICATED and "x-api-key" in details
        answered = await stub.ModelInfer(message, metadata=(("x-api-key", "s3cret"),))
        assert answered.outputs
        assert (await stub.ModelMetadata(pb.ModelMetadataRequest(name="flowers"))).name

    session(loaded(settings), settings, scenario)


# -- deadlines, batching and shutdown ---------------------------------------------------------------
def sleepy(first: float) -> Any:
    message = pb.ModelInferRequest(model_name="sleepy")
    tensor = message.inputs.add(name="input-0", datatype="FP64", shape=[1, 2])
    tensor.contents.fp64_contents.extend([first, 1.0])
    return message


def test_a_deadline_cancels_the_call_and_spares_the_batch(
    dataplane: DataPlane, store: Path
) -> None:
    async def scenario(channel: Any) -> list[Any]:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        # Held by the model for 3 s, past its deadline: the client is answered at the deadline.
        expired = await failure(stub.ModelInfer(sleepy(MAGIC), timeout=0.5))
        assert expired[0] is Code.DEADLINE_EXCEEDED
        # A call held in flight, two queued behind it, one of them given up: the others are
        # answered, together, and so is the next call.
        held = asyncio.ensure_future(stub.ModelInfer(sleepy(MAGIC), timeout=30))
        await asyncio.sleep(0.5)
        gives_up = asyncio.ensure_future(stub.ModelInfer(sleepy(2.0), timeout=1))
        waits = asyncio.ensure_future(stub.ModelInfer(sleepy(3.0), timeout=30))
        assert (await failure(gives_up))[0] is Code.DEADLINE_EXCEEDED
        answers = [await held, await waits, await stub.ModelInfer(sleepy(4.0), timeout=30)]
        return [list(answer.outputs[0].contents.fp64_contents) for answer in answers]

    answers = session(dataplane, settings_for(store), scenario)
    assert answers == [pytest.approx([2 * value + 2]) for value in (MAGIC, 3.0, 4.0)]


def test_a_full_queue_is_refused_at_once_with_resource_exhausted(store: Path) -> None:
    settings = settings_for(store, queue_max_rows=1)
    dataplane = loaded(settings)

    async def scenario(channel: Any) -> tuple[Any, list[Any]]:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        held = asyncio.ensure_future(stub.ModelInfer(sleepy(MAGIC), timeout=30))
        await asyncio.sleep(0.5)  # in the estimator now: the next call queues
        queued = asyncio.ensure_future(stub.ModelInfer(sleepy(2.0), timeout=30))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        call = stub.ModelInfer(sleepy(3.0), timeout=30)
        refused = await failure(call)
        assert asyncio.get_running_loop().time() - started < 1.0  # not after the held call
        # When to try again, as gRPC says it (gRFC A6); HTTP's Retry-After in milliseconds.
        assert ("grpc-retry-pushback-ms", "1000") in tuple(await call.trailing_metadata())
        answers = [await held, await queued]
        return refused, [list(answer.outputs[0].contents.fp64_contents) for answer in answers]

    (code, details), answers = session(dataplane, settings, scenario)
    assert code is Code.RESOURCE_EXHAUSTED
    assert "overloaded" in details and "retry after" in details
    assert answers == [pytest.approx([2 * value + 2]) for value in (MAGIC, 2.0)]


def test_the_requests_timeout_parameter_bounds_a_grpc_call(
    dataplane: DataPlane, store: Path
) -> None:
    """The protocol's `timeout` parameter (microseconds) tightens the call's own deadline."""

    async def scenario(channel: Any) -> tuple[Any, float]:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        message = sleepy(MAGIC)
        message.parameters["timeout"].int64_param = 300_000
        started = asyncio.get_running_loop().time()
        expired = await failure(stub.ModelInfer(message, timeout=30))
        return expired, asyncio.get_running_loop().time() - started

    (code, details), took = session(dataplane, settings_for(store), scenario)
    assert code is Code.DEADLINE_EXCEEDED, details
    assert took < 2.5  # answered at its 0.3 s deadline, not when the 3 s call ended


@pytest.mark.parametrize(
    ("remaining", "cap", "seconds"),
    [
        (None, 30.0, 30.0),  # no client deadline: the server's default
        (None, 0.0, None),  # neither
        (2.0, 30.0, 2.0),
        (90.0, 30.0, 30.0),  # capped
        (90.0, 0.0, 90.0),  # no cap
        (-1.0, 30.0, 0.0),  # already past: expires at once
    ],
)
def test_a_calls_deadline_is_the_clients_capped_by_the_setting(
    remaining: float | None, cap: float, seconds: float | None
) -> None:
    deadline = call_deadline(remaining, cap)
    if seconds is None:
        assert deadline is None
    else:
        assert deadline is not None
        assert deadline.at - deadline.start == pytest.approx(seconds, abs=1e-6)


def test_stopping_lets_calls_in_flight_finish(dataplane: DataPlane, store: Path) -> None:
    async def scenario() -> tuple[Any, Any]:
        server = await start_grpc(dataplane, settings_for(store), address="127.0.0.1:0")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            held = asyncio.ensure_future(stub.ModelInfer(sleepy(MAGIC), timeout=30))
            await asyncio.sleep(0.5)
            stopping = asyncio.ensure_future(server.stop(grace=20))
            await asyncio.sleep(0.2)
            refused = (await failure(stub.ModelInfer(sleepy(1.0), timeout=5)))[0]
            answer = await held
            await stopping
        return answer, refused

    answer, refused = asyncio.run(scenario())
    assert list(answer.outputs[0].contents.fp64_contents) == pytest.approx([2 * MAGIC + 2])
    assert refused is Code.UNAVAILABLE


# -- observability, health, reflection, wiring ------------------------------------------------------
def test_calls_are_logged_and_counted(
    dataplane: DataPlane, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ACCESS_LOG.flush()
    captured = io.StringIO()
    monkeypatch.setattr(ACCESS_LOG, "stream", captured)
    labels = {"route": INFER, "method": "GRPC"}

    def count(status: str) -> float:
        value = REGISTRY.get_sample_value("modelport_requests_total", {**labels, "status": status})
        return value or 0.0

    before = count("200"), count("404")

    async def scenario(channel: Any) -> Any:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await failure(stub.ModelInfer(flowers_request([FLOWER], model="nope")))
        call = stub.ModelInfer(
            flowers_request([FLOWER]), metadata=(("x-request-id", "grpc-call-7"),)
        )
        await call
        return await call.trailing_metadata()

    trailing = session(dataplane, settings_for(store), scenario)
    ACCESS_LOG.flush()
    TURN_METRICS.flush()
    assert ("x-request-id", "grpc-call-7") in tuple(trailing)
    assert (count("200"), count("404")) == (before[0] + 1, before[1] + 1)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    answered = next(line for line in lines if line["request_id"] == "grpc-call-7")
    assert {key: answered[key] for key in ("method", "route", "status", "grpc_status")} == {
        "method": "GRPC",
        "route": INFER,
        "status": 200,
        "grpc_status": "OK",
    }
    assert (answered["model"], answered["version"]) == ("flowers", 1)
    refused = [line for line in lines if line["grpc_status"] == "NOT_FOUND"]
    assert refused and refused[0]["status"] == 404 and refused[0]["model"] == "nope"


def test_health_checks_follow_the_models(dataplane: DataPlane, store: Path, tmp_path: Path) -> None:
    async def statuses(channel: Any, services: list[str]) -> list[Any]:
        stub = health_pb2_grpc.HealthStub(channel)
        found: list[Any] = []
        for service in services:
            try:
                found.append(
                    (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status
                )
            except grpc.aio.AioRpcError as exc:
                found.append(exc.code())
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        found.append((await watch.read()).status)
        watch.cancel()
        return found

    names = ["", "inference.GRPCInferenceService", "flowers", "nope"]
    serving_, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    healthy = session(dataplane, settings_for(store), lambda channel: statuses(channel, names))
    assert healthy == [serving_, serving_, serving_, Code.NOT_FOUND, serving_]

    # A store with a refused model: the server is not ready, that model is not serving.
    broken_store = build_store(tmp_path / "models")
    shutil.copytree(broken_store / "line" / "1", broken_store / "broken" / "1")
    card = json.loads((broken_store / "broken" / "1" / "card.json").read_text())
    (broken_store / "broken" / "1" / "card.json").write_text(json.dumps({**card, "name": "broken"}))
    with (broken_store / "broken" / "1" / "model.joblib").open("ab") as artifact:
        artifact.write(b"tampered")  # its SHA-256 no longer matches the card
    settings = settings_for(broken_store)
    sick = session(
        loaded(settings), settings, lambda channel: statuses(channel, ["", "broken", "line"])
    )
    assert sick == [not_serving, not_serving, serving_, not_serving]


def test_reflection_lists_the_services(dataplane: DataPlane, store: Path) -> None:
    async def scenario(channel: Any) -> list[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for reply in replies:
            return [service.name for service in reply.list_services_response.service]
        return []

    services = session(dataplane, settings_for(store), scenario)
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(services)


def test_the_app_lifespan_serves_grpc_while_it_runs(store: Path) -> None:
    port = free_port()
    app = create_app(Settings(model_dir=store, grpc_port=port, host="127.0.0.1"))
    request = pb.ServerLiveRequest()
    with TestClient(app) as client, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert client.get("/healthz").status_code == 200
        assert pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(request, timeout=10).live
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(request, timeout=2)
        assert caught.value.code() in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED)

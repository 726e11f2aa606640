"""The data plane (app.serving.dataplane) on a real store: every surface's codec through the one
path, batched together, answering what each request gets on its own."""

import asyncio
import io
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.codecs.forms import form_reply, form_request
from app.codecs.json_rows import json_reply, json_request
from app.codecs.uploads import upload_json_reply, upload_request
from app.codecs.v2.infer import infer_reply, infer_request
from app.serving.batching import BatchPolicy, MicroBatcher, batching_hook
from app.serving.dataplane import DataPlane, Decoded
from app.serving.model import LoadedModel, run
from app.serving.offload import BLOCKING
from app.serving.registry import ModelRegistry
from app.serving.traffic import SESSION_PATTERN
from tests.app.serving.test_batching import calls
from tests.conftest import FLOWER_FEATURES, flower_rows


def dataplane_of(store: Path, *, batching: bool = True) -> DataPlane:
    hooks = [batching_hook(BatchPolicy(max_rows=64))] if batching else []
    registry = ModelRegistry(store, max_rows=50, on_load=hooks)
    registry.load()
    return DataPlane(registry)


def expected_labels(model: LoadedModel, rows: list[list[float]]) -> list[str]:
    output = run(model, np.array(rows, dtype=np.float64), observe=False)
    return [str(label) for label in output.predictions.tolist()]


def test_the_batching_hook_gives_every_loaded_version_a_batcher(store: Path) -> None:
    dataplane = dataplane_of(store)
    for model in dataplane.registry.loaded_models():
        assert isinstance(model.runner, MicroBatcher)
        assert model.runner.model is model


def test_every_surface_batches_together_and_gets_its_own_answer(store: Path) -> None:
    dataplane = dataplane_of(store)
    model = dataplane.model("flowers", 1)
    rows = flower_rows(4)
    csv = ",".join(FLOWER_FEATURES) + "\n" + "\n".join(",".join(map(str, r)) for r in rows[1:3])
    v2 = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": rows[3]}]}
    ).encode()
    form = list(zip(FLOWER_FEATURES, map(str, rows[0]), strict=True))

    async def all_surfaces() -> tuple[Any, ...]:
        return await asyncio.gather(
            dataplane.infer(
                model, json_request(json.dumps({"instances": rows}).encode()), json_reply, work=0
            ),
            dataplane.infer(
                model,
                upload_request(io.BytesIO(csv.encode()), max_image_pixels=10_000, csv_reply=False),
                upload_json_reply("rows.csv"),
                work=0,
            ),
            dataplane.infer(model, form_request(form), form_reply, work=0),
            dataplane.infer(model, infer_request(v2, None), infer_reply, work=0),
        )

    before_calls, before_rows = calls(model)
    as_json, as_file, as_form, (as_v2, _) = asyncio.run(all_surfaces())
    after_calls, after_rows = calls(model)

    # The first request runs at once, alone; the three that arrive meanwhile share one call.
    assert (after_calls - before_calls, after_rows - before_rows) == (2, 4 + 2 + 1 + 1)
    labels = expected_labels(model, rows)
    assert [item["label"] for item in json.loads(as_json)["predictions"]] == labels
    assert [item["label"] for item in json.loads(as_file)["predictions"]] == labels[1:3]
    assert as_form.predictions[0].label == labels[0]
    assert json.loads(as_v2)["outputs"][0]["data"] == labels[3:]


def test_a_version_loaded_without_hooks_runs_alone(store: Path) -> None:
    dataplane = dataplane_of(store, batching=False)
    model = dataplane.model("line")
    assert model.runner is None
    before = calls(model)

    reply = asyncio.run(
        dataplane.infer(model, json_request(b'{"instances": [[1.0, 2.0]]}'), json_reply, work=0)
    )

    assert json.loads(reply)["predictions"][0]["value"] == pytest.approx(3.0 + 2.0 - 2.0)
    assert calls(model)[0] == before[0] + 1


def test_resolve_pins_routes_by_session_and_hands_out_new_sessions(store: Path) -> None:
    dataplane = dataplane_of(store)
    assert dataplane.resolve("flowers", 2, "whatever-session").model.version == 2
    assert dataplane.resolve("flowers", 2, None).new_session is None

    fresh = dataplane.resolve("flowers")
    assert fresh.new_session is not None and SESSION_PATTERN.fullmatch(fresh.new_session)
    again = dataplane.resolve("flowers", None, fresh.new_session)
    assert (again.model, again.new_session) == (fresh.model, None)
    # Over many sessions the 90/10 split sends some clients to each version.
    versions = {
        dataplane.resolve("flowers", None, f"session-{i:04d}").model.version for i in range(200)
    }
    assert versions == {1, 2}
    # A model without a split needs no session.
    assert dataplane.resolve("line").new_session is None


def test_a_lone_request_runs_a_cheap_call_on_the_loop_and_concurrent_ones_batch(
    store: Path,
) -> None:
    dataplane = dataplane_of(store)
    model = dataplane.model("line")
    assert isinstance(model.runner, MicroBatcher)
    model.runner.small_call_seconds = 0.0  # as measured for a compiled backend's call
    body = b'{"instances": [[1.0, 2.0]]}'

    async def lone() -> bool:
        others: list[str] = []
        asyncio.get_running_loop().call_soon(others.append, "other")
        await dataplane.infer(model, json_request(body), json_reply, work=0)
        return not others  # nothing else ran: the call never left the event loop

    assert asyncio.run(lone())
    assert dataplane.in_flight == 0

    # Another request in flight (its decoding held in a thread): this one is not alone, so
    # its call goes to a thread, where concurrent requests batch.
    release = threading.Event()

    def held(model: LoadedModel) -> Decoded[None]:
        release.wait(timeout=30)
        return json_request(body)(model)

    async def beside_another() -> bool:
        other = asyncio.create_task(dataplane.infer(model, held, json_reply, work=BLOCKING))
        await asyncio.sleep(0)  # one turn: the other request is now inside infer, decoding
        assert dataplane.in_flight == 1
        others: list[str] = []
        asyncio.get_running_loop().call_soon(others.append, "other")
        await dataplane.infer(model, json_request(body), json_reply, work=0)
        release.set()
        await other
        return not others

    assert not asyncio.run(beside_another())
    assert dataplane.in_flight == 0

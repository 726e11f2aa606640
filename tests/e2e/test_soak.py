"""Soak: a bounded mixed load against the real `modelport serve` (2 gunicorn/uvicorn workers).

For MODELPORT_SOAK_SECONDS (default 60) CONCURRENCY clients send, over loopback, a mix of valid
requests on every surface and model (JSON rows, pinned versions, CSV and PNG uploads, forms,
v2 JSON and binary tensors, catalogue reads) with hostile ones interleaved (malformed JSON,
wrong types, NaN and overflowing numbers, unknown models and versions, oversized bodies, too
many rows, bad CSV, images to tabular models, bad forms, bad tensors, path traversal...).

- every valid request answers 2xx, and the same answer it gives alone (labels exactly, numbers
  to 1e-9): no mixed-up rows under concurrency;
- every hostile request answers its documented 4xx, with the uniform error body
  (`{"error", "detail"}`, or the protocol's `{"error"}` under /v2): never a 5xx;
- the same two workers serve throughout, and nothing is logged as an error;
- each worker's own memory (Pss, from /proc/PID/smaps_rollup) grows less than MAX_GROWTH from
  the end of the warm-up (the first WARMUP_SHARE of the run) to the end.

Request counts, throughput and memory are reported after the run (the "e2e summaries").
"""

import asyncio
import json
import math
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import SUMMARY, Server, start_server, stop_server
from tests.routers.test_files import digit_image, held_out_digits

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SECONDS = float(os.environ.get("MODELPORT_SOAK_SECONDS") or 60)
CONCURRENCY = int(os.environ.get("MODELPORT_SOAK_CONCURRENCY") or 12)
WARMUP_SHARE = 0.25  # memory is compared from the end of the first quarter of the run
MAX_GROWTH = 0.10
HOSTILE_SHARE = 0.25
# Small limits, so the oversized and too-many-rows requests are cheap to send.
MAX_BODY_BYTES = 256 * 1024
MAX_UPLOAD_BYTES = 512 * 1024
MAX_ROWS = 500
SESSION = "soak-session-0000"  # one canary cookie for every client: answers are comparable
MEMORY_FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


@dataclass(frozen=True)
class Call:
    """One request of the mix. `status` None: a valid request (2xx, same answer as alone)."""

    kind: str
    method: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)  # httpx request keyword arguments
    status: int | None = None
    compare: bool = True


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    memory: list[tuple[float, dict[int, dict[str, int]]]] = field(default_factory=list)

    def problem(self, call: Call, what: str) -> None:
        self.counts["problems"] += 1
        if len(self.problems) < 25:
            self.problems.append(f"{call.kind} ({call.method} {call.path}): {what}")


@pytest.fixture(scope="module")
def soaked(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        trained_store,
        tmp_path_factory.mktemp("soak") / "serve.log",
        log_level="warning",
        max_body_bytes=str(MAX_BODY_BYTES),
        max_upload_bytes=str(MAX_UPLOAD_BYTES),
        max_rows=str(MAX_ROWS),
    )
    yield running
    stop_server(running)


# -- the mix ----------------------------------------------------------------------------------


def _csv(record: dict[str, Any], rows: int) -> bytes:
    names = list(record)
    line = ",".join(str(record[name]) for name in names)
    return ("\r\n".join([",".join(names), *[line] * rows]) + "\r\n").encode()


def _binary_infer(example: dict[str, Any], rows: int) -> tuple[bytes, dict[str, str]]:
    """tritonclient's binary tensor extension: a JSON header, then raw little-endian FP32."""
    tensor = example["inputs"][0]
    width = tensor["shape"][1]
    data = np.tile(np.asarray(tensor["data"], dtype="<f4"), rows).tobytes()
    header = {
        "inputs": [
            {
                "name": tensor["name"],
                "shape": [rows, width],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    return head + data, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }


def valid_calls(document: dict[str, Any]) -> list[Call]:
    """Valid requests built from the documented examples of every model's operations."""
    calls: list[Call] = []
    records: dict[str, dict[str, Any]] = {}
    paths: dict[str, dict[str, Any]] = document["paths"]
    for path, item in paths.items():
        operation = item.get("post")
        if operation is None:
            continue
        content = operation["requestBody"]["content"]
        name = path.removeprefix("/v2").split("/")[2]
        if path.endswith("/predict"):
            example = content["application/json"]["example"]
            records.setdefault(name, example["instances"][0])
            for rows in (1, 16):
                body = {"instances": example["instances"] * rows}
                calls.append(Call(f"json {rows} row(s)", "POST", path, {"json": body}))
        elif path.endswith("/infer"):
            example = content["application/json"]["example"]
            calls.append(Call("v2 json", "POST", path, {"json": example}))
            if len(example["inputs"]) == 1:  # one [1, n] numeric tensor
                binary, headers = _binary_infer(example, 8)
                options = {"content": binary, "headers": headers}
                calls.append(Call("v2 binary", "POST", path, options))
        elif path.endswith("/predict/form"):
            schema = content["application/x-www-form-urlencoded"]["schema"]
            fields = {
                key: str(spec["example"])
                for key, spec in schema["properties"].items()
                if "example" in spec
            }
            calls.append(Call("form", "POST", path, {"data": fields}))
    for path, item in paths.items():
        if "post" in item and path.endswith("/predict/file"):
            name = path.split("/")[2]
            if name == "digits":
                images, _ = held_out_digits()
                png = digit_image(images[0])
                calls.append(
                    Call("png", "POST", path, {"files": {"file": ("d.png", png, "image/png")}})
                )
            else:
                upload = _csv(records[name], 20)
                calls.append(
                    Call("csv", "POST", path, {"files": {"file": ("r.csv", upload, "text/csv")}})
                )
                calls.append(
                    Call(
                        "csv reply",
                        "POST",
                        path,
                        {
                            "files": {"file": ("r.csv", upload, "text/csv")},
                            "headers": {"Accept": "text/csv"},
                        },
                    )
                )
    for path in ("/healthz", "/readyz", "/models", "/models/iris", "/v2/models/pets"):
        calls.append(Call("catalogue", "GET", path))
    calls.append(Call("catalogue", "GET", "/models/iris/form", compare=False))
    calls.append(Call("catalogue", "GET", "/metrics", compare=False))
    return calls


IRIS = "/models/iris/predict"
IRIS_V2 = "/v2/models/iris/infer"
ROW = [5.1, 3.5, 1.4, 0.2]
JSON = {"Content-Type": "application/json"}


def _tensor(**changes: Any) -> dict[str, Any]:
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}
    return {"inputs": [{**tensor, **changes}]}


def _short_binary_tensor() -> Call:
    """A binary FP32 tensor whose bytes fall short of its declared binary_data_size."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    body = head + struct.pack("<3f", 1, 2, 3)
    return Call("v2 binary too short", "POST", IRIS_V2, {"content": body, "headers": headers}, 400)


def hostile_calls() -> list[Call]:
    """Client mistakes and attacks, each with its documented status."""
    oversized = b'{"instances": [' + b" " * MAX_BODY_BYTES + b"]}"
    too_many = {"instances": [ROW] * (MAX_ROWS + 1)}
    csv_file = "/models/iris/predict/file"
    images, _ = held_out_digits()
    png = digit_image(images[1])

    def raw(kind: str, path: str, body: bytes, status: int, **headers: str) -> Call:
        return Call(kind, "POST", path, {"content": body, "headers": {**JSON, **headers}}, status)

    def upload(kind: str, path: str, content: bytes, status: int) -> Call:
        return Call(kind, "POST", path, {"files": {"file": ("x.csv", content, "text/csv")}}, status)

    return [
        raw("malformed json", IRIS, b'{"instances": [[5.1, 3.5', 400),
        raw("not utf-8", IRIS, b'{"instances": [["\xff\xfe"]]}', 400),
        raw("empty body", IRIS, b"", 400),
        raw("wrong types", IRIS, b'{"instances": [["5.1", true, null, {}]]}', 422),
        raw("NaN token", IRIS, b'{"instances": [[NaN, 3.5, 1.4, 0.2]]}', 422),
        raw("Infinity token", IRIS, b'{"instances": [[5.1, -Infinity, 1.4, 0.2]]}', 422),
        raw("overflowing number", IRIS, b'{"instances": [[1e999, 3.5, 1.4, 0.2]]}', 422),
        raw("beyond float32", IRIS, b'{"instances": [[5.1, 3.5, 1e39, 0.2]]}', 422),
        raw("negative length", IRIS, b'{"instances": [[-5.1, 3.5, 1.4, 0.2]]}', 422),
        raw("duplicate key", IRIS, b'{"instances": [[5.1, 3.5, 1.4, 0.2]], "instances": []}', 422),
        raw("extra feature", IRIS, b'{"instances": [[5.1, 3.5, 1.4, 0.2, 9.9]]}', 422),
        raw("no instances", IRIS, b'{"instances": []}', 422),
        raw("unknown category", "/models/pets/predict", b'{"instances": [["blue", 3.5, 4]]}', 422),
        raw("not json media type", IRIS, b"5.1,3.5,1.4,0.2", 415, **{"Content-Type": "text/csv"}),
        raw("oversized body", IRIS, oversized, 413),
        Call("too many rows", "POST", IRIS, {"json": too_many}, 422),
        Call("unknown model", "POST", "/models/no-such-model/predict", {"json": {}}, 404),
        Call("unknown version", "POST", "/models/iris/versions/99/predict", {"json": {}}, 404),
        Call("bad version", "POST", "/models/iris/versions/zero/predict", {"json": {}}, 422),
        Call("wrong method", "GET", IRIS, {}, 405),
        Call("traversal", "GET", "/models/..%2F..%2Fetc%2Fpasswd", {}, 404),
        Call("traversal", "POST", "/models/%2e%2e%2f%2e%2e%2fetc/predict", {"json": {}}, 404),
        Call("traversal", "GET", "/models/iris/versions/..%2F..%2F2", {}, 404),
        Call("unknown path", "GET", "/models/iris/predict/../../../../etc/passwd", {}, 404),
        upload("csv not utf-8", csv_file, b"sepal_length\n\xff\xfe\n", 400),
        upload("csv bad quoting", csv_file, b'sepal_length,"sepal_width\n1,"2\n', 400),
        upload("csv missing column", csv_file, b"sepal_length,sepal_width\n1,2\n", 422),
        upload(
            "csv bad cell",
            csv_file,
            b"sepal_length,sepal_width,petal_length,petal_width\n5.1,abc,1.4,0.2\n",
            422,
        ),
        upload(
            "csv with nan",
            csv_file,
            b"sepal_length,sepal_width,petal_length,petal_width\nnan,3.5,1.4,0.2\n",
            422,
        ),
        upload("csv to image model", "/models/digits/predict/file", b"a,b\n1,2\n", 415),
        Call(
            "image to tabular model",
            "POST",
            csv_file,
            {"files": {"file": ("d.png", png, "image/png")}},
            415,
        ),
        Call("upload without file", "POST", csv_file, {"data": {"x": "1"}}, 422),
        Call(
            "form missing field",
            "POST",
            "/models/iris/predict/form",
            {"data": {"sepal_length": "5.1"}},
            422,
        ),
        Call(
            "form not a number",
            "POST",
            "/models/iris/predict/form",
            {
                "data": dict(
                    zip(
                        ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                        ["x", "1", "1", "1"],
                        strict=True,
                    )
                )
            },
            422,
        ),
        Call("form as json", "POST", "/models/iris/predict/form", {"json": {"a": 1}}, 415),
        Call(
            "form with a file",
            "POST",
            "/models/iris/predict/form",
            {"files": {"file": ("x.csv", b"1", "text/csv")}},
            400,
        ),
        raw("v2 malformed json", IRIS_V2, b'{"inputs": [', 400),
        Call("v2 data/shape mismatch", "POST", IRIS_V2, {"json": _tensor(shape=[2, 4])}, 400),
        Call("v2 BOOL", "POST", IRIS_V2, {"json": _tensor(datatype="BOOL")}, 400),
        Call("v2 strings", "POST", IRIS_V2, {"json": _tensor(data=["a", "b", "c", "d"])}, 400),
        Call(
            "v2 negative length", "POST", IRIS_V2, {"json": _tensor(data=[-1, 3.5, 1.4, 0.2])}, 400
        ),
        Call(
            "v2 unknown output",
            "POST",
            IRIS_V2,
            {"json": {**_tensor(), "outputs": [{"name": "secret"}]}},
            400,
        ),
        raw(
            "v2 bad header length",
            IRIS_V2,
            json.dumps(_tensor()).encode(),
            400,
            **{"Inference-Header-Content-Length": "-1"},
        ),
        _short_binary_tensor(),
        Call(
            "v2 too many rows",
            "POST",
            IRIS_V2,
            {"json": _tensor(shape=[MAX_ROWS + 1, 4], data=ROW * (MAX_ROWS + 1))},
            400,
        ),
        Call(
            "v2 unknown model", "POST", "/v2/models/no-such-model/infer", {"json": _tensor()}, 404
        ),
        Call("v2 traversal", "GET", "/v2/models/..%2F..%2Fetc%2Fpasswd/ready", {}, 404),
    ]


# -- checking answers -------------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal JSON, numbers to 1e-9 (a batch's BLAS kernel may round the last bit differently)."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = (int, float)
        return (
            isinstance(a, numbers)
            and isinstance(b, numbers)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return bool(a == b)


def _answer(response: httpx.Response) -> Any:
    """What a valid answer is compared by: its JSON, CSV cells, or (binary) its size."""
    media = response.headers.get("content-type", "")
    if media.startswith("application/json"):
        return response.json()
    if media.startswith("text/csv"):
        return [
            [_number_or_text(cell) for cell in row.split(",")] for row in response.text.splitlines()
        ]
    return len(response.content)


def _number_or_text(cell: str) -> float | str:
    try:
        return float(cell)
    except ValueError:
        return cell


def _error_shape(call: Call, response: httpx.Response) -> str | None:
    """What is wrong with a refusal's body, if anything."""
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return f"no error envelope: {body!r:.200}"
    keys = {"error"} if call.path.startswith("/v2") else {"error", "detail"}
    if set(body) != keys:
        return f"envelope keys {sorted(body)}, expected {sorted(keys)}"
    if "Traceback" in response.text:
        return "a traceback in the body"
    return None


# -- the run ----------------------------------------------------------------------------------


def _memory(pid: int) -> dict[str, int]:
    """kB per field of a process's /proc/PID/smaps_rollup."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in MEMORY_FIELDS:
            values[name] = int(rest.split()[0])
    return values


async def _sample_memory(workers: list[int], tally: Tally, stop: asyncio.Event) -> None:
    while True:
        tally.memory.append((time.monotonic() - tally.started, {p: _memory(p) for p in workers}))
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
            return
        except TimeoutError:
            pass


async def _client(
    http: httpx.AsyncClient,
    number: int,
    valid: list[tuple[Call, Any]],
    hostile: list[Call],
    tally: Tally,
    deadline: float,
) -> None:
    picker = random.Random(number)  # each client its own fixed sequence
    while time.monotonic() < deadline:
        is_hostile = picker.random() < HOSTILE_SHARE
        if is_hostile:
            call, expected = picker.choice(hostile), None
        else:
            call, expected = picker.choice(valid)
        started = time.monotonic()
        try:
            response = await http.request(call.method, call.path, **call.options)
        except httpx.HTTPError as exc:
            tally.problem(call, f"{type(exc).__name__}: {exc}")
            continue
        tally.counts["hostile" if is_hostile else "valid"] += 1
        tally.statuses[response.status_code] += 1
        if call.status is None:
            tally.latencies.append(time.monotonic() - started)
            if not response.is_success:
                tally.problem(call, f"{response.status_code}: {response.text[:300]}")
            elif call.compare and not _same(_answer(response), expected):
                tally.problem(call, f"answer differs from the answer alone: {response.text[:300]}")
        elif response.status_code != call.status:
            tally.problem(call, f"{response.status_code}, not {call.status}: {response.text[:300]}")
        else:
            shape = _error_shape(call, response)
            if shape:
                tally.problem(call, shape)


async def _soak(server: Server, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        http.cookies.set("modelport_session", SESSION)
        document = (await http.get("/openapi.json")).json()
        calls = valid_calls(document)
        # Each valid request's answer alone, before the load: the reference under load.
        valid: list[tuple[Call, Any]] = []
        for call in calls:
            alone = await http.request(call.method, call.path, **call.options)
            assert alone.is_success, (call, alone.status_code, alone.text[:500])
            valid.append((call, _answer(alone)))
        hostile = hostile_calls()
        workers = sorted(server.worker_pids())
        assert len(workers) == 2, workers
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_memory(workers, tally, stop))
        tally.started = time.monotonic()
        deadline = tally.started + SECONDS
        await asyncio.gather(
            *(_client(http, n, valid, hostile, tally, deadline) for n in range(CONCURRENCY))
        )
        stop.set()
        await sampler
        assert sorted(server.worker_pids()) == workers, "a worker was replaced during the soak"
        tally.counts["kinds"] = len(valid) + len(hostile)


def _growth(tally: Tally) -> dict[int, tuple[int, int, float]]:
    """Per worker: Pss (kB) at the end of the warm-up and at the end, and the growth."""
    warm = next(sample for at, sample in tally.memory if at >= SECONDS * WARMUP_SHARE)
    last = tally.memory[-1][1]
    return {
        pid: (warm[pid]["Pss"], last[pid]["Pss"], last[pid]["Pss"] / warm[pid]["Pss"] - 1)
        for pid in last
    }


def test_mixed_load_for_a_minute(
    soaked: Server, record_property: Callable[[str, object], None]
) -> None:
    tally = Tally()
    asyncio.run(_soak(soaked, tally))

    growth = _growth(tally)
    seconds = time.monotonic() - tally.started
    total = tally.counts["valid"] + tally.counts["hostile"]
    latencies = sorted(tally.latencies)
    p50, p99 = (latencies[int(len(latencies) * q)] * 1000 for q in (0.5, 0.99))
    private = {
        pid: (sample["Private_Clean"] + sample["Private_Dirty"]) / 1024
        for pid, sample in tally.memory[-1][1].items()
    }
    memory = ", ".join(
        f"worker {pid} Pss {warm / 1024:.0f} -> {last / 1024:.0f} MiB ({change:+.1%}; "
        f"private {private[pid]:.0f} MiB)"
        for pid, (warm, last, change) in growth.items()
    )
    record_property(
        SUMMARY,
        f"{total} requests in {seconds:.0f} s ({total / seconds:.0f}/s, {CONCURRENCY} clients): "
        f"{tally.counts['valid']} valid (p50 {p50:.1f} ms, p99 {p99:.1f} ms), "
        f"{tally.counts['hostile']} hostile; statuses {dict(sorted(tally.statuses.items()))}; "
        f"{tally.counts['problems']} problems; {memory}",
    )
    assert not tally.problems, "\n".join(tally.problems)
    assert tally.counts["valid"] > 0 and tally.counts["hostile"] > 0
    assert all(status < 500 for status in tally.statuses), tally.statuses
    log = soaked.log.read_text()
    assert "Traceback" not in log and "[ERROR]" not in log, log[-5000:]
    for pid, (warm, last, change) in growth.items():
        assert change < MAX_GROWTH, f"worker {pid}: Pss {warm} kB -> {last} kB ({change:+.1%})"

"""Payload logging under the real `modelport serve`: two forked workers, each with its own
writer thread, append to one size-rotated file; every request on every surface leaves exactly
one whole record, and the records are written out when the server stops."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import Server, start_server, stop_server

pytestmark = pytest.mark.e2e

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
MAX_BYTES = 8192


@pytest.fixture(scope="module")
def logged(
    trained_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("payloads")
    log = folder / "payloads.jsonl"
    server = start_server(
        trained_store,
        folder / "serve.log",
        payload_log_rate="1.0",
        payload_log_path=str(log),
        payload_log_max_bytes=str(MAX_BYTES),
        payload_log_backups="1000",
    )
    try:
        yield server, log
    finally:
        stop_server(server)


def send(server: Server, number: int) -> str:
    """One request on one of the four surfaces (by `number`); its request id."""
    request_id = f"e2e-{number}"
    headers = {"x-request-id": request_id}
    with server.client() as http:
        surface = number % 4
        if surface == 0:
            reply = http.post(
                "/models/iris/predict", json={"instances": [IRIS_ROW]}, headers=headers
            )
        elif surface == 1:
            csv = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
            reply = http.post(
                "/models/iris/predict/file", files={"file": ("rows.csv", csv)}, headers=headers
            )
        elif surface == 2:
            fields = dict(
                zip(
                    ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                    map(str, IRIS_ROW),
                    strict=True,
                )
            )
            reply = http.post("/models/iris/predict/form", data=fields, headers=headers)
        else:
            tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}
            reply = http.post("/v2/models/iris/infer", json={"inputs": [tensor]}, headers=headers)
    assert reply.status_code == 200, reply.text
    return request_id


def test_every_request_leaves_one_whole_record_across_workers(logged: tuple[Server, Path]) -> None:
    server, log = logged
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: both workers answer
        sent = list(pool.map(lambda n: send(server, n), range(200)))
    stop_server(server)  # each worker writes what it still holds as it shuts down
    files = [log, *log.parent.glob("payloads.jsonl.*[0-9]")]
    records = [orjson.loads(line) for file in files for line in file.read_bytes().splitlines()]
    assert sorted(r["request_id"] for r in records) == sorted(sent)
    assert len(files) > 2  # rotated while two processes wrote
    for file in files:
        assert file.stat().st_size <= MAX_BYTES
    for record in records:
        assert record["model"] == "iris"
        assert len(record["inputs"]) == len(record["outputs"])

"""Payload logging on every prediction surface, through the real stack: JSON rows, an uploaded
CSV, a form and the Open Inference Protocol each leave one record with the request's id, and
with a sink URL the same records arrive as CloudEvents."""

from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import flower_rows

ROW = flower_rows(1)[0]


def post_on_every_surface(client: TestClient) -> dict[str, Any]:
    """One request per surface, each with its own X-Request-ID; their predictions by id."""
    answers = {}
    json_reply = client.post(
        "/models/flowers/versions/1/predict",
        json={"instances": [ROW, ROW]},
        headers={"x-request-id": "json-1"},
    )
    answers["json-1"] = json_reply.json()["predictions"]
    file_reply = client.post(
        "/models/pets/predict/file",
        files={"file": ("rows.csv", "colour,weight,age\nginger,3.5,4\n", "text/csv")},
        headers={"x-request-id": "file-1"},
    )
    answers["file-1"] = file_reply.json()["predictions"]
    form_reply = client.post(
        "/models/line/predict/form", data={"a": "1.5", "b": "2"}, headers={"x-request-id": "form-1"}
    )
    answers["form-1"] = form_reply.json()["predictions"]
    v2_reply = client.post(
        "/v2/models/flowers/versions/1/infer",
        json={"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]},
        headers={"x-request-id": "v2-1"},
    )
    assert v2_reply.status_code == 200, v2_reply.text
    answers["v2-1"] = v2_reply.json()["outputs"]
    for reply in (json_reply, file_reply, form_reply):
        assert reply.status_code == 200, reply.text
    return answers


def test_every_surface_logs_its_requests_to_the_file(store: Path, tmp_path: Path) -> None:
    log = tmp_path / "payloads.jsonl"
    settings = Settings(
        model_dir=store, payload_log_rate=1.0, payload_log_path=log, access_log=False
    )
    with TestClient(create_app(settings)) as client:
        answers = post_on_every_surface(client)
    # The app's shutdown wrote what was queued.
    records = {r["request_id"]: r for r in map(orjson.loads, log.read_bytes().splitlines())}
    assert set(records) == set(answers)
    assert records["json-1"]["inputs"] == [ROW, ROW]
    assert records["json-1"]["outputs"] == answers["json-1"]
    assert (records["json-1"]["model"], records["json-1"]["version"]) == ("flowers", 1)
    assert records["file-1"]["inputs"] == [["ginger", 3.5, 4]]
    assert records["file-1"]["outputs"] == answers["file-1"]
    assert (records["form-1"]["model"], records["form-1"]["inputs"]) == ("line", [[1.5, 2.0]])
    assert records["form-1"]["outputs"] == answers["form-1"]
    v2 = records["v2-1"]
    assert v2["inputs"] == [ROW]
    assert v2["outputs"][0]["label"] == answers["v2-1"][0]["data"][0]
    for record in records.values():
        assert record["time"].endswith("+00:00")


def test_explanations_are_not_payload_logged(store: Path, tmp_path: Path) -> None:
    log = tmp_path / "payloads.jsonl"
    settings = Settings(
        model_dir=store, payload_log_rate=1.0, payload_log_path=log, access_log=False
    )
    with TestClient(create_app(settings)) as client:
        assert (
            client.post("/models/line/explain", json={"instances": [[1.0, 2.0]]}).status_code == 200
        )
    assert not log.exists() or log.read_bytes() == b""


def test_records_reach_a_cloudevents_sink(
    store: Path,
    cloudevents_sink: tuple[str, list[tuple[str, Any]]],
) -> None:
    url, received = cloudevents_sink
    settings = Settings(
        model_dir=store, payload_log_rate=1.0, payload_log_url=url, access_log=False
    )
    with TestClient(create_app(settings)) as client:
        answers = post_on_every_surface(client)
    events = [
        event for media, body in received for event in (body if isinstance(body, list) else [body])
    ]
    assert {event["data"]["request_id"] for event in events} == set(answers)
    assert {event["specversion"] for event in events} == {"1.0"}

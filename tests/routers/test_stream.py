"""POST /models/{name}/predict/stream through the real stack (TestClient): every row of large
bodies answered in order, CSV and NDJSON both ways, bad rows in place in both error modes, the
stream's own limits (and not the JSON body limit), errors before the reply in the envelope."""

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.config import Settings
from app.main import create_app
from schemas.stream import StreamErrorLine, StreamSummaryLine
from tests.conftest import FLOWER_FEATURES, build_store

CSV = {"content-type": "text/csv"}
NDJSON = {"content-type": "application/x-ndjson"}
PATH = "/models/flowers/versions/1/predict/stream"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("store") / "models")


def make_client(store: Path, **settings: Any) -> TestClient:
    options: dict[str, Any] = {"max_rows": 10_000, "max_body_bytes": 64 * 1024} | settings
    return TestClient(create_app(Settings(model_dir=store, access_log=False, **options)))


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[TestClient]:
    with make_client(store) as test_client:
        yield test_client


def flower_rows(count: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).uniform(0.1, 8, size=(count, 4)).round(3)


def csv_body(rows: np.ndarray[Any, Any], header: list[str] = FLOWER_FEATURES) -> bytes:
    order = [FLOWER_FEATURES.index(name) for name in header]
    lines = "".join(",".join(map(repr, row)) + "\n" for row in rows[:, order].tolist())
    return (",".join(header) + "\n" + lines).encode()


def ndjson_records(reply: httpx2.Response) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in reply.content.splitlines()]


def csv_records(reply: httpx2.Response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(reply.text)))


def expected_labels(store: Path, rows: np.ndarray[Any, Any]) -> list[str]:
    import joblib

    estimator = joblib.load(store / "flowers" / "1" / "model.joblib")
    labels: list[str] = estimator.predict(rows).tolist()
    return labels


def summary_of(line: str | bytes) -> dict[str, Any]:
    return StreamSummaryLine.model_validate_json(line).summary.model_dump()


def test_200k_csv_rows_are_answered_in_order_with_their_cells(
    client: TestClient, store: Path
) -> None:
    rows = flower_rows(200_000)
    header = ["petal_width", "sepal_length", "petal_length", "sepal_width"]
    body = csv_body(rows, header)
    reply = client.post(PATH, content=body, headers=CSV)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.headers["x-model-version"] == "1"
    records = csv_records(reply)
    assert records[0] == [
        *header,
        "prediction",
        *(f"probability_{c}" for c in ("setosa", "versicolor", "virginica")),
        "error",
    ]
    answers = records[1:-1]
    assert len(answers) == 200_000
    # Every row echoed as sent, in order, with its own prediction.
    sent = body.decode().splitlines()[1:]
    assert [",".join(answer[:4]) for answer in answers] == sent
    assert [answer[4] for answer in answers] == expected_labels(store, rows)
    assert all(answer[-1] == "" for answer in answers)
    assert summary_of(records[-1][-1]) == {
        "model_name": "flowers",
        "model_version": 1,
        "rows": 200_000,
        "errors": 0,
        "complete": True,
    }


def test_ndjson_rows_are_answered_one_line_each_in_order(client: TestClient, store: Path) -> None:
    rows = flower_rows(30_000, seed=1)
    records = [dict(zip(FLOWER_FEATURES, row, strict=True)) for row in rows[:15_000].tolist()]
    lines = [orjson.dumps(record) for record in records]
    lines += [orjson.dumps(row) for row in rows[15_000:].tolist()]
    reply = client.post(PATH, content=b"\n".join(lines) + b"\n", headers=NDJSON)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/x-ndjson"
    *answers, last = ndjson_records(reply)
    assert [answer["label"] for answer in answers] == expected_labels(store, rows)
    assert set(answers[0]["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert last["summary"]["rows"] == 30_000 and last["summary"]["complete"]


@pytest.mark.parametrize("source", ["csv", "ndjson"])
@pytest.mark.parametrize("accept", ["text/csv", "application/x-ndjson", "*/*"])
def test_either_format_in_either_format_out_same_answers(
    client: TestClient, source: str, accept: str
) -> None:
    rows = flower_rows(50, seed=2)
    if source == "csv":
        body, headers = csv_body(rows), dict(CSV)
    else:
        body = b"".join(orjson.dumps(row) + b"\n" for row in rows.tolist())
        headers = dict(NDJSON)
    reply = client.post(PATH, content=body, headers={**headers, "accept": accept})
    assert reply.status_code == 200, reply.text
    alone = client.post(
        "/models/flowers/versions/1/predict", json={"instances": rows.tolist()}
    ).json()["predictions"]
    replied = "csv" if accept == "text/csv" or (accept == "*/*" and source == "csv") else "ndjson"
    if replied == "csv":
        records = csv_records(reply)
        assert records[0][:4] == FLOWER_FEATURES
        labels = [record[4] for record in records[1:-1]]
        probabilities = [float(record[5]) for record in records[1:-1]]
    else:
        answers = ndjson_records(reply)[:-1]
        labels = [answer["label"] for answer in answers]
        probabilities = [answer["probabilities"]["setosa"] for answer in answers]
    assert labels == [item["label"] for item in alone]
    assert np.allclose(probabilities, [item["probabilities"]["setosa"] for item in alone])


def bad_file(rows: int, bad_at: dict[int, str]) -> bytes:
    lines = [",".join(map(repr, row)) for row in flower_rows(rows, seed=3).tolist()]
    for index, text in bad_at.items():
        lines[index] = text
    return (",".join(FLOWER_FEATURES) + "\n" + "\n".join(lines) + "\n").encode()


def test_bad_rows_mid_file_are_answered_in_their_place(client: TestClient) -> None:
    bad = {7_777: "5.1,abc,1.4,0.2", 15_000: "5.1,3.5", 15_001: "NaN,1,1,1"}
    body = bad_file(20_000, bad)
    for accept in ("text/csv", "application/x-ndjson"):
        reply = client.post(PATH, content=body, headers={**CSV, "accept": accept})
        assert reply.status_code == 200, reply.text
        if accept == "text/csv":
            records = csv_records(reply)[1:]
            answers, last = records[:-1], records[-1][-1]
            errors = {i: json.loads(a[-1]) for i, a in enumerate(answers) if a[-1]}
            assert all(answers[i][:-1] == [""] * 8 for i in errors)
        else:
            *lines, summary = reply.content.decode().splitlines()
            answers, last = [[line] for line in lines], summary
            errors = {i: json.loads(a) for i, a in enumerate(lines) if a.startswith('{"line"')}
        assert len(answers) == 20_000
        assert sorted(errors) == sorted(bad)
        lines_of = {
            i: (e["line"], e.get("column", e.get("error", {}).get("column")))
            for i, e in errors.items()
        }
        # Line numbers count the header as line 1.
        assert lines_of == {
            7_777: (7_779, "sepal_width"),
            15_000: (15_002, None),
            15_001: (15_003, "sepal_length"),
        }
        assert summary_of(last) == {
            "model_name": "flowers",
            "model_version": 1,
            "rows": 20_000,
            "errors": 3,
            "complete": True,
        }


def test_abort_stops_at_the_first_bad_row(client: TestClient) -> None:
    body = bad_file(20_000, {12_345: "5.1,abc,1.4,0.2", 15_000: "x,x,x,x"})
    reply = client.post(f"{PATH}?on_error=abort", content=body, headers={**NDJSON, **CSV})
    assert reply.status_code == 200, reply.text
    lines = reply.content.decode().splitlines()
    records = list(csv.reader(lines))
    assert len(records) == 1 + 12_346 + 1
    assert json.loads(records[-2][-1])["line"] == 12_347
    assert summary_of(records[-1][-1]) == {
        "model_name": "flowers",
        "model_version": 1,
        "rows": 12_346,
        "errors": 1,
        "complete": False,
    }
    refused = client.post(f"{PATH}?on_error=skip", content=body, headers=CSV)
    assert refused.status_code == 422
    assert refused.json()["error"] == "InvalidInput"


def test_the_json_body_limit_does_not_cap_streams(client: TestClient) -> None:
    body = csv_body(flower_rows(20_000))
    assert len(body) > 64 * 1024  # the client's MODELPORT_MAX_BODY_BYTES
    reply = client.post(PATH, content=body, headers=CSV)
    assert reply.status_code == 200
    assert summary_of(csv_records(reply)[-1][-1])["rows"] == 20_000


def test_stream_limits(store: Path) -> None:
    body = csv_body(flower_rows(5_000))
    with make_client(store, stream_max_bytes=50_000, stream_max_line_bytes=300) as limited:
        declared = limited.post(PATH, content=body, headers=CSV)
        assert declared.status_code == 413
        assert declared.json() == {
            "error": "PayloadTooLarge",
            "detail": "Request body is larger than 50000 bytes",
        }

        # Chunked (no length declared): counted as it comes. The TestClient hands the app the
        # whole body at once, so here it is over the limit before the reply starts: a 413 too.
        # (Past the limit mid-reply: tests/e2e/test_stream.py.)
        grown = limited.post(PATH, content=iter([body]), headers=CSV)
        assert grown.status_code == 413
        assert grown.json()["error"] == "PayloadTooLarge"

        header = ",".join([*FLOWER_FEATURES, "x" * 400]).encode() + b"\n1,2,3,4,5\n"
        too_long = limited.post(PATH, content=header, headers=CSV)
        assert too_long.status_code == 413
        assert too_long.json()["error"] == "PayloadTooLarge"

        long_row = b"sepal_length,sepal_width,petal_length,petal_width\n1,1,1,1\n" + b"9" * 500
        long_row += b"\n2,2,2,2\n"
        answered = limited.post(
            PATH, content=long_row, headers={**CSV, "accept": "application/x-ndjson"}
        )
        first, bad, third, last_line = answered.content.splitlines()
        error = StreamErrorLine.model_validate_json(bad)
        assert (error.line, error.error.type) == (3, "line_too_long")
        assert summary_of(last_line)["rows"] == 3


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        (b"sepal_length,sepal_width\n1,2\n", CSV, 422, "InvalidInput"),
        (b"", CSV, 400, "UnreadableFile"),
        (b"\xff\xfe\n", CSV, 400, "UnreadableFile"),
        (b"[1,2,3,4]\n", {"content-type": "application/json"}, 415, "UnsupportedMediaType"),
        (b"1,2,3,4\n", {}, 415, "UnsupportedMediaType"),
    ],
)
def test_what_is_wrong_before_the_first_row_is_a_4xx_in_the_envelope(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, kind: str
) -> None:
    reply = client.post(PATH, content=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"] == kind


def test_an_empty_ndjson_body_is_an_empty_answer(client: TestClient) -> None:
    reply = client.post(PATH, content=b"", headers=NDJSON)
    assert reply.status_code == 200
    assert ndjson_records(reply) == [
        {
            "summary": {
                "model_name": "flowers",
                "model_version": 1,
                "rows": 0,
                "errors": 0,
                "complete": True,
            }
        }
    ]


def test_routing_versions_and_unknown_models(client: TestClient) -> None:
    body = csv_body(flower_rows(3))
    canary = client.post("/models/flowers/predict/stream", content=body, headers=CSV)
    assert canary.status_code == 200
    version = canary.headers["x-model-version"]
    assert version in {"1", "2"} and "modelport_session=" in canary.headers["set-cookie"]
    assert summary_of(csv_records(canary)[-1][-1])["model_version"] == int(version)
    pinned = client.post("/models/flowers/versions/2/predict/stream", content=body, headers=CSV)
    assert summary_of(csv_records(pinned)[-1][-1])["model_version"] == 2
    missing = client.post("/models/nope/predict/stream", content=body, headers=CSV)
    assert missing.status_code == 404 and missing.json()["error"] == "ModelNotFound"


def test_the_api_key_guards_streams(store: Path) -> None:
    with make_client(store, api_key=SecretStr("s3cret")) as guarded:
        body = csv_body(flower_rows(2))
        assert guarded.post(PATH, content=body, headers=CSV).status_code == 401
        allowed = guarded.post(PATH, content=body, headers={**CSV, "x-api-key": "s3cret"})
        assert allowed.status_code == 200


def test_each_tabular_model_documents_its_stream(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert "/models/{model_name}/predict/stream" not in paths
    operation = paths["/models/flowers/predict/stream"]["post"]
    assert operation["operationId"] == "model-flowers-stream"
    body = operation["requestBody"]["content"]
    assert set(body) == {"text/csv", "application/x-ndjson"}
    assert body["text/csv"]["example"].startswith(",".join(FLOWER_FEATURES))
    replies = operation["responses"]["200"]["content"]
    assert set(replies) == {"text/csv", "application/x-ndjson"}
    assert '"summary"' in replies["application/x-ndjson"]["example"]
    assert {p["name"] for p in operation["parameters"]} == {"on_error", "modelport_session"}
    assert "/models/flowers/versions/2/predict/stream" in paths
    assert "/models/pets/predict/stream" in paths

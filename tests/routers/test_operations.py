"""Operations through the real app, in process: request ids, the JSON access log, the request
and prediction metrics at /metrics, and the optional API key on the prediction routes."""

import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, overload

import httpx2
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.access_log import ACCESS_LOG
from app.config import Settings
from app.main import create_app
from tests.conftest import build_store
from tests.routers.test_predict import assert_envelope, strict_json
from tests.routers.test_v2 import assert_v2_error, infer_body

FRESH_ID = re.compile(r"[0-9a-f]{32}")
LOG_KEYS = {
    "time",
    "request_id",
    "method",
    "route",
    "path",
    "status",
    "latency_ms",
    "model",
    "version",
}
PREDICT_ROUTE = "/models/{model_name}/predict"
PINNED_ROUTE = "/models/{model_name}/versions/{version}/predict"
LINE_CSV = b"a,b\n1.0,2.0\n3.0,-1.0\n0.5,0.5\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module (overrides conftest's per-test one): these tests only read it."""
    return build_store(tmp_path_factory.mktemp("store") / "models")


class CapturedAccessLog(Sequence[str]):
    """The access log's lines during a test: ACCESS_LOG writes to a buffer instead of stdout,
    and reading flushes what is pending (lines are otherwise written at the end of the event
    loop's turn, which may come after the test client has its reply)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def _lines(self) -> list[str]:
        ACCESS_LOG.flush()
        return self.buffer.getvalue().splitlines()

    def __len__(self) -> int:
        return len(self._lines())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._lines()[index]

    def __repr__(self) -> str:
        return repr(self._lines())


@pytest.fixture
def access_log(monkeypatch: pytest.MonkeyPatch) -> CapturedAccessLog:
    ACCESS_LOG.flush()  # lines of earlier tests go where they were going
    captured = CapturedAccessLog()
    monkeypatch.setattr(ACCESS_LOG, "stream", captured.buffer)
    return captured


def log_line(messages: Sequence[str], request_id: str) -> dict[str, Any]:
    """The one access-log line carrying `request_id`: one JSON object, on one line."""
    matching = [m for m in messages if json.loads(m)["request_id"] == request_id]
    assert len(matching) == 1, messages
    assert "\n" not in matching[0] and "\r" not in matching[0]
    record: dict[str, Any] = strict_json(matching[0])
    assert set(record) == LOG_KEYS
    assert datetime.fromisoformat(record["time"]).utcoffset() is not None
    assert isinstance(record["latency_ms"], float) and record["latency_ms"] >= 0
    return record


def header_version(response: httpx2.Response) -> int | None:
    served = response.headers.get("x-model-version")
    return None if served is None else int(served)


def metric(client: TestClient, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return sum(
        sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def route_labels(client: TestClient) -> set[str]:
    text = client.get("/metrics").text
    return {
        sample.labels["route"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelport_requests_total"
    }


# --- request ids ---------------------------------------------------------------------------


@pytest.mark.parametrize("offered", ["abc-123", "req_7.retry:2", "A" * 128, "0"])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/healthz", None), ("POST", "/models/line/predict", {"instances": [[1.0, 2.0]]})],
)
def test_well_formed_request_id_is_returned_and_logged(
    client: TestClient,
    access_log: CapturedAccessLog,
    offered: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    reply = client.request(method, path, json=body, headers={"X-Request-ID": offered})

    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == offered
    assert log_line(access_log, offered)["path"] == path


@pytest.mark.parametrize(
    "offered",
    [
        b"a" * 129,
        b"b" * 200,
        b"has space",
        b"<script>alert(1)</script>",
        b'quote"d',
        b"semi;colon",
        b"\xc3\xbcnicode",
        b"",
    ],
    ids=["129-chars", "200-chars", "space", "script", "quote", "semicolon", "non-ascii", "empty"],
)
def test_malformed_request_id_is_replaced_by_a_fresh_one(
    client: TestClient, access_log: CapturedAccessLog, offered: bytes
) -> None:
    reply = client.get("/healthz", headers={b"X-Request-ID": offered})

    assert reply.status_code == 200
    returned = reply.headers["x-request-id"]
    assert FRESH_ID.fullmatch(returned), returned
    record = log_line(access_log, returned)
    assert record["route"] == "/healthz"
    if offered:  # what the client sent reaches neither the response nor the log
        text = offered.decode("latin-1")
        assert all(text not in message for message in access_log)
        assert text not in reply.headers.get("x-request-id", "")


def test_request_id_is_generated_when_absent_and_differs_per_request(
    client: TestClient, access_log: CapturedAccessLog
) -> None:
    first = client.get("/healthz")
    second = client.get("/healthz")

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(FRESH_ID.fullmatch(i) for i in ids), ids
    assert ids[0] != ids[1]
    assert [log_line(access_log, i)["status"] for i in ids] == [200, 200]


ERROR_CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("unknown-model", "POST", "/models/nope/predict", {"json": {"instances": [[1.0]]}}, 404, "ModelNotFound"),
    ("unknown-path", "GET", "/no/such/thing", {}, 404, "NotFound"),
    ("bad-version", "POST", "/models/line/versions/0/predict", {"json": {"instances": [[1.0, 2.0]]}}, 422, "InvalidInput"),
    ("bad-row", "POST", "/models/line/predict", {"json": {"instances": [[1.0, "x"]]}}, 422, "InvalidInput"),
    ("not-json", "POST", "/models/line/predict", {"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "MalformedBody"),
    ("too-large", "POST", "/models/line/predict", {"content": b" " * (64 * 1024 + 1), "headers": {"content-type": "application/json"}}, 413, "PayloadTooLarge"),
    ("wrong-method", "GET", "/models/line/predict", {}, 405, "MethodNotAllowed"),
]  # fmt: skip


@pytest.mark.parametrize("offer", [True, False], ids=["offered", "absent"])
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "kind"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_error_responses_carry_the_request_id_and_are_logged(
    client: TestClient,
    access_log: CapturedAccessLog,
    offer: bool,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    kind: str,
) -> None:
    headers = {**kwargs.get("headers", {}), **({"X-Request-ID": "err-42"} if offer else {})}
    reply = client.request(method, path, **{**kwargs, "headers": headers})

    assert_envelope(reply, status, kind)
    returned = reply.headers["x-request-id"]
    assert returned == "err-42" if offer else FRESH_ID.fullmatch(returned)
    record = log_line(access_log, returned)
    assert (record["method"], record["path"], record["status"]) == (method, path, status)
    assert record["version"] is None


# --- the access log ------------------------------------------------------------------------

LOG_CASES: list[tuple[str, str, str, dict[str, Any], int, str, str | None, int | None]] = [
    ("predict", "POST", "/models/line/predict", {"json": {"instances": [[1.0, 2.0]]}}, 200, PREDICT_ROUTE, "line", 1),
    ("pinned", "POST", "/models/flowers/versions/2/predict", {"json": {"instances": [[5.1, 3.5, 1.4, 0.2]]}}, 200, PINNED_ROUTE, "flowers", 2),
    ("file", "POST", "/models/line/predict/file", {"files": {"file": ("rows.csv", LINE_CSV, "text/csv")}}, 200, "/models/{model_name}/predict/file", "line", 1),
    ("file-csv", "POST", "/models/line/predict/file", {"files": {"file": ("rows.csv", LINE_CSV, "text/csv")}, "headers": {"accept": "text/csv"}}, 200, "/models/{model_name}/predict/file", "line", 1),
    ("form", "POST", "/models/line/predict/form", {"data": {"a": "1.5", "b": "-2"}}, 200, "/models/{model_name}/predict/form", "line", 1),
    ("card", "GET", "/models/line", {}, 200, "/models/{model_name}", "line", None),
    ("card-version", "GET", "/models/pets/versions/1", {}, 200, "/models/{model_name}/versions/{version}", "pets", None),
    ("catalogue", "GET", "/models?search=fl", {}, 200, "/models", None, None),
    ("health", "GET", "/healthz", {}, 200, "/healthz", None, None),
    ("metrics", "GET", "/metrics", {}, 200, "/metrics", None, None),
    ("v2-metadata", "GET", "/v2/models/line", {}, 200, "/v2/models/{model_name}", "line", None),
    ("invalid-rows", "POST", "/models/line/predict", {"json": {"instances": [[1.0]]}}, 422, PREDICT_ROUTE, "line", None),
    ("unknown-model", "POST", "/models/nope/predict", {"json": {"instances": [[1.0]]}}, 404, PREDICT_ROUTE, "nope", None),
    ("unknown-path", "GET", "/models/line/nowhere", {}, 404, "unmatched", None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "route", "model", "version"),
    [case[1:] for case in LOG_CASES],
    ids=[case[0] for case in LOG_CASES],
)
def test_one_json_log_line_per_request_names_route_model_and_version(
    client: TestClient,
    access_log: CapturedAccessLog,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    route: str,
    model: str | None,
    version: int | None,
) -> None:
    headers = {**kwargs.get("headers", {}), "X-Request-ID": "log-1"}
    reply = client.request(method, path, **{**kwargs, "headers": headers})

    assert reply.status_code == status, reply.text
    assert len(access_log) == 1, access_log
    record = log_line(access_log, "log-1")
    assert record["method"] == method
    assert record["path"] == path.split("?", 1)[0]
    assert record["status"] == status
    assert record["route"] == route
    assert record["model"] == model
    assert record["version"] == version == header_version(reply)


def test_v2_infer_log_line_names_the_version_that_answered(
    client: TestClient, access_log: CapturedAccessLog
) -> None:
    reply = client.post(
        "/v2/models/line/infer", json=infer_body([[1.0, 2.0]]), headers={"X-Request-ID": "v2-1"}
    )

    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == "1"
    record = log_line(access_log, "v2-1")
    assert (record["route"], record["model"]) == ("/v2/models/{model_name}/infer", "line")
    assert record["version"] == 1


def test_with_the_access_log_off_requests_leave_no_line_but_still_get_ids_and_metrics(
    store: Path, access_log: CapturedAccessLog
) -> None:
    with TestClient(create_app(Settings(model_dir=store, access_log=False))) as quiet:
        before = metric(
            quiet, "modelport_requests_total", route=PREDICT_ROUTE, method="POST", status="200"
        )
        reply = quiet.post(
            "/models/line/predict",
            json={"instances": [[1.0, 2.0]]},
            headers={"X-Request-ID": "quiet-1"},
        )
        after = metric(
            quiet, "modelport_requests_total", route=PREDICT_ROUTE, method="POST", status="200"
        )

    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == "quiet-1"
    assert after - before == 1
    assert len(access_log) == 0, access_log


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_docs_requests_are_labelled_by_their_route_not_unmatched(
    client: TestClient, access_log: CapturedAccessLog, path: str
) -> None:
    before = metric(client, "modelport_requests_total", route=path, method="GET", status="200")
    reply = client.get(path, headers={"X-Request-ID": "docs-1"})

    assert reply.status_code == 200
    assert log_line(access_log, "docs-1")["route"] == path
    after = metric(client, "modelport_requests_total", route=path, method="GET", status="200")
    assert after - before == 1


# --- /metrics --------------------------------------------------------------------------------


def test_request_metrics_use_the_route_template_never_the_raw_path(client: TestClient) -> None:
    def requests(route: str, status: str = "200", method: str = "POST") -> float:
        return metric(client, "modelport_requests_total", route=route, method=method, status=status)

    before = (requests(PREDICT_ROUTE), requests(PINNED_ROUTE), requests("unmatched", "404", "GET"))
    latency_before = metric(
        client, "modelport_request_duration_seconds_count", route=PREDICT_ROUTE, method="POST"
    )
    for _ in range(3):
        assert client.post("/models/line/predict", json={"instances": [[1.0, 2.0]]}).is_success
    for _ in range(2):
        pinned = client.post("/models/flowers/versions/1/predict", json={"instances": [[5.0] * 4]})
        assert pinned.is_success
    assert client.get("/not/a/route/12345").status_code == 404

    after = (requests(PREDICT_ROUTE), requests(PINNED_ROUTE), requests("unmatched", "404", "GET"))
    assert [b - a for a, b in zip(before, after, strict=True)] == [3, 2, 1]
    latency_after = metric(
        client, "modelport_request_duration_seconds_count", route=PREDICT_ROUTE, method="POST"
    )
    assert latency_after - latency_before == 3
    labels = route_labels(client)
    assert {PREDICT_ROUTE, PINNED_ROUTE, "unmatched"} <= labels
    assert not any(
        label.startswith(("/models/line", "/models/flowers", "/not/")) for label in labels
    )


def test_predictions_are_counted_once_per_call_on_every_surface(client: TestClient) -> None:
    def counts() -> tuple[float, float, float]:
        labels = {"model": "line", "version": "1"}
        return (
            metric(client, "modelport_predictions_total", **labels),
            metric(client, "modelport_predicted_rows_total", **labels),
            metric(client, "modelport_batch_size_rows_count", **labels),
        )

    before = counts()
    replies = [
        client.post("/models/line/predict", json={"instances": [[1.0, 2.0], [3.0, 4.0]]}),
        client.post("/models/line/versions/1/predict", json={"instances": [{"a": 1, "b": 2}]}),
        client.post(
            "/models/line/predict/file", files={"file": ("rows.csv", LINE_CSV, "text/csv")}
        ),
        client.post("/models/line/predict/form", data={"a": "1.5", "b": "-2"}),
        client.post("/v2/models/line/infer", json=infer_body([[1.0, 2.0], [0.0, 0.0]])),
    ]
    refused = client.post("/models/line/predict", json={"instances": [[1.0, "x"]]})
    after = counts()

    assert [r.status_code for r in replies] == [200] * 5, [r.text for r in replies]
    assert refused.status_code == 422
    # 5 calls of 2 + 1 + 3 + 1 + 2 rows; the refused request never reached the model.
    assert [b - a for a, b in zip(before, after, strict=True)] == [5, 9, 5]


def test_model_loaded_gauge_is_one_per_serving_version_and_zero_when_refused(
    tmp_path: Path,
) -> None:
    store = build_store(tmp_path / "models")
    with (store / "pets" / "1" / "model.joblib").open("ab") as stream:
        stream.write(b"\0")

    with TestClient(create_app(Settings(model_dir=store))) as client:
        loaded = {
            key: metric(client, "modelport_model_loaded", model=key[0], version=key[1])
            for key in [("flowers", "1"), ("flowers", "2"), ("line", "1"), ("pets", "1")]
        }
        load_seconds = metric(client, "modelport_model_load_seconds", model="line", version="1")

    assert loaded == {("flowers", "1"): 1, ("flowers", "2"): 1, ("line", "1"): 1, ("pets", "1"): 0}
    assert load_seconds > 0


# --- the API key -----------------------------------------------------------------------------

KEY = "s3cret-key"
# (id, method, path, request kwargs, is an Open Inference Protocol route)
PREDICTION_CALLS: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("json", "POST", "/models/line/predict", {"json": {"instances": [[1.0, 2.0]]}}, False),
    ("json-pinned", "POST", "/models/line/versions/1/predict", {"json": {"instances": [[1.0, 2.0]]}}, False),
    ("file", "POST", "/models/line/predict/file", {"files": {"file": ("rows.csv", LINE_CSV, "text/csv")}}, False),
    ("form", "POST", "/models/line/predict/form", {"data": {"a": "1.5", "b": "-2"}}, False),
    ("v2-infer", "POST", "/v2/models/line/infer", {"json": infer_body([[1.0, 2.0]])}, True),
    ("v2-infer-pinned", "POST", "/v2/models/line/versions/1/infer", {"json": infer_body([[1.0, 2.0]])}, True),
]  # fmt: skip
CALL_PARAMS = [case[1:] for case in PREDICTION_CALLS]
CALL_IDS = [case[0] for case in PREDICTION_CALLS]
OPEN_PATHS = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/models",
    "/models/line",
    "/models/line/versions/1",
    "/models/line/form",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/line",
    "/v2/models/line/versions/1",
    "/v2/models/line/ready",
]


@pytest.fixture
def keyed_client(store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=store, api_key=SecretStr(KEY)))) as client:
        yield client


@pytest.mark.parametrize(
    "offered", [None, "wrong", KEY.upper(), KEY + "x", KEY[:-1]], ids=lambda v: repr(v)
)
@pytest.mark.parametrize(("method", "path", "kwargs", "v2"), CALL_PARAMS, ids=CALL_IDS)
def test_prediction_routes_refuse_a_missing_or_wrong_key(
    keyed_client: TestClient,
    offered: str | None,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    v2: bool,
) -> None:
    before = metric(keyed_client, "modelport_predictions_total", model="line", version="1")
    headers = {} if offered is None else {"X-API-Key": offered}
    reply = keyed_client.request(method, path, headers=headers, **kwargs)

    if v2:
        assert "API key" in assert_v2_error(reply, 401)
    else:
        assert "X-API-Key" in assert_envelope(reply, 401, "Unauthorized")
    assert reply.headers["www-authenticate"] == "ApiKey"
    assert FRESH_ID.fullmatch(reply.headers["x-request-id"])
    assert KEY not in reply.text
    after = metric(keyed_client, "modelport_predictions_total", model="line", version="1")
    assert after == before  # the model never ran


@pytest.mark.parametrize(("method", "path", "kwargs", "v2"), CALL_PARAMS, ids=CALL_IDS)
def test_prediction_routes_answer_with_the_right_key(
    keyed_client: TestClient, method: str, path: str, kwargs: dict[str, Any], v2: bool
) -> None:
    reply = keyed_client.request(method, path, headers={"X-API-Key": KEY}, **kwargs)

    assert reply.status_code == 200, reply.text
    assert reply.json()["model_name"] == "line"
    assert "www-authenticate" not in reply.headers


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_health_catalogue_docs_and_metadata_stay_open_with_a_key_configured(
    keyed_client: TestClient, path: str
) -> None:
    reply = keyed_client.get(path)

    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("method", "path", "kwargs", "v2"), CALL_PARAMS, ids=CALL_IDS)
def test_without_a_configured_key_no_header_is_needed(
    store: Path, method: str, path: str, kwargs: dict[str, Any], v2: bool
) -> None:
    with TestClient(create_app(Settings(model_dir=store, api_key=None))) as client:
        bare = client.request(method, path, **kwargs)
        stray = client.request(method, path, headers={"X-API-Key": "anything"}, **kwargs)

    assert bare.status_code == 200, bare.text
    assert stray.status_code == 200, stray.text


def test_openapi_declares_the_key_and_the_prediction_operations_require_it(
    keyed_client: TestClient,
) -> None:
    document = keyed_client.get("/openapi.json").json()

    schemes = document["components"]["securitySchemes"]
    names = [
        name
        for name, scheme in schemes.items()
        if scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    ]
    assert len(names) == 1, schemes
    requirement: list[dict[str, list[str]]] = [{names[0]: []}]
    guarded = {
        (path, method): operation.get("security")
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    predict_ops = {
        key
        for key in guarded
        if key[1] == "post" and (key[0].startswith("/models/") or key[0].startswith("/v2/models/"))
    }
    assert {
        ("/models/line/predict", "post"),
        ("/models/line/versions/1/predict", "post"),
        ("/models/line/predict/file", "post"),
        ("/models/line/predict/form", "post"),
        ("/v2/models/line/infer", "post"),
        ("/v2/models/line/versions/1/infer", "post"),
    } <= predict_ops
    assert {key: guarded[key] for key in predict_ops} == dict.fromkeys(predict_ops, requirement)
    # The repository's writes need the key too (authorize_write); its index only reads.
    repository_writes = {
        ("/v2/repository/models/{model_name}/load", "post"),
        ("/v2/repository/models/{model_name}/unload", "post"),
    }
    assert {key: guarded[key] for key in repository_writes} == dict.fromkeys(
        repository_writes, requirement
    )
    assert guarded[("/v2/repository/index", "post")] is None
    keyed_ops = predict_ops | repository_writes
    open_ops = {key: security for key, security in guarded.items() if key not in keyed_ops}
    assert open_ops and all(security is None for security in open_ops.values()), open_ops

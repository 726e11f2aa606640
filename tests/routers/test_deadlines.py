"""Deadlines and admission control through the real app: the X-Request-Timeout header and the v2
`timeout` parameter, and the 400, 429 (with Retry-After) and 504 answers in each surface's
envelope."""

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LinearRegression

from app.config import Settings
from app.main import create_app
from schemas.cards import FeatureSpec
from tests.conftest import write_model
from tests.routers.test_v2 import assert_v2_error, infer_body

ROW = [5.1, 3.5, 1.4, 0.2]
JSON_ROUTES = ("/models/flowers/predict", "/models/flowers/versions/1/predict")

ARMED = threading.Event()
ENTERED = threading.Event()
RELEASE = threading.Event()


class GatedRegressor(LinearRegression):  # type: ignore[misc]  # sklearn is untyped
    """A real fitted regressor whose predict, while armed, holds its thread until released."""

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        if ARMED.is_set():
            ENTERED.set()
            RELEASE.wait(timeout=30)
        result: np.ndarray[Any, Any] = super().predict(X)
        return result


def friendly_error(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = json.loads(response.text)
    assert set(body) == {"error", "detail"} and body["error"] == kind, body
    detail: str = body["detail"]
    return detail


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("seconds", ["2", "0.5", "30.0", ".75", "1e1", " 3 ", "1e999"])
def test_a_well_formed_timeout_is_accepted(client: TestClient, route: str, seconds: str) -> None:
    response = client.post(route, json={"instances": [ROW]}, headers={"X-Request-Timeout": seconds})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("seconds", ["0", "-1", "abc", "", "nan", "inf", "1,5", "0x10", "1_0"])
def test_a_malformed_timeout_is_a_400_in_each_envelope(client: TestClient, seconds: str) -> None:
    headers = {"X-Request-Timeout": seconds}

    detail = friendly_error(
        client.post(JSON_ROUTES[0], json={"instances": [ROW]}, headers=headers),
        400,
        "InvalidTimeout",
    )
    form = client.post("/models/flowers/predict/form", data={"sepal_length": 5.1}, headers=headers)
    message = assert_v2_error(
        client.post("/v2/models/flowers/infer", json=infer_body([ROW]), headers=headers), 400
    )

    assert "X-Request-Timeout" in detail
    friendly_error(form, 400, "InvalidTimeout")
    assert "positive number" in message


@pytest.mark.parametrize("route", JSON_ROUTES)
def test_a_deadline_that_passes_is_a_504_in_the_envelope(client: TestClient, route: str) -> None:
    # A timeout of a nanosecond has passed before the rows are even decoded.
    response = client.post(
        route, json={"instances": [ROW]}, headers={"X-Request-Timeout": "0.000000001"}
    )

    assert "deadline passed" in friendly_error(response, 504, "DeadlineExceeded")


def test_the_v2_timeout_parameter_is_read_as_triton_reads_it(client: TestClient) -> None:
    path = "/v2/models/flowers/infer"

    # Microseconds: 60 s is plenty, 0 means none; 1 µs has passed once the body is decoded.
    assert client.post(path, json=infer_body([ROW], parameters={"timeout": 60_000_000})).is_success
    assert client.post(path, json=infer_body([ROW], parameters={"timeout": 0})).is_success
    expired = client.post(path, json=infer_body([ROW], parameters={"timeout": 1}))
    assert "deadline passed" in assert_v2_error(expired, 504)
    for bad in (-5, 1.5, "soon", True):
        message = assert_v2_error(
            client.post(path, json=infer_body([ROW], parameters={"timeout": bad})), 400
        )
        assert "parameters.timeout" in message


def test_the_header_tightens_the_v2_request_too(client: TestClient) -> None:
    response = client.post(
        "/v2/models/flowers/versions/1/infer",
        json=infer_body([ROW], parameters={"timeout": 60_000_000}),
        headers={"X-Request-Timeout": "1e-9"},
    )

    assert_v2_error(response, 504)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[TestClient]:
    """A one-version app whose model call the test holds, with room for one queued row."""
    xs = np.random.default_rng(4).uniform(-5, 5, size=(12, 2))
    write_model(
        tmp_path,
        GatedRegressor().fit(xs, xs.sum(axis=1)),
        name="gated",
        task="regression",
        features=[FeatureSpec(name="a", dtype="float"), FeatureSpec(name="b", dtype="float")],
    )
    for event in (ENTERED, RELEASE):
        event.clear()
    with TestClient(create_app(Settings(model_dir=tmp_path, queue_max_rows=1))) as client:
        ARMED.set()
        try:
            yield client
        finally:
            ARMED.clear()
            RELEASE.set()


def test_a_full_queue_is_a_429_with_retry_after_in_each_envelope(gated: TestClient) -> None:
    answers: dict[str, Any] = {}

    def send(key: str) -> None:
        answers[key] = gated.post("/models/gated/predict", json={"instances": [[1.0, 2.0]]})

    runner = gated.app.state.dataplane.model("gated").runner  # type: ignore[attr-defined]
    held = threading.Thread(target=send, args=("held",))
    held.start()
    assert ENTERED.wait(timeout=10), "the estimator call never started"
    queued = threading.Thread(target=send, args=("queued",))
    queued.start()
    for _ in range(1000):
        if runner.queued_rows == 1:
            break
        queued.join(timeout=0.01)
    assert runner.queued_rows == 1

    refused = gated.post("/models/gated/predict", json={"instances": [[3.0, 4.0]]})
    refused_v2 = gated.post(
        "/v2/models/gated/infer",
        json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]},
    )
    RELEASE.set()
    held.join(timeout=20)
    queued.join(timeout=20)

    assert "limit is 1" in friendly_error(refused, 429, "Overloaded")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "overloaded" in assert_v2_error(refused_v2, 429)
    assert int(refused_v2.headers["Retry-After"]) >= 1
    assert answers["held"].status_code == 200
    assert answers["queued"].status_code == 200  # admitted requests are served in full
    assert gated.post("/models/gated/predict", json={"instances": [[1.0, 2.0]]}).is_success


def test_responses_are_documented(client: TestClient) -> None:
    document = client.get("/openapi.json").json()

    for path, method in (
        ("/models/flowers/predict", "post"),
        ("/models/flowers/versions/2/predict", "post"),
        ("/models/flowers/predict/file", "post"),
        ("/models/flowers/predict/form", "post"),
        ("/v2/models/flowers/infer", "post"),
        ("/v2/models/flowers/versions/1/infer", "post"),
    ):
        operation = document["paths"][path][method]
        assert {"400", "429", "504"} <= set(operation["responses"]), path
        assert "Retry-After" in operation["responses"]["429"]["headers"], path
        names = [parameter["name"] for parameter in operation["parameters"]]
        assert "X-Request-Timeout" in names, path

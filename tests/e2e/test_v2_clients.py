"""Unmodified Open Inference Protocol clients against the real server: tritonclient.http in its
default binary mode and in JSON mode, and KServe's InferenceRESTClient. Their results must equal
the friendly API's for the same rows."""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from sklearn import datasets
from tritonclient.utils import InferenceServerException

from tests.conftest import pets_frame
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

IRIS_ROWS = datasets.load_iris().data[::10].tolist()  # 15 rows, all classes
DIABETES_ROWS = datasets.load_diabetes().data[::40].tolist()


def friendly(server: Server, name: str, rows: list[Any]) -> dict[str, Any]:
    """The friendly API's answer for the same rows, pinned to the version v2 serves (the default)."""
    with server.client() as http:
        default = http.get(f"/models/{name}").json()["default_version"]
        reply = http.post(f"/models/{name}/versions/{default}/predict", json={"instances": rows})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def triton_client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def test_tritonclient_health_and_metadata(server: Server) -> None:
    client = triton_client(server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", model_version="2")
    assert not client.is_model_ready("nope")
    server_meta = client.get_server_metadata()
    assert server_meta["name"] == "modelport" and "binary_tensor_data" in server_meta["extensions"]
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris" and meta["versions"] == ["1", "2"]
    assert [i["name"] for i in meta["inputs"]] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "predict": [-1],
        "predict_proba": [-1, 3],
    }
    pets = client.get_model_metadata("pets")
    # `modelport import` cannot tell that age holds integers, so its card says float.
    assert {i["name"]: i["datatype"] for i in pets["inputs"]} == {
        "colour": "BYTES",
        "weight": "FP64",
        "age": "FP64",
    }


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_classifier_matches_friendly_api(server: Server, binary: bool) -> None:
    rows = np.asarray(IRIS_ROWS, dtype=np.float32)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("predict", "predict_proba")
    ]
    result = triton_client(server).infer("iris", [tensor], outputs=outputs, request_id="triton-1")
    expected = friendly(server, "iris", rows.astype(np.float64).tolist())
    labels = [
        v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict").tolist()
    ]
    assert labels == [p["label"] for p in expected["predictions"]]
    classes = ["setosa", "versicolor", "virginica"]
    expected_proba = [[p["probabilities"][c] for c in classes] for p in expected["predictions"]]
    assert np.allclose(result.as_numpy("predict_proba"), expected_proba, rtol=1e-12, atol=0)
    response = result.get_response()
    assert response["id"] == "triton-1" and response["model_name"] == "iris"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_regressor_and_default_outputs(server: Server, binary: bool) -> None:
    rows = np.asarray(DIABETES_ROWS, dtype=np.float64)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    result = triton_client(server).infer("diabetes", [tensor])  # no outputs named: all of them
    expected = [p["value"] for p in friendly(server, "diabetes", rows.tolist())["predictions"]]
    assert result.as_numpy("predict").tolist() == pytest.approx(expected, rel=1e-12)
    assert result.as_numpy("predict_proba") is None


def test_tritonclient_per_feature_tensors_with_a_bytes_column(server: Server) -> None:
    frame, _ = pets_frame()
    sample = frame.head(12)
    colour = triton.InferInput("colour", [len(sample)], "BYTES")
    colour.set_data_from_numpy(sample["colour"].to_numpy(dtype=object))
    weight = triton.InferInput("weight", [len(sample)], "FP64")
    weight.set_data_from_numpy(sample["weight"].to_numpy(dtype=np.float64))
    age = triton.InferInput("age", [len(sample)], "INT64")
    age.set_data_from_numpy(sample["age"].to_numpy(dtype=np.int64))
    result = triton_client(server).infer("pets", [age, colour, weight])
    expected = friendly(server, "pets", sample.to_dict(orient="records"))
    labels = [v.decode() for v in result.as_numpy("predict").tolist()]
    assert labels == [p["label"] for p in expected["predictions"]]


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        ("nope", [[5.1, 3.5, 1.4, 0.2]], "not found"),
        ("iris", [[float("nan"), 3.5, 1.4, 0.2]], "finite"),
        ("iris", [[5.1, 3.5, 1.4]], "one column per feature"),
    ],
    ids=["unknown-model", "nan", "short-row"],
)
def test_tritonclient_sees_errors_as_messages(
    server: Server, model: str, data: list[list[float]], needle: str
) -> None:
    rows = np.asarray(data, dtype=np.float64)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as caught:
        triton_client(server).infer(model, [tensor])
    assert needle in str(caught.value.message()).lower()
    assert caught.value.status() in {"400", "404"}


def kserve_python() -> Path | None:
    configured = os.environ.get("KSERVE_PYTHON")
    candidate = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[2] / ".venv-kserve/bin/python"
    )
    return candidate if candidate.exists() else None


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("model", "rows"),
    [("iris", IRIS_ROWS), ("diabetes", DIABETES_ROWS)],
    ids=["classifier", "regressor"],
)
def test_kserve_client_matches_friendly_api(
    server: Server, model: str, rows: list[list[float]], binary: bool
) -> None:
    python = kserve_python()
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail("KServe's client is missing: `make test` builds .venv-kserve")
        pytest.skip("KServe's client is not installed (run `make test`, which builds .venv-kserve)")
    job = {"url": server.url, "model": model, "rows": rows, "binary": binary, "id": "kserve-1"}
    run = subprocess.run(
        [str(python), str(Path(__file__).with_name("kserve_client.py"))],
        input=json.dumps(job), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert (seen["live"], seen["ready"], seen["model_ready"]) == (True, True, True)
    assert seen["id"] == "kserve-1" and seen["model_name"] == model
    expected = friendly(server, model, rows)["predictions"]
    if model == "diabetes":
        assert seen["outputs"]["predict"] == pytest.approx(
            [p["value"] for p in expected], rel=1e-12
        )
    else:
        assert seen["outputs"]["predict"] == [p["label"] for p in expected]
        classes = ["setosa", "versicolor", "virginica"]
        assert np.allclose(
            seen["outputs"]["predict_proba"],
            [[p["probabilities"][c] for c in classes] for p in expected],
        )

"""Bring your own model, end to end: the issue's churn pipeline imported by the real CLI with
`--data`, and a pipeline logged and registered with MLflow imported as `models:/pets/1`, both
served by `modelport serve` on every surface."""

from collections.abc import Iterator
from typing import Any

import joblib
import pytest
from sklearn.model_selection import train_test_split

from tests.conftest import churn_frame, fit_churn_pipeline, pets_frame
from tests.e2e.conftest import Server, run_cli, start_server, stop_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def byom(
    tmp_path_factory: pytest.TempPathFactory, mlflow_models: dict[str, Any]
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("byom")
    store = folder / "models"
    frame = churn_frame()
    train, _ = train_test_split(frame, test_size=0.25, random_state=0)
    joblib.dump(fit_churn_pipeline(train), folder / "churn.joblib")
    frame.to_csv(folder / "churn.csv", index=False)
    churn = run_cli(
        "import", str(folder / "churn.joblib"), "--name", "churn", "--model-dir", str(store),
        "--data", str(folder / "churn.csv"), "--target", "churned", "--test-size", "0.25",
    )  # fmt: skip
    assert churn.returncode == 0, churn.stderr
    assert "tenure_months:int" in churn.stdout and "metrics on 100 rows" in churn.stdout
    tracking = {"MLFLOW_TRACKING_URI": str(mlflow_models["folder"] / "mlruns")}
    pets = run_cli(
        "import", "models:/pets/1", "--name", "pets", "--model-dir", str(store), env=tracking
    )
    assert pets.returncode == 0, pets.stderr
    server = start_server(store, folder / "serve.log")
    yield server
    stop_server(server)


def request_schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    schemas: dict[str, Any] = document["components"]["schemas"]
    return next(
        schema for key, schema in schemas.items() if key.startswith(name) and key.endswith("Record")
    )


def test_docs_document_integer_tenure_its_range_and_real_metrics(byom: Server) -> None:
    with byom.client() as http:
        document = http.get("/openapi.json").json()
        docs = http.get("/docs")
        info = http.get("/models/churn").json()
    assert docs.status_code == 200
    record = request_schema(document, "ChurnV1")
    tenure = record["properties"]["tenure_months"]
    train, _ = train_test_split(churn_frame(), test_size=0.25, random_state=0)
    low, high = train["tenure_months"].min(), train["tenure_months"].max()
    assert tenure["type"] == "integer"
    assert f"seen in training: {low} to {high}" in tenure["description"]
    assert record["properties"]["monthly_charges"]["type"] == "number"
    assert set(record["properties"]["contract"]["enum"]) == {
        "month-to-month",
        "one-year",
        "two-year",
    }
    operation = document["paths"]["/models/churn/predict"]["post"]
    card = info["card"]
    accuracy = card["metrics"]["accuracy"]
    assert 0.5 < accuracy <= 1.0
    assert f"accuracy {accuracy:g}" in operation["description"]
    assert "100 held-out rows of churn.csv" in operation["description"]
    example = operation["requestBody"]["content"]["application/json"]["example"]["instances"][0]
    assert isinstance(example["tenure_months"], int)
    assert card["evaluation"]["held_out"] and card["reference"]["rows"] == 300
    assert card["source"]["kind"] == "file" and card["artifact"] == "model.joblib"
    assert info["runtime"]["sklearn_version"] == card["sklearn_version"]


def pets_rows(count: int = 4) -> tuple[list[list[Any]], list[str]]:
    frame, y = pets_frame()
    rows = [[str(c), float(w), int(a)] for c, w, a in frame.head(count).itertuples(index=False)]
    return rows, y[:count].tolist()


def test_an_mlflow_registered_pipeline_serves_on_every_surface(byom: Server) -> None:
    rows, expected = pets_rows()
    csv = "colour,weight,age\n" + "".join(f"{c},{w!r},{a}\n" for c, w, a in rows)
    v2 = {
        "inputs": [
            {
                "name": "colour",
                "shape": [len(rows)],
                "datatype": "BYTES",
                "data": [r[0] for r in rows],
            },
            {
                "name": "weight",
                "shape": [len(rows)],
                "datatype": "FP64",
                "data": [r[1] for r in rows],
            },
            {
                "name": "age",
                "shape": [len(rows)],
                "datatype": "INT64",
                "data": [r[2] for r in rows],
            },
        ]
    }
    with byom.client() as http:
        info = http.get("/models/pets").json()
        by_json = http.post("/models/pets/predict", json={"instances": rows})
        by_file = http.post(
            "/models/pets/predict/file", files={"file": ("pets.csv", csv, "text/csv")}
        )
        by_form = [
            http.post(
                "/models/pets/predict/form", data={"colour": c, "weight": str(w), "age": str(a)}
            )
            for c, w, a in rows
        ]
        by_v2 = http.post("/v2/models/pets/infer", json=v2)
        metadata = http.get("/v2/models/pets").json()
    source = info["card"]["source"]
    assert (source["kind"], source["registered_model"], source["registered_version"]) == (
        "mlflow",
        "pets",
        1,
    )
    assert info["card"]["description"] == "Cat or dog, from colour, weight, age"
    for reply in (by_json, by_file, by_v2, *by_form):
        assert reply.status_code == 200, reply.text
    assert [p["label"] for p in by_json.json()["predictions"]] == expected
    assert [p["label"] for p in by_file.json()["predictions"]] == expected
    assert [reply.json()["predictions"][0]["label"] for reply in by_form] == expected
    outputs = {o["name"]: o for o in by_v2.json()["outputs"]}
    assert outputs["predict"]["data"] == expected
    # The signature's long: integers stay integers on the v2 surface too.
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]}["age"] == "INT64"

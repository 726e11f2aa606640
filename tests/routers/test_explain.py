"""POST /models/{name}/explain and its pinned-version twin, through the real stack: both row
forms, class selection, every error the prediction routes give, and the per-model docs."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from app.config import Settings
from app.main import create_app
from schemas.cards import FeatureSpec
from tests.conftest import build_store, flower_data, flower_features, flower_rows, write_model

FLOWERS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def explain_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared store, plus a forest and a k-NN on the flowers, and an SVC too wide to explain."""
    store = build_store(tmp_path_factory.mktemp("explain") / "models")
    x, y = flower_data()
    means = [
        f.model_copy(update={"observed_mean": float(m)})
        for f, m in zip(flower_features(), x.mean(axis=0), strict=True)
    ]
    for name, estimator in (
        ("forest", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)),
        ("knn", KNeighborsClassifier(n_neighbors=5)),
    ):
        write_model(
            store,
            estimator.fit(x, y),
            name=name,
            task="classification",
            features=means,
            classes=FLOWERS,
        )
    coded = LogisticRegression(max_iter=1000).fit(x, (x[:, 2] > 3).astype(int))
    write_model(store, coded, name="coded", task="classification", features=means, classes=[0, 1])
    wide = np.random.default_rng(0).normal(size=(40, 11))
    write_model(
        store,
        SVC().fit(wide, np.where(wide[:, 0] > 0, "a", "b")),
        name="wide",
        task="classification",
        features=[FeatureSpec(name=f"x{i}", dtype="float") for i in range(11)],
        classes=["a", "b"],
    )
    return store


@pytest.fixture(scope="module")
def client(explain_store: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=explain_store, max_rows=50, explain_max_rows=20, access_log=False)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def explain(client: TestClient, path: str, body: Any) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def added_up(item: dict[str, Any]) -> float:
    return float(item["base_value"] + sum(item["contributions"].values()))


@pytest.mark.parametrize("name", ["forest", "knn"])
def test_array_and_object_rows_get_the_same_explanations(client: TestClient, name: str) -> None:
    rows = flower_rows(4)
    records = [
        dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], r, strict=True))
        for r in rows
    ]
    as_arrays = explain(client, f"/models/{name}/explain", {"instances": rows})
    as_objects = explain(client, f"/models/{name}/explain", {"instances": records})
    assert as_arrays == as_objects
    predicted = client.post(f"/models/{name}/predict", json={"instances": rows}).json()
    assert as_arrays["output"] == "probability"
    for item, prediction in zip(as_arrays["explanations"], predicted["predictions"], strict=True):
        assert item["prediction"] == prediction
        # By default the predicted class is explained, here through its probability.
        assert item["class"] == prediction["label"]
        assert added_up(item) == pytest.approx(prediction["probabilities"][item["class"]], abs=1e-9)
        assert item["output_value"] == pytest.approx(added_up(item), abs=1e-12)
        assert list(item["contributions"]) == [
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
        ]


def test_linear_models_explain_the_margin(client: TestClient) -> None:
    reply = explain(client, "/models/flowers/versions/1/explain", {"instances": flower_rows(3)})
    assert (reply["method"], reply["output"], reply["model_version"]) == ("linear", "margin", 1)
    estimator = client.app.state.registry.get("flowers", 1).estimator  # type: ignore[attr-defined]
    margins = estimator.decision_function(np.array(flower_rows(3)))
    for item, margin in zip(reply["explanations"], margins, strict=True):
        assert added_up(item) == pytest.approx(margin[FLOWERS.index(item["class"])], abs=1e-9)


def test_pinned_version_is_the_one_explained(client: TestClient) -> None:
    for version in (1, 2):
        response = client.post(
            f"/models/flowers/versions/{version}/explain", json={"instances": flower_rows(1)}
        )
        assert response.status_code == 200
        assert response.headers["x-model-version"] == str(version)
        assert response.json()["model_version"] == version


def test_a_named_class_is_explained_instead_of_the_predicted_one(client: TestClient) -> None:
    rows = flower_rows(3)
    reply = explain(client, "/models/forest/explain", {"instances": rows, "class": "virginica"})
    proba = client.post("/models/forest/predict", json={"instances": rows}).json()["predictions"]
    for item, prediction in zip(reply["explanations"], proba, strict=True):
        assert item["class"] == "virginica"
        assert added_up(item) == pytest.approx(prediction["probabilities"]["virginica"], abs=1e-9)
    # Two classes, one margin: class "cat"'s is the negative of class "dog"'s.
    row = {"colour": "white", "weight": 5.0, "age": 3}
    cat = explain(client, "/models/pets/explain", {"instances": [row], "class": "cat"})[
        "explanations"
    ][0]
    dog = explain(client, "/models/pets/explain", {"instances": [row], "class": "dog"})[
        "explanations"
    ][0]
    assert cat["output_value"] == pytest.approx(-dog["output_value"])
    assert cat["contributions"] == pytest.approx({k: -v for k, v in dog["contributions"].items()})


def test_a_class_label_or_its_text_but_never_another_type(client: TestClient) -> None:
    rows = flower_rows(2)
    for named in (1, "1"):
        reply = explain(client, "/models/coded/explain", {"instances": rows, "class": named})
        assert [item["class"] for item in reply["explanations"]] == [1, 1]
    # Python finds false == 0 and 1.0 == 1; a JSON client means something else by them.
    wrongs: list[Any] = [False, True, 1.0, "one", {}, [1], None]
    for wrong in wrongs:
        response = client.post("/models/coded/explain", json={"instances": rows, "class": wrong})
        assert response.status_code == 422, wrong
        assert response.json()["detail"][0]["loc"] == ["class"]


def test_regressors_explain_their_value(client: TestClient) -> None:
    reply = explain(client, "/models/line/explain", {"instances": [[1.0, 2.0], [-3.0, 0.5]]})
    assert reply["output"] == "value"
    for item, (a, b) in zip(reply["explanations"], [[1.0, 2.0], [-3.0, 0.5]], strict=True):
        assert "class" not in item
        assert added_up(item) == pytest.approx(2 * a - b + 3, abs=1e-9)
        # No mean on this card: the baseline is 0, so each term is coefficient × value.
        assert item["contributions"] == pytest.approx({"a": 2 * a, "b": -b})


@pytest.mark.parametrize(
    ("path", "body", "status", "kind"),
    [
        ("/models/flowers/explain", {"instances": [[5.1, 3.5, 1.4]]}, 422, "InvalidInput"),
        ("/models/flowers/explain", {"instances": [[5.1, 3.5, 1.4, -1.0]]}, 422, "InvalidInput"),
        ("/models/flowers/explain", {"instances": []}, 422, "InvalidInput"),
        ("/models/flowers/explain", {"rows": [[5.1, 3.5, 1.4, 0.2]]}, 422, "InvalidInput"),
        (
            "/models/flowers/explain",
            {"instances": [[5.1, 3.5, 1.4, 0.2]], "class": "rose"},
            422,
            "InvalidInput",
        ),
        (
            "/models/line/explain",
            {"instances": [[1.0, 2.0]], "class": "setosa"},
            422,
            "InvalidInput",
        ),
        (
            "/models/flowers/explain",
            {"instances": [[5.1, 3.5, 1.4, 0.2]] * 21},
            422,
            "InvalidInput",
        ),
        ("/models/nope/explain", {"instances": [[1.0]]}, 404, "ModelNotFound"),
        (
            "/models/flowers/versions/9/explain",
            {"instances": [[5.1, 3.5, 1.4, 0.2]]},
            404,
            "ModelNotFound",
        ),
        ("/models/wide/explain", {"instances": [[0.0] * 11]}, 501, "NotExplainable"),
    ],
    ids=[
        "short-row",
        "below-minimum",
        "no-rows",
        "wrong-key",
        "unknown-class",
        "class-for-regressor",
        "over-explain-limit",
        "unknown-model",
        "unknown-version",
        "not-explainable",
    ],
)
def test_errors_answer_in_the_envelope(
    client: TestClient, path: str, body: Any, status: int, kind: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == kind


def test_bad_rows_are_refused_as_predict_refuses_them(client: TestClient) -> None:
    for body in ({"instances": [[5.1, "x", 1.4, 0.2]]}, {"instances": [{"sepal_length": 5.1}]}):
        explained = client.post("/models/flowers/versions/1/explain", json=body)
        predicted = client.post("/models/flowers/versions/1/predict", json=body)
        assert explained.status_code == predicted.status_code == 422
        assert explained.json() == predicted.json()
    malformed = client.post(
        "/models/flowers/explain", content=b"{", headers={"content-type": "application/json"}
    )
    assert (malformed.status_code, malformed.json()["error"]) == (400, "MalformedBody")
    as_text = client.post(
        "/models/flowers/explain", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert as_text.status_code == 415


def test_an_api_key_guards_explanations(explain_store: Path) -> None:
    settings = Settings(model_dir=explain_store, api_key="k3y", access_log=False)
    with TestClient(create_app(settings)) as local:
        body = {"instances": [[1.0, 2.0]]}
        for path in ("/models/line/explain", "/models/line/versions/1/explain"):
            assert local.post(path, json=body).status_code == 401
            assert local.post(path, json=body, headers={"X-API-Key": "k3y"}).status_code == 200


def test_the_row_cap_of_exact_enumeration(explain_store: Path) -> None:
    settings = Settings(
        model_dir=explain_store, max_rows=10_000, explain_max_rows=10_000, access_log=False
    )
    with TestClient(create_app(settings)) as local:
        # 4 features: 16 subsets per row, the model called on at most 65,536 rows per request.
        response = local.post(
            "/models/knn/explain", json={"instances": [[5.0, 3.0, 4.0, 1.0]] * 4097}
        )
    assert response.status_code == 422
    assert "at most 4096" in response.json()["detail"][0]["msg"]


def test_each_model_documents_its_explanations(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert "/models/{model_name}/explain" not in paths  # documented per model instead
    schemas = document["components"]["schemas"]
    for name, prefix in (("pets", "PetsV1"), ("forest", "ForestV1"), ("line", "LineV1")):
        operation = paths[f"/models/{name}/explain"]["post"]
        assert operation["tags"] == [f"model: {name}"]
        body = operation["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{prefix}ExplanationRequest"}
        reply = client.post(f"/models/{name}/explain", json=body["example"])
        assert reply.status_code == 200, reply.text
        # The reply has the shape of the operation's own typed response schema.
        success = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert success == {"$ref": f"#/components/schemas/{prefix}ExplanationResponse"}
        documented = schemas[f"{prefix}ExplanationResponse"]
        assert set(documented["required"]) <= set(reply.json())
        item_schema = schemas[f"{prefix}Explanation"]
        for item in reply.json()["explanations"]:
            assert set(item_schema["required"]) <= set(item) <= set(item_schema["properties"])
            contributions = item_schema["properties"]["contributions"]
            assert list(item["contributions"]) == contributions["required"]
            assert list(contributions["properties"]) == list(item["contributions"])
            if "class" in item:
                assert item["class"] in item_schema["properties"]["class"]["enum"]
    assert schemas["PetsV1ExplanationRequest"]["properties"]["class"]["enum"] == ["cat", "dog"]
    assert "class" not in schemas["LineV1ExplanationRequest"]["properties"]
    assert "/models/flowers/versions/2/explain" in paths
    assert "501" in paths["/models/wide/explain"]["post"]["responses"]
    assert "cannot be explained" in paths["/models/wide/explain"]["post"]["description"]

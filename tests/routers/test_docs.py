"""Offline /docs and /redoc, and the per-model OpenAPI document."""

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app

DOC_PAGES = ["/docs", "/redoc"]
ERROR_SCHEMA = "#/components/schemas/ErrorResponse"
V2_ERROR_SCHEMA = "#/components/schemas/V2Error"

# Attributes that load something, `url: '...'` in inline scripts, and any quoted string that is
# an absolute, protocol-relative or root-relative URL.
URL_PATTERNS = [
    re.compile(r"""\b(?:src|href|spec-url|action)\s*=\s*["']([^"']*)["']""", re.IGNORECASE),
    re.compile(r"""\burl\s*:\s*["']([^"']*)["']""", re.IGNORECASE),
    re.compile(r"""["']((?:[a-z][a-z0-9+.-]*:)?//[^"']*)["']""", re.IGNORECASE),
    re.compile(r"""["'](/[^"'\s]*)["']"""),
]


def urls_in(html: str) -> set[str]:
    return {match for pattern in URL_PATTERNS for match in pattern.findall(html)}


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def served_models(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/models")
    assert response.status_code == 200
    models: list[dict[str, Any]] = response.json()["data"]
    return models


def openapi(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def record_component(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    """The request body schema of `operation`, followed to the per-row record component."""
    request_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = resolve(document, request_ref)
    assert list(request["properties"]) == ["instances"]
    variants = request["properties"]["instances"]["items"]["oneOf"]
    record_refs = [variant["$ref"] for variant in variants if "$ref" in variant]
    assert len(record_refs) == 1
    return resolve(document, record_refs[0])


# -- the pages --------------------------------------------------------------------------------


@pytest.mark.parametrize("page", DOC_PAGES)
def test_docs_page_is_html(client: TestClient, page: str) -> None:
    response = client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()


@pytest.mark.parametrize("page", DOC_PAGES)
def test_docs_page_loads_nothing_from_another_host(client: TestClient, page: str) -> None:
    html = client.get(page).text

    urls = urls_in(html)

    assert "/openapi.json" in urls
    assert any(url.endswith(".js") for url in urls)
    assert re.findall(r"https?://", html, re.IGNORECASE) == []
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url


@pytest.mark.parametrize("page", DOC_PAGES)
def test_every_asset_a_docs_page_references_is_served(client: TestClient, page: str) -> None:
    urls = urls_in(client.get(page).text)

    for url in sorted(urls):
        response = client.get(urlsplit(url).path)
        assert response.status_code == 200, url
        assert response.content, url


def test_docs_assets_are_served_with_their_media_types(client: TestClient) -> None:
    swagger = urls_in(client.get("/docs").text)
    redoc = urls_in(client.get("/redoc").text)
    scripts = sorted(url for url in swagger | redoc if url.endswith(".js"))
    styles = sorted(url for url in swagger if url.endswith(".css"))

    assert len(scripts) == 2
    assert len(styles) == 1
    for url in scripts:
        assert "javascript" in client.get(url).headers["content-type"], url
    for url in styles:
        assert client.get(url).headers["content-type"].startswith("text/css"), url


def test_static_mount_does_not_escape_its_folder(client: TestClient) -> None:
    response = client.get("/static/docs/../../app/main.py")

    assert response.status_code == 404
    assert "create_app" not in response.text


# -- the OpenAPI document ---------------------------------------------------------------------


def test_each_model_has_its_own_predict_operation(client: TestClient) -> None:
    document = openapi(client)
    models = served_models(client)
    tag_names = [tag["name"] for tag in document["tags"]]

    assert [model["name"] for model in models] == ["flowers", "line", "pets"]
    for model in models:
        name = model["name"]
        operation = document["paths"][f"/models/{name}/predict"]["post"]
        assert operation["tags"] == [f"model: {name}"]
        assert f"model: {name}" in tag_names
        # The model name is part of the path; the canary session cookie and the timeout remain.
        assert [p["name"] for p in operation.get("parameters", [])] == [
            "modelport_session",
            "X-Request-Timeout",
        ]
        card = client.get(f"/models/{name}").json()["card"]
        record = record_component(document, operation)
        assert list(record["properties"]) == [feature["name"] for feature in card["features"]]
        assert record["additionalProperties"] is False


def test_pets_schema_carries_categories_and_bounds(client: TestClient) -> None:
    document = openapi(client)
    operation = document["paths"]["/models/pets/predict"]["post"]

    record = record_component(document, operation)

    assert list(record["properties"]) == ["colour", "weight", "age"]
    assert record["properties"]["colour"]["enum"] == ["black", "ginger", "white"]
    assert record["properties"]["weight"]["minimum"] == 0
    assert record["properties"]["age"]["type"] == "integer"
    assert record["properties"]["age"]["maximum"] == 40


def post_documented_example(
    client: TestClient, path: str
) -> tuple[dict[str, Any], Any, httpx2.Response]:
    """The documented JSON operation at `path`, its request example, and the reply to posting
    that example as is (what Swagger's "Try it out" sends)."""
    operation: dict[str, Any] = openapi(client)["paths"][path]["post"]
    example = operation["requestBody"]["content"]["application/json"]["example"]
    return operation, example, client.post(path, json=example)


@pytest.mark.parametrize("name", ["flowers", "line", "pets"])
def test_documented_example_works_when_posted_to_its_path(client: TestClient, name: str) -> None:
    """What Swagger's "Try it out" sends."""
    operation, example, response = post_documented_example(client, f"/models/{name}/predict")

    assert response.status_code == 200, response.text
    assert response.json()["model_name"] == name
    assert len(response.json()["predictions"]) == len(example["instances"])
    # The documented success example is the default version's answer (flowers has a canary
    # split, so an unpinned request may be answered by the other version).
    documented = operation["responses"]["200"]["content"]["application/json"]["example"]
    pinned = f"/models/{name}/versions/{documented['model_version']}/predict"
    assert documented == client.post(pinned, json=example).json()


def predict_operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path, operation)
        for path, item in document["paths"].items()
        if path.endswith("/predict")
        for method, operation in item.items()
        if method == "post"
    ]


def test_predict_operations_document_their_errors_with_the_envelope(client: TestClient) -> None:
    document = openapi(client)
    operations = predict_operations(document)

    assert {path for path, _ in operations} == {
        "/models/flowers/predict",
        "/models/flowers/versions/1/predict",
        "/models/flowers/versions/2/predict",
        "/models/line/predict",
        "/models/line/versions/1/predict",
        "/models/pets/predict",
        "/models/pets/versions/1/predict",
    }
    for path, operation in operations:
        codes = set(operation["responses"])
        assert {"400", "404", "413", "415", "422"} <= codes, path
        for code, response in operation["responses"].items():
            if int(code) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_SCHEMA}, (path, code)


TEMPLATED = [
    "/models/{model_name}/predict",
    "/models/{model_name}/versions/{version}/predict",
    "/models/{model_name}/predict/file",
    "/models/{model_name}/predict/form",
    "/models/{model_name}/predict/stream",
    "/models/{model_name}/versions/{version}/predict/stream",
    "/v2/models/{model_name}/infer",
    "/v2/models/{model_name}/versions/{version}/infer",
    "/models/{model_name}/explain",
    "/models/{model_name}/versions/{version}/explain",
]


def test_prediction_routes_are_documented_per_model_not_templated(client: TestClient) -> None:
    """No one schema is true of every model's rows, so each served model (and version) has its
    own typed operation on every surface, and the templated routes are left out."""
    document = openapi(client)
    posts = {
        path
        for path, item in document["paths"].items()
        if "post" in item and not path.startswith("/v2/repository/")  # no rows: not typed
    }

    assert posts == {
        path.replace("{model_name}", name).replace("{version}", str(version))
        for name, versions in {"flowers": [1, 2], "line": [1], "pets": [1]}.items()
        for version in versions
        for path in TEMPLATED
    }
    for path in posts:
        operation = document["paths"][path]["post"]
        name = path.removeprefix("/v2").split("/")[2]
        assert operation["tags"] == [f"model: {name}"], path
        assert operation["operationId"].startswith(f"model-{name}-"), path
        assert not any(p["in"] == "path" for p in operation.get("parameters", [])), path
    # FastAPI's body component for the templated file route is gone with it.
    assert not [name for name in document["components"]["schemas"] if name.startswith("Body_")]


@pytest.mark.parametrize("path", TEMPLATED)
def test_templated_prediction_routes_still_answer(client: TestClient, path: str) -> None:
    concrete = path.replace("{model_name}", "line").replace("{version}", "1")
    if path.endswith("/infer"):
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
        response = client.post(concrete, json=body)
    elif path.endswith("/file"):
        response = client.post(concrete, files={"file": ("rows.csv", b"a,b\n1,2\n")})
    elif path.endswith("/form"):
        response = client.post(concrete, data={"a": "1", "b": "2"})
    elif path.endswith("/stream"):
        response = client.post(
            concrete, content=b"a,b\n1,2\n", headers={"content-type": "text/csv"}
        )
    else:
        response = client.post(concrete, json={"instances": [[1, 2]]})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("version", [1, 2])
def test_pinned_operation_documents_its_own_version(client: TestClient, version: int) -> None:
    operation, _, response = post_documented_example(
        client, f"/models/flowers/versions/{version}/predict"
    )

    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == version
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == f"#/components/schemas/FlowersV{version}PredictionRequest"
    assert operation["responses"]["200"]["content"]["application/json"]["example"] == (
        response.json()
    )


@pytest.mark.parametrize("name", ["flowers", "line", "pets"])
def test_documented_form_and_infer_examples_work(client: TestClient, name: str) -> None:
    document = openapi(client)
    form = document["paths"][f"/models/{name}/predict/form"]["post"]
    schema = form["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    fields = {
        field: str(spec["example"])
        for field, spec in schema["properties"].items()
        if "example" in spec
    }
    infer_path = f"/v2/models/{name}/infer"
    infer = document["paths"][infer_path]["post"]["requestBody"]["content"]["application/json"]

    assert client.post(f"/models/{name}/predict/form", data=fields).status_code == 200
    response = client.post(infer_path, json=infer["example"])
    assert response.status_code == 200, response.text
    assert response.json()["model_name"] == name


def test_infer_schema_names_the_model_datatypes_and_outputs(client: TestClient) -> None:
    document = openapi(client)
    schemas = document["components"]["schemas"]

    pets = resolve(document, "#/components/schemas/PetsV1InferenceRequest")
    line = resolve(document, "#/components/schemas/LineV1InferenceRequest")
    assert pets["properties"]["inputs"]["maxItems"] == 3
    pets_input = schemas["PetsV1InferenceInput"]["properties"]
    assert "BYTES" in pets_input["datatype"]["enum"]
    assert "BOOL" not in pets_input["datatype"]["enum"]
    line_input = schemas["LineV1InferenceInput"]["properties"]
    assert "BYTES" not in line_input["datatype"]["enum"]
    assert line_input["shape"]["items"] == {"type": "integer", "minimum": 1}
    assert schemas["PetsV1InferenceOutput"]["properties"]["name"]["enum"] == [
        "predict",
        "predict_proba",
    ]
    assert schemas["LineV1InferenceOutput"]["properties"]["name"]["enum"] == ["predict"]
    assert line["properties"]["inputs"]["items"] == {
        "$ref": "#/components/schemas/LineV1InferenceInput"
    }


def test_file_operations_say_what_to_upload(client: TestClient) -> None:
    document = openapi(client)

    operation = document["paths"]["/models/pets/predict/file"]["post"]
    content = operation["requestBody"]["content"]["multipart/form-data"]
    assert content["schema"]["required"] == ["file"]
    assert content["encoding"] == {"file": {"contentType": "text/csv"}}
    assert "colour, weight, age" in content["schema"]["properties"]["file"]["description"]


def test_every_documented_error_uses_the_envelope(client: TestClient) -> None:
    document = openapi(client)

    for path, item in document["paths"].items():
        # The Open Inference Protocol has its own error shape, {"error": "<message>"}.
        expected = V2_ERROR_SCHEMA if path.startswith("/v2") else ERROR_SCHEMA
        for method, operation in item.items():
            for code, response in operation["responses"].items():
                if path.endswith("/ready") and code == "503":
                    continue  # readiness probes answer {"ready": false}, as KServe's client reads
                if code == "4XX" or int(code) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": expected}, (method, path, code)
    envelope = resolve(document, ERROR_SCHEMA)
    assert set(envelope["properties"]) == {"error", "detail"}
    v2_error = resolve(document, V2_ERROR_SCHEMA)
    assert set(v2_error["properties"]) == {"error"}


def test_fastapi_default_validation_schemas_are_gone(client: TestClient) -> None:
    schemas = openapi(client)["components"]["schemas"]

    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas


def test_operation_ids_are_unique(client: TestClient) -> None:
    document = openapi(client)

    ids = [
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
    ]

    assert len(ids) == len(set(ids))


def test_every_ref_in_the_document_resolves(client: TestClient) -> None:
    document = openapi(client)
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)

    assert refs
    for ref in refs:
        resolve(document, ref)


# -- docs disabled ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/static/docs/swagger-ui.css"],
)
def test_disabled_docs_are_404_envelopes(store: Path, path: str) -> None:
    app = create_app(Settings(model_dir=store, docs_enabled=False))
    with TestClient(app) as client:
        response = client.get(path)
        predict = client.post("/models/line/predict", json={"instances": [[1.0, 2.0]]})

    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": "Not Found"}
    assert predict.status_code == 200

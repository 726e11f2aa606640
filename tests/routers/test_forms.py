"""POST /models/{name}/predict/form (urlencoded and multipart) and the HTML page at
GET /models/{name}/form, through the real stack and checked against the fitted estimators;
plus the per-model form operations in the OpenAPI document."""

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import FLOWER_FEATURES, build_store, flower_rows
from tests.routers.test_predict import PETS_FEATURES, assert_envelope, oracle

ENCODINGS = ["urlencoded", "multipart"]
FLOWERS = dict(zip(FLOWER_FEATURES, ["5.1", "3.5", "1.4", "0.2"], strict=True))
PETS = {"colour": "white", "weight": "3.9", "age": "7"}
LINE = {"a": "1.5", "b": "-2.25"}
URLENCODED = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the module (overrides conftest's per-test one): these tests only read it,
    and fitting its models is the slow part of each test's setup."""
    return build_store(tmp_path_factory.mktemp("store") / "models")


def path_for(name: str) -> str:
    return f"/models/{name}/predict/form"


def post_form(
    client: TestClient, name: str, fields: dict[str, str] | list[tuple[str, str]], encoding: str
) -> httpx2.Response:
    pairs = list(fields.items()) if isinstance(fields, dict) else fields
    if encoding == "multipart":
        # Parts without a file name: multipart/form-data with plain fields, as FormData sends.
        response = client.post(path_for(name), files=[(k, (None, v)) for k, v in pairs])
        assert response.request.headers["content-type"].startswith("multipart/form-data")
    elif isinstance(fields, dict):
        response = client.post(path_for(name), data=fields)
    else:  # a list of pairs may repeat a name
        response = client.post(
            path_for(name), content=urlencode(pairs).encode(), headers=URLENCODED
        )
    if encoding == "urlencoded":
        assert response.request.headers["content-type"] == URLENCODED["content-type"]
    return response


def served(response: httpx2.Response, store: Path, name: str) -> Any:
    """The estimator that answered (the version the response names), loaded independently."""
    assert response.status_code == 200, response.text
    body = response.json()
    version = int(response.headers["x-model-version"])
    assert (body["model_name"], body["model_version"]) == (name, version)
    return oracle(store, name, version)


def as_floats(fields: dict[str, str], names: list[str]) -> np.ndarray[Any, Any]:
    return np.array([[float(fields[name]) for name in names]])


def pets_frame(fields: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [[fields["colour"], float(fields["weight"]), int(fields["age"])]], columns=PETS_FEATURES
    )


# -- happy paths ------------------------------------------------------------------------------


def item_of(response: Any) -> dict[str, Any]:
    """The one prediction of a form reply, which comes in the envelope of every surface."""
    body = response.json()
    assert set(body) == {"model_name", "model_version", "predictions"}
    assert len(body["predictions"]) == 1
    item: dict[str, Any] = body["predictions"][0]
    return item


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("row", [0, 3, 5])
def test_flowers_top_k_2_ranks_labels_by_probability(
    client: TestClient, store: Path, encoding: str, row: int
) -> None:
    fields = dict(zip(FLOWER_FEATURES, map(str, flower_rows()[row]), strict=True))

    response = post_form(client, "flowers", {**fields, "top_k": "2"}, encoding)

    estimator = served(response, store, "flowers")
    body = item_of(response)
    features = as_floats(fields, FLOWER_FEATURES)
    proba = estimator.predict_proba(features)[0]
    classes = [str(c) for c in estimator.classes_]
    best = np.argsort(-proba)[:2]
    assert body["label"] == estimator.predict(features)[0]
    assert [item["label"] for item in body["top"]] == [classes[i] for i in best]
    assert [item["probability"] for item in body["top"]] == pytest.approx(
        proba[best].tolist(), abs=1e-12
    )
    assert "value" not in body and body["threshold"] is None


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_top_k_defaults_to_one_label(client: TestClient, store: Path, encoding: str) -> None:
    response = post_form(client, "flowers", FLOWERS, encoding)

    estimator = served(response, store, "flowers")
    body = item_of(response)
    features = as_floats(FLOWERS, FLOWER_FEATURES)
    assert len(body["top"]) == 1
    assert body["top"][0]["label"] == body["label"] == estimator.predict(features)[0]
    assert body["top"][0]["probability"] == pytest.approx(
        estimator.predict_proba(features)[0].max(), abs=1e-12
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_pets_without_threshold_equals_the_pipeline(
    client: TestClient, store: Path, encoding: str
) -> None:
    response = post_form(client, "pets", PETS, encoding)

    estimator = served(response, store, "pets")
    assert item_of(response)["label"] == estimator.predict(pets_frame(PETS))[0]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("fields", [PETS, {"colour": "ginger", "weight": "3.0", "age": "2"}])
def test_pets_threshold_decides_on_either_side_of_the_probability(
    client: TestClient, store: Path, encoding: str, fields: dict[str, str]
) -> None:
    estimator = oracle(store, "pets")
    p_dog = float(
        estimator.predict_proba(pets_frame(fields))[0][list(estimator.classes_).index("dog")]
    )
    assert 0.01 < p_dog < 0.99

    below = post_form(client, "pets", {**fields, "threshold": repr(p_dog - 1e-6)}, encoding)
    above = post_form(client, "pets", {**fields, "threshold": repr(p_dog + 1e-6)}, encoding)

    served(below, store, "pets")
    served(above, store, "pets")
    assert item_of(below)["label"] == "dog"
    assert item_of(above)["label"] == "cat"
    assert item_of(below)["threshold"] == pytest.approx(p_dog - 1e-6, abs=1e-15)
    assert item_of(above)["threshold"] == pytest.approx(p_dog + 1e-6, abs=1e-15)
    assert item_of(below)["top"][0]["probability"] == pytest.approx(
        max(p_dog, 1 - p_dog), abs=1e-12
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_line_returns_the_regression_value(client: TestClient, store: Path, encoding: str) -> None:
    response = post_form(client, "line", LINE, encoding)

    estimator = served(response, store, "line")
    body = item_of(response)
    assert body["value"] == pytest.approx(
        estimator.predict(as_floats(LINE, ["a", "b"]))[0], abs=1e-12
    )
    assert set(body) == {"value"}


def test_values_are_stripped(client: TestClient, store: Path) -> None:
    fields = {name: f"  {value}\t" for name, value in FLOWERS.items()}

    response = post_form(client, "flowers", fields, "urlencoded")

    estimator = served(response, store, "flowers")
    assert item_of(response)["label"] == estimator.predict(as_floats(FLOWERS, FLOWER_FEATURES))[0]


# -- invalid fields ---------------------------------------------------------------------------


def without(fields: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in fields.items() if key != name}


INVALID_FORMS = [
    pytest.param(
        "flowers", without(FLOWERS, "petal_width"), "petal_width", "missing", id="missing-feature"
    ),
    pytest.param(
        "flowers", {**FLOWERS, "stem": "1"}, "stem", "extra_forbidden", id="unknown-field"
    ),
    pytest.param(
        "flowers", {**FLOWERS, "sepal_length": "NaN"}, "sepal_length", "finite_number", id="nan"
    ),
    pytest.param(
        "flowers", {**FLOWERS, "sepal_width": "inf"}, "sepal_width", "finite_number", id="inf"
    ),
    pytest.param(
        "flowers",
        {**FLOWERS, "sepal_width": "-Infinity"},
        "sepal_width",
        "finite_number",
        id="minus-infinity",
    ),
    pytest.param(
        "flowers", {**FLOWERS, "petal_length": "1e999"}, "petal_length", "finite_number", id="1e999"
    ),
    pytest.param(
        "flowers", {**FLOWERS, "petal_width": "true"}, "petal_width", "float_parsing", id="true"
    ),
    pytest.param(
        "flowers", {**FLOWERS, "petal_width": ""}, "petal_width", "float_parsing", id="empty"
    ),
    pytest.param(
        "flowers",
        {**FLOWERS, "petal_width": "-0.1"},
        "petal_width",
        "greater_than_equal",
        id="below-minimum",
    ),
    pytest.param(
        "pets", {**PETS, "colour": "purple"}, "colour", "literal_error", id="category-not-allowed"
    ),
    pytest.param(
        "pets", {**PETS, "colour": "White"}, "colour", "literal_error", id="category-wrong-case"
    ),
    pytest.param("pets", {**PETS, "age": "3.5"}, "age", "int_parsing", id="int-is-3.5"),
    pytest.param("pets", {**PETS, "age": "41"}, "age", "less_than_equal", id="int-above-max"),
    pytest.param("flowers", {**FLOWERS, "top_k": "0"}, "top_k", "greater_than_equal", id="top_k-0"),
    pytest.param(
        "flowers",
        {**FLOWERS, "top_k": "4"},
        "top_k",
        "option_not_applicable",
        id="top_k-over-classes",
    ),
    pytest.param("flowers", {**FLOWERS, "top_k": "abc"}, "top_k", "int_parsing", id="top_k-abc"),
    pytest.param(
        "flowers",
        {**FLOWERS, "threshold": "0.5"},
        "threshold",
        "option_not_applicable",
        id="threshold-on-3-classes",
    ),
    pytest.param(
        "pets", {**PETS, "threshold": "1.5"}, "threshold", "less_than_equal", id="threshold-1.5"
    ),
    pytest.param(
        "pets", {**PETS, "threshold": "nan"}, "threshold", "finite_number", id="threshold-nan"
    ),
    pytest.param(
        "line", {**LINE, "top_k": "1"}, "top_k", "option_not_applicable", id="top_k-on-regressor"
    ),
    pytest.param(
        "line",
        {**LINE, "threshold": "0.5"},
        "threshold",
        "option_not_applicable",
        id="threshold-on-regressor",
    ),
]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(("name", "fields", "field", "type_"), INVALID_FORMS)
def test_invalid_form_is_422_naming_the_field(
    client: TestClient, encoding: str, name: str, fields: dict[str, str], field: str, type_: str
) -> None:
    response = post_form(client, name, fields, encoding)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [(issue["loc"], issue["type"]) for issue in detail] == [(["form", field], type_)]
    assert all(isinstance(issue["msg"], str) and issue["msg"] for issue in detail)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("field", ["sepal_length", "top_k"])
def test_a_field_given_twice_is_422(client: TestClient, encoding: str, field: str) -> None:
    pairs = [*{**FLOWERS, "top_k": "1"}.items(), (field, "2")]

    response = post_form(client, "flowers", pairs, encoding)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [(issue["loc"], issue["type"]) for issue in detail] == [
        (["form", field], "duplicate_field")
    ]


def test_every_problem_is_reported(client: TestClient) -> None:
    fields = {**without(FLOWERS, "sepal_width"), "petal_length": "nan", "top_k": "0"}

    response = post_form(client, "flowers", fields, "urlencoded")

    detail = assert_envelope(response, 422, "InvalidInput")
    assert sorted(tuple(issue["loc"]) for issue in detail) == [
        ("form", "petal_length"),
        ("form", "sepal_width"),
        ("form", "top_k"),
    ]


def test_empty_form_names_every_feature(client: TestClient) -> None:
    response = client.post(path_for("flowers"), content=b"", headers=URLENCODED)

    detail = assert_envelope(response, 422, "InvalidInput")
    assert [issue["loc"] for issue in detail] == [["form", name] for name in FLOWER_FEATURES]


def test_a_file_part_in_the_form_is_400(client: TestClient) -> None:
    response = client.post(
        path_for("flowers"), data=FLOWERS, files={"file": ("rows.csv", b"a,b\n1,2\n", "text/csv")}
    )

    detail = assert_envelope(response, 400, "BadRequest")
    assert "file" in detail.lower()


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"garbage", "multipart/form-data; boundary=zz", id="bad-multipart"),
        pytest.param(b"--zz\r\nno headers", "multipart/form-data", id="multipart-no-boundary"),
    ],
)
def test_unparseable_form_is_400(client: TestClient, content: bytes, content_type: str) -> None:
    response = client.post(
        path_for("flowers"), content=content, headers={"content-type": content_type}
    )

    assert_envelope(response, 400, "BadRequest")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"content-type": "application/json"}, id="json"),
        pytest.param({"content-type": "text/plain"}, id="text"),
        pytest.param({}, id="no-content-type"),
    ],
)
def test_not_a_form_is_415(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(path_for("flowers"), content=b'{"sepal_length": "5.1"}', headers=headers)

    detail = assert_envelope(response, 415, "UnsupportedMediaType")
    assert "form" in detail


def test_unknown_model_is_404(client: TestClient) -> None:
    response = post_form(client, "nope", FLOWERS, "urlencoded")

    assert_envelope(response, 404, "ModelNotFound")


@pytest.fixture
def small_upload_client(store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=store, max_upload_bytes=4096))) as client:
        yield client


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_oversized_form_is_413(small_upload_client: TestClient, encoding: str) -> None:
    fields = {**FLOWERS, "sepal_length": "5." + "1" * 5000}

    response = post_form(small_upload_client, "flowers", fields, encoding)

    detail = assert_envelope(response, 413, "PayloadTooLarge")
    assert "4096" in detail


def test_form_under_the_upload_limit_still_works(
    small_upload_client: TestClient, store: Path
) -> None:
    response = post_form(small_upload_client, "flowers", FLOWERS, "multipart")

    served(response, store, "flowers")


# -- the HTML page ----------------------------------------------------------------------------


class FormPage(HTMLParser):
    """The parts of a page a browser uses to submit its form."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str | None]] = []
        self.controls: list[tuple[str, dict[str, str | None]]] = []
        self.options: dict[str, list[tuple[str, bool]]] = {}
        self.urls: list[str] = []
        self.links: list[dict[str, str | None]] = []
        self._select: str | None = None
        self._option: bool | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for key in ("src", "href", "action", "formaction", "poster", "data"):
            if attributes.get(key) is not None:
                self.urls.append(str(attributes[key]))
        if tag == "form":
            self.forms.append(attributes)
        elif tag == "link":
            self.links.append(attributes)
        elif tag in {"input", "select", "textarea"}:
            self.controls.append((tag, attributes))
            if tag == "select":
                self._select = str(attributes["name"])
                self.options[self._select] = []
        elif tag == "option" and self._select is not None:
            self._option = "selected" in attributes

    def handle_data(self, data: str) -> None:
        if self._option is not None and self._select is not None:
            self.options[self._select].append((data, self._option))
            self._option = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None

    def names(self) -> list[str]:
        return [str(attributes.get("name")) for _, attributes in self.controls]

    def browser_submission(self) -> list[tuple[str, str]]:
        """What a browser (or `new FormData(form)`) submits without the user touching anything:
        every named control, an empty input as "", a select as its selected (or first) option."""
        entries = []
        for tag, attributes in self.controls:
            name = str(attributes["name"])
            if tag == "select":
                options = self.options[name]
                chosen = next((text for text, selected in options if selected), options[0][0])
                entries.append((name, chosen))
            elif attributes.get("type") not in {"submit", "button", "file"}:
                entries.append((name, attributes.get("value") or ""))
        return entries


def form_page(client: TestClient, name: str) -> tuple[FormPage, str]:
    response = client.get(f"/models/{name}/form")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = FormPage()
    page.feed(response.text)
    page.close()
    return page, response.text


def card_features(client: TestClient, name: str) -> list[dict[str, Any]]:
    response = client.get(f"/models/{name}")
    assert response.status_code == 200
    features: list[dict[str, Any]] = response.json()["card"]["features"]
    return features


@pytest.mark.parametrize(
    ("name", "options"),
    [("flowers", ["top_k"]), ("pets", ["threshold"]), ("line", [])],
)
def test_form_page_has_one_control_per_feature(
    client: TestClient, name: str, options: list[str]
) -> None:
    page, _ = form_page(client, name)
    features = card_features(client, name)

    assert page.names() == [feature["name"] for feature in features] + options
    for feature in features:
        if feature["dtype"] == "category":
            assert [text for text, _ in page.options[feature["name"]]] == feature["categories"]
        else:
            tag, attributes = page.controls[page.names().index(feature["name"])]
            assert (tag, attributes["type"]) == ("input", "number")
            assert attributes["step"] == ("1" if feature["dtype"] == "int" else "any")
    assert len(page.forms) == 1
    form = page.forms[0]
    assert form["action"] == path_for(name)
    assert str(form["method"]).lower() == "post"


@pytest.mark.parametrize("name", ["flowers", "pets", "line"])
def test_form_page_loads_nothing_from_elsewhere(client: TestClient, name: str) -> None:
    page, html = form_page(client, name)

    assert page.urls == [path_for(name)]
    for url in page.urls:
        assert url.startswith("/") and not url.startswith("//"), url
    assert page.links == []
    assert re.findall(r"https?://|url\(", html, re.IGNORECASE) == []


@pytest.mark.parametrize("name", ["flowers", "pets", "line"])
def test_form_page_submitted_as_is_predicts(client: TestClient, store: Path, name: str) -> None:
    """Press "Predict" without touching a field: the page posts `new FormData(form)`
    (multipart), which includes an empty optional field as ""."""
    page, _ = form_page(client, name)
    submission = page.browser_submission()

    response = post_form(client, name, submission, "multipart")

    served(response, store, name)


def test_form_page_of_an_unknown_model_is_404(client: TestClient) -> None:
    response = client.get("/models/nope/form")

    assert_envelope(response, 404, "ModelNotFound")


# -- the OpenAPI operations -------------------------------------------------------------------


def form_operation(client: TestClient, name: str) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    operation: dict[str, Any] = response.json()["paths"][path_for(name)]["post"]
    return operation


def test_pets_form_operation_is_typed_from_the_card(client: TestClient) -> None:
    operation = form_operation(client, "pets")

    assert operation["tags"] == ["model: pets"]
    assert all(p["name"] != "model_name" for p in operation.get("parameters", []))
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/x-www-form-urlencoded", "multipart/form-data"}
    schema = content["application/x-www-form-urlencoded"]["schema"]
    assert sorted(schema["required"]) == sorted(PETS_FEATURES)
    assert schema["properties"]["colour"]["enum"] == ["black", "ginger", "white"]
    assert schema["properties"]["age"]["type"] == "integer"
    assert schema["additionalProperties"] is False
    assert "threshold" in schema["properties"]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", ["flowers", "pets", "line"])
def test_documented_form_example_works(
    client: TestClient, store: Path, encoding: str, name: str
) -> None:
    """What Swagger's "Try it out" sends: each property's example, else its default."""
    operation = form_operation(client, name)
    media = (
        "multipart/form-data" if encoding == "multipart" else "application/x-www-form-urlencoded"
    )
    properties = operation["requestBody"]["content"][media]["schema"]["properties"]
    fields = {
        key: str(spec.get("example", spec.get("default")))
        for key, spec in properties.items()
        if spec.get("example", spec.get("default")) is not None
    }
    required = operation["requestBody"]["content"][media]["schema"]["required"]
    assert set(required) <= set(fields)

    response = post_form(client, name, fields, encoding)

    served(response, store, name)

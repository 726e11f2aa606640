"""A real browser (Debian's chromium, driven by Playwright) against the real `modelport serve`.

Swagger UI, ReDoc and the HTML form pages must render and work with no internet: every request
to any host but the server's is aborted and recorded, and each test ends by asserting there was
none. Screenshots go to `$MODELPORT_SCREENSHOTS` (default /tmp/modelport-screenshots).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tests.e2e.conftest import Server

try:
    from playwright.sync_api import expect, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Route, ViewportSize

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
TIMEOUT_MS = 20_000
# ReDoc 2 asks for its footer logo from a CDN (hidden when it fails): blocked, but not counted.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
MODELS = ["breast-cancer", "diabetes", "digits", "iris", "pets"]
TAGS = ["health", "models", "v2", "predict", *(f"model: {name}" for name in MODELS)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Guard:
    """Context-wide route handler: the server's own origin passes, anything else is aborted."""

    origin: tuple[str, str]
    external: list[str] = field(default_factory=list)

    def __call__(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) == self.origin:
            route.continue_()
            return
        if url != REDOC_LOGO:
            self.external.append(url)
        route.abort()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    missing = [
        what
        for what, absent in (
            ("the playwright package (pip install '.[dev]')", not HAVE_PLAYWRIGHT),
            ("chromium (apt-get install chromium)", chromium is None),
        )
        if absent
    ]
    if missing or chromium is None:
        reason = "no real browser here; needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI installs both (.ci/run, pyproject): never skip there
        pytest.skip(reason)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A fresh context per test; at the end, no request may have left the server."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    origin = urlsplit(server.url)
    guard = Guard((origin.scheme, origin.netloc))
    context.route("**/*", guard)
    try:
        yield context.new_page()
    finally:
        context.close()
    assert guard.external == [], f"requests left the server: {guard.external}"


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("MODELPORT_SCREENSHOTS", "/tmp/modelport-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(page: Page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    path.unlink(missing_ok=True)
    page.screenshot(path=path)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (VIEWPORT["width"], VIEWPORT["height"]), path


def open_docs(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/docs")
    expect(page.locator(".opblock").first).to_be_visible()


def operation(page: Page, path: str) -> Locator:
    """Expand the Swagger UI operation on `path` and put it in "Try it out" mode."""
    block = page.locator(".opblock", has=page.locator(f".opblock-summary-path[data-path='{path}']"))
    block.locator(".opblock-summary").click()
    # The app sets tryItOutEnabled, so the toggle usually reads "Cancel" already. Operations
    # with a body may also show a "Reset" button of the same class.
    toggle = block.locator(".try-out__btn:not(.reset)")
    expect(toggle).to_have_text(re.compile(r"^(Try it out|Cancel)\s*$"))
    if toggle.inner_text().strip() == "Try it out":
        toggle.click()
        expect(toggle).to_have_text(re.compile(r"^Cancel\s*$"))
    return block


def execute(block: Locator) -> Locator:
    """Press Execute; return the live response's body, once its status cell reads 200."""
    block.locator("button.execute").click()
    response = block.locator(".live-responses-table tbody tr.response").first
    expect(response.locator(".response-col_status")).to_have_text(re.compile(r"^\s*200\b"))
    return response.locator(".response-col_description")


def test_swagger_ui_renders_every_tag(page: Page, server: Server, screenshots: Path) -> None:
    open_docs(page, server)
    assert "modelport" in page.title()
    expect(page.locator(".opblock-tag")).to_have_count(len(TAGS))
    tags = [tag.get_attribute("data-tag") for tag in page.locator(".opblock-tag").all()]
    assert tags == TAGS
    shoot(page, screenshots, "docs")


@pytest.mark.parametrize("name", MODELS)
def test_swagger_try_it_out_with_each_models_example(
    page: Page, server: Server, screenshots: Path, name: str
) -> None:
    open_docs(page, server)
    block = operation(page, f"/models/{name}/predict")
    body = execute(block)
    expect(body).to_contain_text('"predictions"')
    expect(body).to_contain_text(f'"model_name": "{name}"')
    if name == "iris":
        body.scroll_into_view_if_needed()
        shoot(page, screenshots, "docs-executed")


@pytest.mark.parametrize("name", ["breast-cancer", "pets"])
def test_swagger_explains_each_models_example(page: Page, server: Server, name: str) -> None:
    open_docs(page, server)
    body = execute(operation(page, f"/models/{name}/explain"))
    expect(body).to_contain_text('"contributions"')
    expect(body).to_contain_text('"base_value"')


def test_swagger_file_upload(page: Page, server: Server, tmp_path: Path) -> None:
    flowers = tmp_path / "flowers.csv"
    flowers.write_text(
        "petal_length,petal_width,sepal_length,sepal_width\n1.4,0.2,5.1,3.5\n5.2,2.3,6.7,3.0\n"
    )
    open_docs(page, server)
    block = operation(page, "/models/iris/predict/file")
    block.locator("input[type=file]").set_input_files(flowers)
    body = execute(block)
    expect(body).to_contain_text('"rows": 2')
    expect(body).to_contain_text('"filename": "flowers.csv"')


def test_swagger_per_model_form(page: Page, server: Server) -> None:
    open_docs(page, server)
    block = operation(page, "/models/iris/predict/form")
    body = execute(block)
    expect(body).to_contain_text('"model_name": "iris"')
    expect(body).to_contain_text(re.compile(r'"label": "(setosa|versicolor|virginica)"'))


def test_redoc_renders_every_tag(page: Page, server: Server, screenshots: Path) -> None:
    page.goto(f"{server.url}/redoc")
    # The left menu's top-level entries are the tags, in the document's order.
    expect(page.locator(".menu-content li[role=menuitem] > label.-depth1")).to_have_text(TAGS)
    expect(page.locator(".api-info h1")).to_contain_text("modelport")
    shoot(page, screenshots, "redoc")


def test_form_page_predicts_and_shows_errors(page: Page, server: Server, screenshots: Path) -> None:
    page.goto(f"{server.url}/models/iris/form")
    page.get_by_role("button", name="Predict").click()
    result = page.locator("#result")
    expect(result).to_contain_text(re.compile(r"Prediction:\s*(setosa|versicolor|virginica)"))
    expect(result).not_to_have_class("error")
    shoot(page, screenshots, "form")

    page.fill("#f-sepal_length", "-1")
    page.evaluate("document.getElementById('predict').noValidate = true")
    page.get_by_role("button", name="Predict").click()
    error = page.locator("#result.error")
    expect(error).to_contain_text("InvalidInput")
    expect(error).to_contain_text("sepal_length")


@pytest.mark.parametrize(("name", "bars"), [("iris", 4), ("breast-cancer", 8)])
def test_form_page_draws_the_answers_explanation(
    page: Page, server: Server, screenshots: Path, name: str, bars: int
) -> None:
    """After the answer, the page asks the version that gave it to explain it, and draws the
    largest contributions (all four of iris's, eight of the forest's 30) as inline SVG bars."""
    page.goto(f"{server.url}/models/{name}/form")
    page.get_by_role("button", name="Predict").click()
    why = page.locator("#result #why")
    expect(why).to_contain_text("Why: contributions to the")
    expect(why.locator("svg rect.bar")).to_have_count(bars)
    expect(why.locator("svg text").first).not_to_be_empty()
    why.scroll_into_view_if_needed()
    shoot(page, screenshots, f"form-explained-{name}")


def test_digits_form_page_reads_an_uploaded_png(page: Page, server: Server, tmp_path: Path) -> None:
    digits = load_digits()
    _, held_out = train_test_split(
        np.arange(len(digits.target)),
        test_size=0.25,
        random_state=0,
        stratify=digits.target,  # as `modelport train` splits it
    )
    pixels = digits.images[held_out[0]] * (255 / 16)  # light ink on a dark ground
    png = tmp_path / "digit.png"
    Image.fromarray(pixels.astype(np.uint8)).resize((64, 64), Image.Resampling.NEAREST).save(png)

    page.goto(f"{server.url}/models/digits/form")
    page.locator("#f-file").set_input_files(png)
    page.get_by_role("button", name="Predict").click()
    result = page.locator("#result")
    expect(result).to_contain_text(re.compile(r"Prediction:\s*\d\b"))
    shown = re.search(r"Prediction:\s*(\d)", result.inner_text())
    assert shown is not None
    # The browser's upload answers what the same file answers over plain HTTP.
    with server.client() as http, png.open("rb") as image:
        reply = http.post("/models/digits/predict/file", files={"file": ("digit.png", image)})
    assert reply.status_code == 200, reply.text
    assert int(shown.group(1)) == reply.json()["predictions"][0]["label"]

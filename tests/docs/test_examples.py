"""Every shell example in README.md and docs/*.md, run against one real `modelport serve`.

The rule for writers is in docs/architecture.md, "Examples in the docs". In short: ```console
blocks are run; `$ ` starts a command (continued while a line ends with `\\` or a quote is open),
the lines after it are its expected output; `...` elides (JSON is compared as JSON, other output
line by line); `localhost:8000` is the test server; every command must exit 0 within
COMMAND_TIMEOUT. ```sh blocks are not run, and may not call curl.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression

from tests.e2e.conftest import BIN, REPO, Server, run_cli, start_server, stop_server

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOCUMENTED_URL = "localhost:8000"
COMMAND_TIMEOUT = 30
FENCE = re.compile(r"^(\s*)```\s*(\S*)")


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    expected: str


@dataclass(frozen=True)
class Block:
    source: str  # "README.md:123", the line of the opening fence
    info: str  # the fence's language: console, sh, python, ...
    lines: list[str]


def fenced_blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text().splitlines()
    name = str(path.relative_to(REPO))
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, info, start, body = len(opening.group(1)), opening.group(2), index, []
        while index < len(lines) and not lines[index].strip().startswith("```"):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        yield Block(f"{name}:{start}", info, body)


def _quote_open(text: str) -> bool:
    try:
        shlex.split(text)
    except ValueError:
        return True
    return False


def commands(block: Block) -> list[Command]:
    """The block's `$ ` commands, each with the output written after it."""
    found: list[Command] = []
    lines, index = block.lines, 0
    first_line = int(block.source.rsplit(":", 1)[1]) + 1
    while index < len(lines):
        if not lines[index].startswith("$ "):
            raise ValueError(f"{block.source}: output before any command: {lines[index]!r}")
        line, text = first_line + index, lines[index][2:]
        index += 1
        while (text.endswith("\\") or _quote_open(text)) and index < len(lines):
            text += "\n" + lines[index]
            index += 1
        output = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        found.append(Command(line, text, "\n".join(output)))
    return found


BLOCKS = [block for path in DOCS for block in fenced_blocks(path)]
CONSOLE = [block for block in BLOCKS if block.info == "console"]


# Matching expected output --------------------------------------------------------------------

ELLIPSIS = "..."
_ANY = "\x00any"  # a value elided
_MORE = "\x00more"  # an object's further members elided
_REST = "\x00rest"  # an array's further items elided
_NUMBER = "\x00number:"  # a number with digits elided
_NUMBERISH = re.compile(r"[-+0-9.eE]+")


@dataclass(frozen=True)
class Number:
    """A number of the actual output, as the server wrote it."""

    text: str


def _wildcard(expected: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in expected.split(ELLIPSIS)), re.DOTALL)


def _template(expected: str) -> Any:
    """The expected output as JSON, its elisions turned into markers; ValueError if not JSON."""
    out: list[str] = []
    stack: list[str] = []
    last, index, in_string = "", 0, False
    while index < len(expected):
        char = expected[index]
        if in_string:
            out.append(expected[index : index + 2] if char == "\\" else char)
            index += 2 if char == "\\" else 1
            in_string = char != '"'
            last = '"'
            continue
        token = _NUMBERISH.match(expected, index) if char in "-.0123456789" else None
        if token is not None and ELLIPSIS in token.group():
            if token.group() != ELLIPSIS:
                out.append(json.dumps(_NUMBER + token.group()))
            elif stack[-1:] == ["{"] and last in "{,":
                out.append(json.dumps(_MORE) + ":null")
            elif stack[-1:] == ["["]:
                out.append(json.dumps(_REST))
            else:
                out.append(json.dumps(_ANY))
            index, last = token.end(), "0"
            continue
        if char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
        in_string = char == '"'
        if not char.isspace():
            last = char
        out.append(char)
        index += 1
    return json.loads("".join(out))


def _match(template: Any, actual: Any) -> bool:
    if isinstance(template, str):
        if template == _ANY:
            return True
        if template.startswith(_NUMBER):
            pattern = _wildcard(template.removeprefix(_NUMBER))
            return isinstance(actual, Number) and pattern.fullmatch(actual.text) is not None
        if ELLIPSIS in template:
            return isinstance(actual, str) and _wildcard(template).fullmatch(actual) is not None
        return isinstance(actual, str) and template == actual
    if template is None or isinstance(template, bool):
        return actual is template
    if isinstance(template, int | float):
        return isinstance(actual, Number) and float(actual.text) == template
    if isinstance(template, dict):
        if not isinstance(actual, dict):
            return False
        keys = template.keys() - {_MORE}
        if not (keys <= actual.keys() if _MORE in template else keys == actual.keys()):
            return False
        return all(_match(template[key], actual[key]) for key in keys)
    return isinstance(actual, list) and _match_items(template, actual)


def _match_items(template: list[Any], actual: list[Any]) -> bool:
    if not template:
        return not actual
    if template[0] == _REST:
        return any(_match_items(template[1:], actual[skip:]) for skip in range(len(actual) + 1))
    return (
        bool(actual) and _match(template[0], actual[0]) and _match_items(template[1:], actual[1:])
    )


def matches(expected: str, actual: str) -> bool:
    try:
        template = _template(expected)
        parsed = json.loads(actual, parse_float=Number, parse_int=Number)
    except ValueError:
        return _lines(expected).fullmatch(_normal(actual)) is not None
    return _match(template, parsed)


def _normal(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").strip("\n").split("\n")]
    return "".join(f"{line}\n" for line in lines if line or len(lines) > 1)


def _lines(expected: str) -> re.Pattern[str]:
    """A line `...` stands for any number of lines; `...` within a line for any text in it."""
    pattern = ""
    for line in _normal(expected).splitlines():
        if line.strip() == ELLIPSIS:
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += "[^\n]*?".join(re.escape(part) for part in line.split(ELLIPSIS)) + "\n"
    return re.compile(pattern)


# The server and the working directory --------------------------------------------------------


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `modelport serve` with the bundled examples, as `make serve` runs it."""
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the documented examples need curl; CI must install it")
        pytest.skip("the documented examples need curl")
    store = tmp_path_factory.mktemp("docs") / "models"
    trained = run_cli("train", "--model-dir", str(store))
    assert trained.returncode == 0, trained.stderr
    server = start_server(store, store.parent / "serve.log")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the examples name: a picture of a handwritten 7, a fitted estimator and the
    table it was fitted on."""
    files = tmp_path_factory.mktemp("files")
    digits = load_digits()
    seven = digits.images[list(digits.target).index(7)]
    ink = (255 - seven / 16 * 255).astype(np.uint8)  # dark ink on light paper, like a scan
    Image.fromarray(ink).resize((64, 64), Image.Resampling.NEAREST).save(files / "digit.png")
    iris = load_iris(as_frame=True)
    frame = iris.data.set_axis(
        ["sepal_length", "sepal_width", "petal_length", "petal_width"], axis="columns"
    )
    target = iris.target.map(dict(enumerate(iris.target_names)))
    joblib.dump(LogisticRegression(max_iter=1000).fit(frame, target), files / "model.joblib")
    frame.assign(species=target).to_csv(files / "iris.csv", index=False)
    return files


def run(command: Command, server: Server, cwd: Path) -> subprocess.CompletedProcess[str]:
    text = command.text.replace(DOCUMENTED_URL, server.url.removeprefix("http://"))
    text = text.replace("127.0.0.1:8000", server.url.removeprefix("http://"))
    assert "localhost" not in text and ":8000" not in text, (
        f"{command.text!r} escapes the test server"
    )
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(cwd),
        "LC_ALL": "C.UTF-8",
    }
    if "PYTHONPATH" in os.environ:  # the same code as the server runs
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    # A session of its own, so a timeout kills the whole pipeline, not just bash.
    with subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", text],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"{text}\ntimed out after {COMMAND_TIMEOUT} s", pytrace=False)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


# The tests -----------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("block", CONSOLE, ids=[block.source for block in CONSOLE])
def test_example(block: Block, docs_server: Server, example_files: Path, tmp_path: Path) -> None:
    shutil.copytree(example_files, tmp_path, dirs_exist_ok=True)
    for command in commands(block):
        done = run(command, docs_server, tmp_path)
        where = f"{block.source.rsplit(':', 1)[0]}:{command.line}: $ {command.text}"
        if done.returncode != 0:
            pytest.fail(f"{where}\nexit {done.returncode}\n{done.stderr}", pytrace=False)
        if not matches(command.expected, done.stdout):
            shown = f"--- documented\n{command.expected}\n--- actual\n{done.stdout}{done.stderr}"
            pytest.fail(f"{where}\n{shown}", pytrace=False)


# curl as a command of its own (not the end of another name, such as grpcurl).
CURL = re.compile(r"(?<![\w-])curl ")


def test_curl_examples_run() -> None:
    """Every fenced block that calls curl is a console block, so the test above runs it."""
    unrun = [
        block.source
        for block in BLOCKS
        if block.info != "console" and CURL.search("\n".join(block.lines))
    ]
    assert unrun == []
    assert len(CONSOLE) >= 6


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        ('{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}', True),
        ('{"a": 1}', '{"a":1,"b":2}', False),
        ('{"a": 1, ...}', '{"a":1,"b":2}', True),
        ('{"p": 0.97...}', '{"p":0.9768556495240629}', True),
        ('{"p": 0.97...}', '{"p":0.0231}', False),
        ('{"p": ...}', '{"p":{"x":[1]}}', True),
        ("[1, ...]", "[1,2,3]", True),
        ("[1, ...]", "[2,3]", False),
        ('{"s": "abc..."}', '{"s":"abcdef"}', True),
        ('{"v": 1}', '{"v":"1"}', False),
        ("a: ...\nb: 2", "a: 1\nb: 2\n", True),
        ("a: ...\nb: 2", "a: 1\nb: 3\n", False),
        ("a: ...", "a: 1\nb: 2\n", False),
        ("HTTP/1.1 422 ...\n...\n{}", "HTTP/1.1 422 X\r\ndate: now\r\n\r\n{}", True),
        ("", "", True),
        ("", "a\n", False),
    ],
)
def test_matching(expected: str, actual: str, same: bool) -> None:
    assert matches(expected, actual) is same

"""schemathesis over the whole OpenAPI document of a real `modelport serve`, with every check.

Every operation in /openapi.json is fuzzed: health, the catalogue, each model's typed
operations on every surface (JSON, pinned version, file, form, v2 infer) and the v2 metadata
routes, with `--checks all` (server errors, status codes, content types, response schemas and
headers, positive and negative data, missing headers, unsupported methods, ignored auth...).
The only settings are in tests/e2e/schemathesis.toml, each with its reason.

- A fixed seed, every phase: the document's examples, the coverage phase's boundary values,
  MAX_EXAMPLES random cases per operation, stateful sequences.
- A random seed, printed (and named in a failure): random cases and stateful sequences, the
  phases that depend on the seed. Replay it with `MODELPORT_FUZZ_SEED=<seed>`; size it with
  `MODELPORT_FUZZ_EXAMPLES` (default RANDOM_EXAMPLES, to keep CI's budget).
- A server with an API key: the examples and some random cases, sent with the key, and the
  `ignored_auth` check re-sending them without it (every prediction operation must say 401).

Neither server lets the fuzz unload a model from under the other operations: repository writes
are off with no key (the default, 403), and turned off on the keyed server, where the key alone
would allow them (`MODELPORT_REPOSITORY_WRITES=false`: 403 with the key, 401 without).

A failure's report (curl commands reproducing each case) is the test's failure message; the
whole output is kept in the test's temporary directory. One schemathesis worker: several
threads parse Python source concurrently in hypothesis, which Python 3.11's `ast` does not
survive ("AST constructor recursion depth mismatch", CPython gh-106905).
"""

import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, REPO, SUMMARY, Server, start_server, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

CONFIG = Path(__file__).with_name("schemathesis.toml")
FIXED_SEED = 1
MAX_EXAMPLES = 100
RANDOM_EXAMPLES = 50
API_KEY = "fuzz-key-7f3a"
RUN_TIMEOUT = 840  # seconds; a pathological slowdown fails instead of stalling CI


@pytest.fixture(scope="module")
def fuzzed(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: thousands of requests, and nobody else's metrics or logs to mix."""
    running = start_server(
        trained_store, tmp_path_factory.mktemp("fuzz") / "serve.log", log_level="warning"
    )
    yield running
    stop_server(running)


def _operation_count(server: Server) -> int:
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    return sum(len(item) for item in document["paths"].values())


def _summary(output: str, name: str) -> str:
    found = re.search(rf"^\s*{name}:\s*(.+)$", output, re.MULTILINE)
    return found.group(1).strip() if found else "?"


def _report(output: str, line_chars: int = 400, head_chars: int = 24000) -> str:
    """The failures section and summary, readable: the curl command of a 10,000-row body is one
    line of megabytes, so long lines are cut, and the middle of a long report is left out."""
    start = output.rfind("\n", 0, max(output.find("= FAILURES ="), 0)) + 1
    lines = output[start:].splitlines()
    text = "\n".join(
        line if len(line) <= line_chars else f"{line[:line_chars]} … ({len(line)} characters)"
        for line in lines
    )
    if len(text) <= head_chars + 6000:
        return text
    return f"{text[:head_chars]}\n…\n{text[-6000:]}"


def _fuzz(
    server: Server,
    out: Path,
    record: Callable[[str, object], None],
    *,
    label: str,
    seed: int,
    phases: list[str],
    examples: int,
    extra: tuple[str, ...] = (),
    replay: str = "",
) -> None:
    """One schemathesis run with every check; fails with its report unless it is clean and
    tested every operation of the document in every phase asked for."""
    command = [
        str(BIN / "schemathesis"),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        ",".join(phases),
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--generation-database",
        "none",  # nothing saved from earlier runs: the seed alone decides a run
        "--report",
        "junit",
        "--report-dir",
        str(out),
        *extra,
    ]
    started = time.monotonic()
    # In the test's own directory (nothing left in the checkout), with the repository on the
    # path so the config's hooks module (tests.e2e.fuzz_hooks) imports.
    result = subprocess.run(
        command,
        cwd=out,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    (out / "schemathesis.txt").write_text(output)
    record(
        SUMMARY,
        f"schemathesis ({label}, seed {seed}, {examples} examples, {'+'.join(phases)}): "
        f"{_summary(output, 'Test cases')} in {seconds:.0f} s, exit {result.returncode}",
    )
    if result.returncode != 0:
        pytest.fail(
            f"schemathesis ({label}, seed {seed}{replay}) exited {result.returncode}; "
            f"whole output in {out / 'schemathesis.txt'}\n{_report(output)}",
            pytrace=False,
        )
    operations = _operation_count(server)
    assert _summary(output, "Selected") == f"{operations}/{operations}", output[-3000:]
    assert _summary(output, "Tested") == str(operations), output[-3000:]
    for phase in phases:
        assert re.search(rf"^\s*✅ {phase}\b", output, re.MULTILINE | re.IGNORECASE), (
            f"phase {phase} did not pass: {output[-3000:]}"
        )


def test_fixed_seed_every_phase(
    fuzzed: Server, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    _fuzz(
        fuzzed,
        tmp_path,
        record_property,
        label="fixed seed",
        seed=FIXED_SEED,
        phases=["examples", "coverage", "fuzzing", "stateful"],
        examples=MAX_EXAMPLES,
    )


def test_random_seed(
    fuzzed: Server, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    seed = int(os.environ.get("MODELPORT_FUZZ_SEED") or secrets.randbelow(2**32))
    examples = int(os.environ.get("MODELPORT_FUZZ_EXAMPLES") or RANDOM_EXAMPLES)
    _fuzz(
        fuzzed,
        tmp_path,
        record_property,
        label="random seed",
        seed=seed,
        phases=["fuzzing", "stateful"],
        examples=examples,
        replay=f"; replay: MODELPORT_FUZZ_SEED={seed} MODELPORT_FUZZ_EXAMPLES={examples} "
        "pytest tests/e2e/test_fuzz.py -k random",
    )


def test_with_an_api_key(
    trained_store: Path, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    keyed = start_server(
        trained_store,
        tmp_path / "serve.log",
        log_level="warning",
        api_key=API_KEY,
        repository_writes="false",
    )
    try:
        _fuzz(
            keyed,
            tmp_path,
            record_property,
            label="API key",
            seed=FIXED_SEED,
            phases=["examples", "fuzzing"],
            examples=5,
            extra=("--header", f"X-API-Key: {API_KEY}"),
        )
    finally:
        stop_server(keyed)

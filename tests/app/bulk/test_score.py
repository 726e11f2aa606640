"""`modelport score` in-process: CSV, NDJSON and Parquet in, every row answered in order as the
stream route answers it, bad rows in place, and `--resume` after a run was killed (SIGKILL, mid
write) giving exactly the straight run's output: no row twice, none missing."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.ensemble import RandomForestClassifier

from app.cli import main
from tests.conftest import FLOWER_FEATURES, build_store, flower_data, flower_features, write_model

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test store plus a forest, whose answers do not depend on how rows are batched."""
    store = build_store(tmp_path_factory.mktemp("store") / "models")
    x, y = flower_data()
    write_model(
        store,
        RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y),
        name="forest",
        task="classification",
        features=flower_features(),
        classes=["setosa", "versicolor", "virginica"],
    )
    return store


def rows(count: int, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).uniform(0.1, 8, size=(count, 4)).round(3)


def write_csv(
    path: Path, values: np.ndarray[Any, Any], extra: dict[int, str] | None = None
) -> Path:
    lines = [",".join(map(repr, row)) for row in values.tolist()]
    for index, text in (extra or {}).items():
        lines[index] = text
    path.write_text(",".join(FLOWER_FEATURES) + "\n" + "\n".join(lines) + "\n")
    return path


def score(store: Path, *args: str) -> int:
    return main(["score", *args, "--model-dir", str(store)])


def test_csv_in_csv_out_in_order(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = rows(20_000)
    source = write_csv(tmp_path / "in.csv", values, {5_000: "1,2,x,4"})
    out = tmp_path / "out.csv"
    assert score(store, str(source), "--model", "forest", "--output", str(out)) == 1
    records = list(csv.reader(io.StringIO(out.read_text())))
    assert records[0][-1] == "error" and len(records) == 1 + 20_000  # no summary in the file
    import joblib

    forest = joblib.load(store / "forest" / "1" / "model.joblib")
    expected = forest.predict(values).tolist()
    got = [record[4] for record in records[1:]]
    assert got[:5_000] == expected[:5_000] and got[5_001:] == expected[5_001:]
    assert json.loads(records[5_001][-1])["line"] == 5_002
    reported = capsys.readouterr().err
    assert "20,000 rows with forest v1, 1 errors in this run, complete" in reported


def test_ndjson_and_parquet_in(store: Path, tmp_path: Path) -> None:
    values = rows(3_000, seed=1)
    ndjson = tmp_path / "in.ndjson"
    ndjson.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in values.tolist()))
    parquet = tmp_path / "in.parquet"
    table = pa.table({name: values[:, i] for i, name in enumerate(FLOWER_FEATURES)})
    pq.write_table(table, parquet, row_group_size=1_000)
    out_ndjson, out_parquet, out_csv = tmp_path / "a.ndjson", tmp_path / "b.csv", tmp_path / "c.csv"
    assert score(store, str(ndjson), "--model", "forest", "--output", str(out_ndjson)) == 0
    assert score(store, str(parquet), "--model", "forest", "--output", str(out_parquet)) == 0
    assert (
        score(
            store,
            str(write_csv(tmp_path / "in.csv", values)),
            "--model",
            "forest",
            "--output",
            str(out_csv),
        )
        == 0
    )
    labels = [json.loads(line)["label"] for line in out_ndjson.read_text().splitlines()]
    from_csv = list(csv.reader(io.StringIO(out_csv.read_text())))
    # Parquet is sent as CSV, written by pyarrow ("5" where repr writes "5.0", but floats that
    # read back exactly): the same rows, the same answers.
    from_parquet = list(csv.reader(io.StringIO(out_parquet.read_text())))
    assert from_parquet[0] == from_csv[0]
    for ours, theirs in zip(from_parquet[1:], from_csv[1:], strict=True):
        assert [float(cell) for cell in ours[:4]] == [float(cell) for cell in theirs[:4]]
        assert ours[4:] == theirs[4:]
    assert [record[4] for record in from_csv[1:]] == labels


def test_the_output_format_follows_its_suffix_and_abort_stops(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", rows(100), {40: "x,1,1,1"})
    out = tmp_path / "out.jsonl"
    assert (
        score(store, str(source), "--model", "forest", "--output", str(out), "--on-error", "abort")
        == 1
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 41 and json.loads(lines[-1])["line"] == 42
    assert "stopped early" in capsys.readouterr().err


def test_what_cannot_start_is_reported_with_status_2(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("a,b\n1,2\n")
    assert score(store, str(source), "--model", "forest") == 2
    assert "InvalidInput" in capsys.readouterr().err
    assert score(store, str(tmp_path / "missing.csv"), "--model", "forest") == 2
    assert score(store, str(source), "--model", "nope") == 2
    assert "ModelNotFound" in capsys.readouterr().err
    assert main(["score", str(source), "--model", "line", "--resume"]) == 2


@pytest.mark.parametrize("suffix", [".csv", ".ndjson", ".parquet"])
def test_resume_after_a_cut_mid_line_adds_exactly_the_missing_rows(
    store: Path, tmp_path: Path, suffix: str
) -> None:
    values = rows(5_000, seed=4)
    if suffix == ".csv":
        source = write_csv(tmp_path / "in.csv", values, {1_000: "", 3_000: "1,x,1,1"})
    elif suffix == ".ndjson":
        source = tmp_path / "in.ndjson"
        lines = [orjson.dumps(row) for row in values.tolist()]
        lines[3_000] = b"[1, 2]"
        source.write_bytes(b"\n".join(lines) + b"\n")
    else:
        source = tmp_path / "in.parquet"
        pq.write_table(
            pa.table({name: values[:, i] for i, name in enumerate(FLOWER_FEATURES)}), source
        )
    straight = tmp_path / f"straight{suffix}.out"
    score(store, str(source), "--model", "forest", "--output", str(straight))
    whole = straight.read_bytes()
    for cut in (len(whole) // 3, len(whole) // 3 + 7, whole.index(b"\n") + 1, len(whole)):
        resumed = tmp_path / f"resumed{suffix}.out"
        resumed.write_bytes(whole[:cut])
        score(store, str(source), "--model", "forest", "--output", str(resumed), "--resume")
        assert resumed.read_bytes() == whole, cut


def test_resume_after_sigkill_matches_a_straight_run(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI, a process of its own, is killed (SIGKILL, by PID) while it writes; `--resume`
    then ends with the straight run's output, byte for byte."""
    source = write_csv(tmp_path / "in.csv", rows(100_000, seed=5), {90_000: "1,2,3"})
    straight, killed = tmp_path / "straight.csv", tmp_path / "killed.csv"
    assert score(store, str(source), "--model", "forest", "--output", str(straight)) == 1
    size = straight.stat().st_size
    command = [str(BIN / "modelport"), "score", str(source), "--model", "forest",
               "--model-dir", str(store), "--output", str(killed)]  # fmt: skip
    process = subprocess.Popen(
        command, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if killed.is_file() and killed.stat().st_size > size // 10:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert 0 < killed.stat().st_size < size
    capsys.readouterr()
    resumed = score(store, str(source), "--model", "forest", "--output", str(killed), "--resume")
    assert resumed == 1  # the bad row, after the cut
    assert "from before" in capsys.readouterr().err
    assert killed.read_bytes() == straight.read_bytes()

"""The payload log's queue and writer: sampling, records, a full queue dropping and counting
while the sink is stuck (never blocking the caller), a failing sink counted."""

import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY
from sklearn.linear_model import LogisticRegression

from app.config import Settings
from app.serving.model import LoadedModel, run
from app.serving.payload_log import REQUEST_ID, PayloadLog, dump, payload_log_from, record_of
from app.serving.payload_log.sinks import CloudEventsSink, FileSink, Record
from app.serving.registry import load_version
from tests.conftest import flower_data, flower_features, write_model


@pytest.fixture(scope="module")
def flowers(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    store = tmp_path_factory.mktemp("payload") / "models"
    x, y = flower_data()
    estimator = LogisticRegression(max_iter=1000).fit(x, y)
    classes = ["setosa", "versicolor", "virginica"]
    write_model(
        store,
        estimator,
        name="flowers",
        task="classification",
        features=flower_features(),
        classes=classes,
    )
    return load_version(
        store / "flowers" / "1", name="flowers", version=1, max_rows=100, trusted_types=[]
    )


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class StuckSink:
    """A sink that takes its first batch and then hangs until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.received: list[Record] = []

    def write(self, records: list[Record]) -> int:
        self.entered.set()
        self.release.wait(timeout=30)
        self.received += records
        return len(records)

    def close(self) -> None:
        pass


def test_a_record_holds_request_id_model_version_time_inputs_and_outputs(
    flowers: LoadedModel,
) -> None:
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    output = run(flowers, rows, observe=False)
    assert output.probabilities is not None
    record = orjson.loads(dump(record_of("abc-1", 1_700_000_000.25, flowers, rows, output)))
    assert record == {
        "request_id": "abc-1",
        "time": "2023-11-14T22:13:20.250+00:00",
        "model": "flowers",
        "version": 1,
        "inputs": rows.tolist(),
        "outputs": [
            {"label": label, "probabilities": dict(zip(flowers.class_keys, p, strict=True))}
            for label, p in zip(
                output.predictions.tolist(), output.probabilities.tolist(), strict=True
            )
        ],
    }
    # Rows of mixed types (a model with category features) and views of matrices go in too.
    mixed = orjson.loads(dump(record_of(None, 0.0, flowers, [("a", 1.5, 2)], output)))
    assert mixed["inputs"] == [["a", 1.5, 2]] and mixed["request_id"] is None
    assert orjson.loads(dump({"x": rows.T}))["x"] == rows.T.tolist()


def test_sampling_keeps_about_the_rate(flowers: LoadedModel, tmp_path: Path) -> None:
    sink = StuckSink()
    sink.release.set()
    log = PayloadLog(sink, rate=0.3, capacity=10_000, flush_interval=3600)
    output = run(flowers, np.array([[5.1, 3.5, 1.4, 0.2]]), observe=False)
    for _ in range(2000):
        log.offer(flowers, np.array([[5.1, 3.5, 1.4, 0.2]]), output)
    log.close()
    assert 450 < len(sink.received) < 750  # 600 expected; outside this, p < 1e-9


def test_rate_zero_builds_no_payload_log() -> None:
    assert payload_log_from(Settings(payload_log_rate=0, payload_log_path=Path("x"))) is None
    with pytest.raises(ValueError, match="MODELPORT_PAYLOAD_LOG_PATH or MODELPORT_PAYLOAD_LOG_URL"):
        Settings(payload_log_rate=0.5)
    with pytest.raises(ValueError, match="not both"):
        Settings(payload_log_path=Path("x"), payload_log_url="http://127.0.0.1:9/")


def test_a_full_queue_drops_and_counts_and_never_blocks(flowers: LoadedModel) -> None:
    sink = StuckSink()
    log = PayloadLog(sink, rate=1.0, capacity=3, flush_interval=0.01)
    rows = np.array([[5.1, 3.5, 1.4, 0.2]])
    output = run(flowers, rows, observe=False)
    dropped = counted("modelport_payload_log_dropped_total", reason="queue_full")
    written = counted("modelport_payload_log_records_total")
    token = REQUEST_ID.set("first")
    log.offer(flowers, rows, output)
    assert sink.entered.wait(timeout=30)  # the writer holds the first record, stuck in the sink
    for index in range(10):  # three fit in the queue; seven are dropped, none waited for
        REQUEST_ID.set(f"later-{index}")
        log.offer(flowers, rows, output)
    REQUEST_ID.reset(token)
    assert counted("modelport_payload_log_dropped_total", reason="queue_full") == dropped + 7
    sink.release.set()
    log.close()
    assert [r["request_id"] for r in sink.received] == ["first", "later-0", "later-1", "later-2"]
    assert counted("modelport_payload_log_records_total") == written + 4


def test_a_failing_sink_drops_and_counts(flowers: LoadedModel) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = CloudEventsSink(f"http://127.0.0.1:{port}/events", batch=2, dump=dump)
    log = PayloadLog(sink, rate=1.0, capacity=100, flush_interval=3600)
    rows = np.array([[5.1, 3.5, 1.4, 0.2]])
    output = run(flowers, rows, observe=False)
    before = counted("modelport_payload_log_dropped_total", reason="sink_error")
    for _ in range(3):
        log.offer(flowers, rows, output)
    log.close()
    assert counted("modelport_payload_log_dropped_total", reason="sink_error") == before + 3


def test_a_closed_log_starts_again_on_the_next_record(flowers: LoadedModel, tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "log.jsonl", max_bytes=1 << 20, backups=1, dump=dump)
    log = PayloadLog(sink, rate=1.0, capacity=100, flush_interval=0.01)
    rows = np.array([[5.1, 3.5, 1.4, 0.2]])
    output = run(flowers, rows, observe=False)
    log.offer(flowers, rows, output)
    log.close()  # an app's lifespan ends (TestClient), and a new one begins
    log.offer(flowers, rows, output)
    log.close()
    lines: list[Any] = (tmp_path / "log.jsonl").read_bytes().splitlines()
    assert len(lines) == 2

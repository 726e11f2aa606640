"""10,000-row requests to breast-cancer, timed beside in-process `predict` on the same rows.

The rows are the real breast-cancer data resampled to 10,000, sent as a client would: JSON
arrays, JSON records keyed by the card's feature names, and a CSV file upload. Each repetition
times every item once, in the same order, so the ratios are taken repetition by repetition.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer

from benchmarks.servers import RunningServer, wait_idle
from benchmarks.stats import Spread, TargetCheck, paired_ratios
from benchmarks.targets import BULK_TARGETS

logger = logging.getLogger("benchmarks")

MODEL = "breast-cancer"
ROWS = 10_000


@dataclass(frozen=True)
class BulkTiming:
    key: str
    label: str
    seconds: list[float]
    milliseconds: Spread
    ratio_to_predict: Spread  # this item's time over in-process predict's, repetition by repetition
    failures: int  # non-200 answers or answers without one prediction per row
    target: TargetCheck | None
    body_bytes: int


@dataclass(frozen=True)
class BulkResult:
    model: str
    rows: int
    repeats: int
    timings: list[BulkTiming]


# A timed call returns an untimed check of its answer: True when it is right.
Check = Callable[[], bool]


@dataclass(frozen=True)
class _Item:
    key: str
    label: str
    run: Callable[[], Check]
    body_bytes: int = 0
    target: tuple[float, str] | None = None  # (bound, description) on the ratio to predict


def resampled_rows(rows: int = ROWS, seed: int = 0) -> np.ndarray[Any, np.dtype[np.float64]]:
    data: np.ndarray[Any, np.dtype[np.float64]] = load_breast_cancer().data
    picks = np.random.default_rng(seed).integers(0, len(data), size=rows)
    return data[picks]


def _feature_names(store: Path) -> list[str]:
    card = json.loads((store / MODEL / "1" / "card.json").read_text())
    return [feature["name"] for feature in card["features"]]


def _csv_multipart(names: Sequence[str], rows: list[list[float]]) -> tuple[bytes, str]:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(rows)
    # Built once, by hand, so each timed request costs the client only the send.
    boundary = f"modelport-bench-{uuid.uuid4().hex}"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="rows.csv"\r\n'
            f"Content-Type: text/csv\r\n\r\n"
        ).encode()
        + text.getvalue().encode()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _counts_rows(reply: Any, key: str) -> bool:
    return isinstance(reply, dict) and isinstance(reply.get(key), list) and len(reply[key]) == ROWS


def _poster(
    client: httpx.Client, url: str, body: bytes, content_type: str, answer_key: str
) -> Callable[[], Check]:
    headers = {"Content-Type": content_type}

    def post() -> Check:
        # Timed until the last byte of the reply has arrived; parsing it is the client's cost.
        response = client.post(url, content=body, headers=headers)
        return lambda: response.status_code == 200 and _counts_rows(response.json(), answer_key)

    return post


def run_bulk(
    store: Path, servers: Mapping[str, RunningServer], *, repeats: int, client: httpx.Client
) -> BulkResult:
    """`servers` by configuration key: modelport is required; naive and flask, when present,
    are timed on the JSON-array request for context."""
    matrix = resampled_rows()
    rows = matrix.tolist()
    names = _feature_names(store)
    estimator = joblib.load(store / MODEL / "1" / "model.joblib")
    arrays_body = json.dumps({"instances": rows}).encode()
    records_body = json.dumps(
        {"instances": [dict(zip(names, row, strict=True)) for row in rows]}
    ).encode()
    csv_body, csv_type = _csv_multipart(names, rows)

    def in_process(*calls: Callable[[Any], Any]) -> Callable[[], Check]:
        def run() -> Check:
            answers = [call(matrix) for call in calls]
            return lambda: all(len(answer) == ROWS for answer in answers)

        return run

    modelport = servers["modelport"].url
    items = [
        _Item("predict", "in-process predict(X)", in_process(estimator.predict)),
        _Item("predict_proba", "in-process predict_proba(X)", in_process(estimator.predict_proba)),
        _Item(
            "predict_both",
            "in-process predict + predict_proba",
            in_process(estimator.predict, estimator.predict_proba),
        ),
        _Item(
            "modelport_json",
            "modelport: JSON, array rows",
            _poster(client, f"{modelport}/models/{MODEL}/predict", arrays_body, "application/json", "predictions"),
            len(arrays_body),
            BULK_TARGETS["modelport_json"],
        ),
        _Item(
            "modelport_records",
            "modelport: JSON, record rows",
            _poster(client, f"{modelport}/models/{MODEL}/predict", records_body, "application/json", "predictions"),
            len(records_body),
        ),
        _Item(
            "modelport_csv",
            "modelport: CSV upload",
            _poster(client, f"{modelport}/models/{MODEL}/predict/file", csv_body, csv_type, "predictions"),
            len(csv_body),
            BULK_TARGETS["modelport_csv"],
        ),
    ]  # fmt: skip
    for key, label in (("naive", "naive FastAPI port"), ("flask", "Flask prototype")):
        if key in servers:
            url = f"{servers[key].url}/models/{MODEL}/predict"
            items.append(
                _Item(
                    f"{key}_json",
                    f"{label}: JSON, array rows",
                    _poster(client, url, arrays_body, "application/json", "predictions"),
                    len(arrays_body),
                )
            )

    wait_idle(list(servers.values()))  # whatever ran before has drained
    # One untimed pass warms every path (and connection) first.
    for item in items:
        if not item.run()():
            logger.warning("bulk warm-up: %s answered wrongly", item.label)
    seconds: dict[str, list[float]] = {item.key: [] for item in items}
    failures = dict.fromkeys(seconds, 0)
    for repeat in range(1, repeats + 1):
        for item in items:
            started = time.perf_counter()
            check = item.run()
            seconds[item.key].append(time.perf_counter() - started)
            failures[item.key] += 0 if check() else 1
        logger.info(
            "bulk repetition %d/%d: %s",
            repeat,
            repeats,
            ", ".join(f"{key} {times[-1] * 1000:.0f} ms" for key, times in seconds.items()),
        )
    timings = []
    for item in items:
        ratio = paired_ratios(seconds[item.key], seconds["predict"])
        assert ratio is not None  # in-process predict always takes some time
        target = None
        if item.target is not None:
            bound, description = item.target
            target = TargetCheck(description, ratio.median, bound, "at_most")
        timings.append(
            BulkTiming(
                key=item.key,
                label=item.label,
                seconds=seconds[item.key],
                milliseconds=Spread.of([s * 1000 for s in seconds[item.key]]),
                ratio_to_predict=ratio,
                failures=failures[item.key],
                target=target,
                body_bytes=item.body_bytes,
            )
        )
    return BulkResult(model=MODEL, rows=ROWS, repeats=repeats, timings=timings)

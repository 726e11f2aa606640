"""The payload log's sinks: the rotated file (several processes writing one file at once) and
CloudEvents POSTed to a real HTTP server on the loopback."""

import multiprocessing
from pathlib import Path
from typing import Any

import orjson

from app.serving.payload_log import dump
from app.serving.payload_log.sinks import CLOUDEVENT_TYPE, CloudEventsSink, FileSink


def record(writer: int, number: int) -> dict[str, Any]:
    return {
        "model": "m",
        "version": 1,
        "time": "2026-01-01T00:00:00.000+00:00",
        "writer": writer,
        "number": number,
        "pad": "x" * 40,
    }


def lines_of(path: Path) -> list[dict[str, Any]]:
    """Every record in the file and its rotated copies, oldest first."""
    files = sorted(path.parent.glob(f"{path.name}.*[0-9]"), key=lambda p: -int(p.suffix[1:]))
    return [
        orjson.loads(line) for file in [*files, path] for line in file.read_bytes().splitlines()
    ]


def test_the_file_rotates_past_its_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    sink = FileSink(path, max_bytes=1024, backups=2, dump=dump)
    for number in range(0, 60, 3):  # three records at a time: rotation happens between lines
        assert sink.write([record(0, n) for n in range(number, number + 3)]) == 3
    sink.close()
    assert sorted(p.name for p in tmp_path.glob("payloads.jsonl*")) == [
        "payloads.jsonl",
        "payloads.jsonl.1",
        "payloads.jsonl.2",
        "payloads.jsonl.lock",
    ]
    for file in (path, Path(f"{path}.1"), Path(f"{path}.2")):
        assert 0 < file.stat().st_size <= 1024
    kept = [line["number"] for line in lines_of(path)]
    assert kept == list(range(60 - len(kept), 60))  # the newest, in order, none torn


def test_without_backups_the_file_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    sink = FileSink(path, max_bytes=1024, backups=0, dump=dump)
    for number in range(30):
        sink.write([record(0, number)])
    sink.close()
    assert not Path(f"{path}.1").exists()
    assert [line["number"] for line in lines_of(path)][-1] == 29


def write_many(path: str, writer: int, count: int) -> None:
    sink = FileSink(Path(path), max_bytes=4096, backups=100, dump=dump)
    number = 0
    while number < count:  # batches of 1 to 4 lines, as the writer thread's passes give
        batch = [record(writer, n) for n in range(number, min(count, number + 1 + number % 4))]
        sink.write(batch)
        number += len(batch)
    sink.close()


def test_workers_share_one_file_without_losing_or_tearing_a_line(tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    # Forked, as gunicorn forks its workers (and a spawned interpreter would import the app).
    fork = multiprocessing.get_context("fork")
    writers = [fork.Process(target=write_many, args=(str(path), w, 400)) for w in range(3)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    found = lines_of(path)  # every line parses: no two workers' lines interleaved
    for writer in range(3):
        assert [r["number"] for r in found if r["writer"] == writer] == list(range(400))
    for file in [path, *path.parent.glob("payloads.jsonl.*[0-9]")]:
        assert file.stat().st_size <= 4096


def test_cloudevents_are_posted_in_batches(cloudevents_sink: tuple[str, list[Any]]) -> None:
    url, received = cloudevents_sink
    sink = CloudEventsSink(url, batch=2, dump=dump)
    assert sink.write([record(0, n) for n in range(5)]) == 5
    sink.close()
    assert [media for media, _ in received] == ["application/cloudevents-batch+json"] * 3
    events = [event for _, batch in received for event in batch]
    assert [event["data"]["number"] for event in events] == list(range(5))
    for event in events:
        assert event["specversion"] == "1.0"
        assert event["type"] == CLOUDEVENT_TYPE
        assert event["source"] == "/models/m/versions/1"
        assert event["time"] == "2026-01-01T00:00:00.000+00:00"
        assert event["datacontenttype"] == "application/json"
    assert len({event["id"] for event in events}) == 5


def test_one_event_per_post_in_structured_mode(cloudevents_sink: tuple[str, list[Any]]) -> None:
    url, received = cloudevents_sink
    sink = CloudEventsSink(url, batch=1, dump=dump)
    assert sink.write([record(0, 0), record(0, 1)]) == 2
    sink.close()
    assert [media for media, _ in received] == ["application/cloudevents+json"] * 2
    assert [body["data"]["number"] for _, body in received] == [0, 1]

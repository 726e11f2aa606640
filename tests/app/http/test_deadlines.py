"""The X-Request-Timeout header into a Deadline (app.http.deadlines): parsing, the default and the
cap, and where the deadline counts from."""

import time
from typing import Any

import pytest

from app.config import Settings
from app.errors import InvalidTimeout
from app.http.deadlines import parse_timeout, request_deadline
from app.serving.deadline import ARRIVED, MAX_SECONDS


def scope(timeout: bytes | None = None, **extra: Any) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if timeout is not None:
        headers.append((b"x-request-timeout", timeout))
    return {"type": "http", "headers": headers, **extra}


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(b"2", 2.0), (b"0.25", 0.25), (b".5", 0.5), (b"3.", 3.0), (b"1e-3", 0.001), (b" 7 ", 7.0)],
)
def test_positive_decimal_seconds_parse(raw: bytes, seconds: float) -> None:
    assert parse_timeout(raw) == seconds


@pytest.mark.parametrize(
    "raw", [b"0", b"0.0", b"-1", b"+1", b"abc", b"", b"nan", b"inf", b"1s", b"9" * 65]
)
def test_anything_else_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidTimeout):
        parse_timeout(raw)


def test_the_setting_is_the_default_and_the_cap(tmp_path: Any) -> None:
    settings = Settings(model_dir=tmp_path, request_timeout=30)

    default = request_deadline(scope(), settings)
    capped = request_deadline(scope(b"600"), settings)
    shorter = request_deadline(scope(b"0.5"), settings)

    assert default is not None and default.at - default.start == 30
    assert capped is not None and capped.at - capped.start == 30
    assert shorter is not None and shorter.at - shorter.start == 0.5


def test_zero_means_no_default_and_no_cap(tmp_path: Any) -> None:
    settings = Settings(model_dir=tmp_path, request_timeout=0)

    assert request_deadline(scope(), settings) is None
    long = request_deadline(scope(b"600"), settings)
    endless = request_deadline(scope(b"1e999"), settings)

    assert long is not None and long.at - long.start == 600
    assert endless is not None and endless.at - endless.start == MAX_SECONDS


def test_the_deadline_counts_from_the_servers_arrival_stamp(tmp_path: Any) -> None:
    arrived = time.monotonic() - 5.0  # as recorded by the worker when the head was parsed

    deadline = request_deadline(scope(b"2", **{ARRIVED: arrived}), Settings(model_dir=tmp_path))

    assert deadline is not None
    assert deadline.start == arrived
    assert deadline.expired()

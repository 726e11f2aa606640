"""The gRPC port's handover on a reload (app.server.handover), between real processes: forked
siblings as gunicorn forks workers, one waiting for a younger one to listen on a real socket."""

import asyncio
import os
import socket
import time
from collections.abc import Callable

from app.server.handover import hand_over
from tests.e2e.conftest import free_port


def _fork(child: Callable[[], int]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's exit status is the result
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    return pid


def _old_worker(port: int, timeout: float) -> int:
    """Exit status 0 when a successor listened, 1 when not, 2 when it returned before the
    successor could have listened. Stopped (as gunicorn stops old workers) once the new one
    has been forked, which listens about 0.3 s later."""
    time.sleep(0.3)
    started = time.monotonic()
    handed = asyncio.run(hand_over(port, timeout=timeout))
    if handed and time.monotonic() - started < 0.1:
        return 2
    return 0 if handed else 1


def _new_worker(port: int, listens: bool) -> int:
    time.sleep(0.5)  # starting up
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        if listens:
            listener.listen()
        time.sleep(3)
    return 0


def _status(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_an_old_worker_waits_for_a_younger_one_to_listen() -> None:
    port = free_port()
    old = _fork(lambda: _old_worker(port, timeout=20))
    time.sleep(0.1)  # so the younger one's start time is later
    new = _fork(lambda: _new_worker(port, listens=True))
    assert (_status(old), _status(new)) == (0, 0)


def test_it_gives_up_at_its_timeout_when_none_listens() -> None:
    port = free_port()
    old = _fork(lambda: _old_worker(port, timeout=1.5))
    time.sleep(0.1)
    new = _fork(lambda: _new_worker(port, listens=False))  # bound, never listening
    assert (_status(old), _status(new)) == (1, 0)


def test_with_no_successor_nothing_waits() -> None:
    started = time.monotonic()
    assert asyncio.run(hand_over(free_port(), timeout=20)) is False
    assert time.monotonic() - started < 5

"""Handing a port over from old workers to new ones on a reload, for listeners the workers own.

HTTP's listening socket belongs to the gunicorn master and outlives every worker. gRPC's belong to
the workers (one each, on one port with SO_REUSEPORT). On SIGHUP the master forks the new
workers and at once sends SIGTERM to the old ones: an old worker that closed its gRPC listener
straight away could leave the port with no listener until a new worker has started its own, and
a client connecting meanwhile would be refused. So a worker shutting down first waits, briefly,
for a worker forked after it to listen on the port.

Its successors are found through /proc (Linux, like SO_REUSEPORT's sharing): the processes with
the same parent and command line, started after this one. On a plain shutdown (every worker
stopping) the youngest has none and stops at once; an older one may find a younger one that has
already closed its listener and then waits for it to exit (or for the timeout), still serving.
Without /proc, nothing waits.
"""

import asyncio
import os
import time
from pathlib import Path

PROC = Path("/proc")
POLL_SECONDS = 0.05
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


async def hand_over(port: int, timeout: float) -> bool:
    """Wait until a successor of this process listens on `port`, for at most `timeout` seconds.
    True when one does; False when this process has no (more) successor, or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        successors = _successors()
        if not successors:
            return False
        if _listening(port) & set().union(*(_sockets(pid) for pid in successors)):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECONDS)


def _successors() -> list[int]:
    """The siblings of this process (same parent, same command line) started after it."""
    me = os.getpid()
    try:
        mine = _stat(me)
        command = (PROC / str(me) / "cmdline").read_bytes()
    except OSError:
        return []
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            parent, started = _stat(int(entry.name))
            same = (entry / "cmdline").read_bytes() == command
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
        if parent == mine[0] and started > mine[1] and same:
            found.append(int(entry.name))
    return found


def _stat(pid: int) -> tuple[int, int]:
    """(parent pid, start time in clock ticks since boot) from /proc/<pid>/stat."""
    fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[19])


def _listening(port: int) -> set[int]:
    """Inodes of the TCP sockets listening on `port`, IPv4 and IPv6."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(int(inode))
    return inodes


def _sockets(pid: int) -> set[int]:
    """Inodes of the sockets a process holds open."""
    inodes: set[int] = set()
    try:
        descriptors = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return inodes
    for descriptor in descriptors:
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes

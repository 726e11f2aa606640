"""gunicorn configuration, driven by the same Settings as the app (`MODELPORT_*`).

Used by `modelport serve` as `gunicorn -c python:app.gunicorn_conf app.main:app`.
Signals: HUP starts fresh workers (which load the store anew) and retires the old ones
gracefully; TERM drains in-flight requests for up to `graceful_timeout`.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.config import get_settings, pid_file_of

_settings = get_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
# uvicorn-worker's worker (the maintained one; `uvicorn.workers` is deprecated), with limits on
# the request head that gunicorn's limit_request_* settings would give a sync worker.
worker_class = "app.worker.ModelportWorker"
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
loglevel = _settings.log_level
pidfile = str(pid_file_of(_settings))
# Heartbeat files on tmpfs: a worker's heartbeat never waits on a slow or full disk.
worker_tmp_dir = "/dev/shm"
# No gunicornc control socket: it defaults to one path under $HOME, which two servers on one
# host would share and a read-only root filesystem cannot hold. Signals (HUP, TERM) suffice.
control_socket_disable = True

# Prometheus multiprocess mode: every worker writes its samples into one directory that /metrics
# aggregates. Set here, in the master, so workers inherit it before importing prometheus_client;
# a directory left by an earlier run would add stale counts, so each start gets a fresh one.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_own_metrics_dir = not _metrics_dir
if _metrics_dir:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    Path(_metrics_dir).mkdir(parents=True)
else:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelport-metrics-")


def child_exit(server: Any, worker: Any) -> None:
    # Keep a dead worker's counters, drop its live gauges.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _own_metrics_dir:  # one we made: nobody else will read it
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

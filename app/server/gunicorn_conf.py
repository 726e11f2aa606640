"""gunicorn configuration, driven by the same Settings as the app (`MODELPORT_*`).

Used by `modelport serve` as `gunicorn -c python:app.server.gunicorn_conf app.main:app`.

Models are loaded once, in the master, before any worker is forked (`preload_app`): workers
share the interpreter, the libraries and every model's arrays copy-on-write, instead of loading a
copy each. `gc.freeze()` then moves everything loaded into the permanent generation, so the
garbage collector never walks (and so never writes to) those shared pages.

Signals: HUP makes the master reload the store itself (`on_reload`) and then fork fresh workers
from it, retiring the old ones gracefully; TERM drains in-flight requests for up to
`graceful_timeout`. The repository API's loads and unloads go the same way: a worker records
the request and sends HUP, and the master rescans just the models asked for
(app.serving.master_repository).
"""

import gc
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.formparsers import MultiPartParser

from app import native
from app.config import MASTER_PID_ENV, get_settings, pid_file_of, repository_state_file_of
from app.server.allocator import MALLOC_VARIABLES

if TYPE_CHECKING:
    from app.serving.repository_state import StateFile

_settings = get_settings()
# The workers' repository API signals this process (app.main picks the master's repository).
os.environ[MASTER_PID_ENV] = str(os.getpid())

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
# uvicorn-worker's worker (the maintained one; `uvicorn.workers` is deprecated), with limits on
# the request head that gunicorn's limit_request_* settings would give a sync worker.
worker_class = "app.server.worker.ModelportWorker"
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

preload_app = True

# Uploads up to `upload_memory_bytes` stay in memory while a request is read: past Starlette's
# 1 MiB default every later chunk of an upload went to a temporary file, each write on a thread
# of its own (~1 ms of a 2 MB, 10,000-row CSV's request), only for the reader to load the whole
# file into memory anyway. This class attribute is Starlette's knob for it (process-wide, so set
# here: a worker process serves only this app).
MultiPartParser.spool_max_size = _settings.upload_memory_bytes

# Prometheus multiprocess mode: every worker writes its samples into one directory that /metrics
# aggregates. Set here, in the master, so workers inherit it before importing prometheus_client;
# a directory left by an earlier run would add stale counts, so each start gets a fresh one.
# gunicorn reads this file again on HUP: the directory (with live workers' files) is kept then.
_METRICS_READY = "MODELPORT_METRICS_DIR_READY"
if not os.environ.get(_METRICS_READY):
    _metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
        Path(_metrics_dir).mkdir(parents=True)
        os.environ[_METRICS_READY] = "given"
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelport-metrics-")
        os.environ[_METRICS_READY] = "own"


def _repository_state() -> "StateFile":
    # Imported here, not at the top: the data plane imports the metrics, which must see
    # PROMETHEUS_MULTIPROC_DIR (set above) when first imported.
    from app.serving.repository_state import StateFile

    return StateFile(repository_state_file_of(_settings))


def _load_store(server: Any, *, reload: bool) -> None:
    """Load (or reload) the store in the master, then freeze what was loaded for sharing."""
    from threadpoolctl import threadpool_limits

    from app.serving.master_repository import apply_in_master

    registry = server.app.wsgi().state.registry
    # One native thread while loading: a model's self-check at load may run OpenMP or BLAS code,
    # and whether a thread pool started before fork survives into the children differs between
    # runtimes (GNU libgomp's historically did not). Workers keep their own defaults.
    with threadpool_limits(limits=1):
        if reload:  # the models the repository API asked for, else the whole store
            apply_in_master(
                registry,
                _repository_state(),
                retiring=list(server.WORKERS),
                thaw=gc.unfreeze,  # let the previous objects be collected
                settle=_freeze,
            )
        else:  # a fresh start: nothing unloaded, nothing pending
            _repository_state().reset()
            registry.load()
            _freeze()


def _freeze() -> None:
    gc.collect()
    gc.freeze()


def when_ready(server: Any) -> None:
    malloc = " ".join(
        f"{name}={os.environ[name]}" for name in MALLOC_VARIABLES if name in os.environ
    )
    server.log.info(
        "uploads up to %d bytes held in memory; malloc: %s; native hot path: %s",
        MultiPartParser.spool_max_size,
        malloc or "glibc defaults",
        native.LIBRARY if native.HOT_PATH else "not built (Python paths; see app/native)",
    )
    _load_store(server, reload=False)


def on_reload(server: Any) -> None:
    logging.getLogger("modelport").info("reloading the model store in the master")
    _load_store(server, reload=True)


def post_fork(server: Any, worker: Any) -> None:
    # OpenMP (HistGradientBoosting's prediction, some scikit-learn kernels) would start one
    # thread per core in every worker: on shared cores they contend and latency turns erratic.
    # One thread per worker, set once here; scaling is by worker processes.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def child_exit(server: Any, worker: Any) -> None:
    # Keep a dead worker's counters, drop its live gauges.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    _repository_state().remove()
    if os.environ.get(_METRICS_READY) == "own":  # one we made: nobody else will read it
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

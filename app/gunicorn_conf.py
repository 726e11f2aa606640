"""gunicorn configuration, driven by the same Settings as the app (`MODELPORT_*`).

Used by `modelport serve` as `gunicorn -c python:app.gunicorn_conf app.main:app`.
"""

from app.config import get_settings

_settings = get_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
# The maintained worker class (`uvicorn.workers` is deprecated in favour of uvicorn-worker).
worker_class = "uvicorn_worker.UvicornWorker"
timeout = _settings.worker_timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
loglevel = _settings.log_level
# Heartbeat files on tmpfs: a worker's heartbeat never waits on a slow or full disk.
worker_tmp_dir = "/dev/shm"
# No gunicornc control socket: it defaults to one path under $HOME, which two servers on one
# host would share and a read-only root filesystem cannot hold. Signals (HUP, TERM) suffice.
control_socket_disable = True
# Headers from a client are bounded; bodies are bounded by the app (max_body_bytes).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

"""Service settings: one object, read from `MODELPORT_*` environment variables (or `.env`)."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _parse_origins(value: Any) -> Any:
    """Accept a comma-separated string (handy in env vars) as well as a list."""
    if isinstance(value, str):
        return [origin.strip() for origin in value.split(",") if origin.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODELPORT_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
    )

    model_dir: Path = Field(default=Path("models"), description="Model store root.")
    host: str = Field(default="127.0.0.1", description="Address gunicorn binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port gunicorn binds to.")
    grpc_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Port of the gRPC Open Inference Protocol service, on the same host; every worker listens on it (SO_REUSEPORT). 0 turns gRPC off.",
    )
    workers: int = Field(default=2, ge=1, description="gunicorn worker processes.")
    worker_timeout: int = Field(
        default=60,
        ge=1,
        description="Seconds a silent worker may block before gunicorn restarts it.",
    )
    graceful_timeout: int = Field(
        default=30,
        ge=1,
        description="Seconds workers get to finish in-flight requests on shutdown.",
    )
    header_timeout: float = Field(
        default=10, gt=0, description="Seconds a client has to send a request's line and headers."
    )
    keepalive: int = Field(
        default=5, ge=0, description="Seconds to hold idle keep-alive connections."
    )
    max_rows: int = Field(
        default=10_000, ge=1, description="Most rows one prediction request may carry."
    )
    batch_max_rows: int = Field(
        default=256,
        ge=1,
        description="Micro-batching: most rows of concurrent requests gathered into one estimator call.",
    )
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Micro-batching: how long a batch formed under load waits for more requests (milliseconds; a lone request never waits).",
    )
    batching: bool = Field(
        default=True,
        description="Micro-batching on (concurrent requests to one model version share estimator calls).",
    )
    request_timeout: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="Seconds a prediction request may take, from its arrival to its reply, when it names no X-Request-Timeout; also the most a client's X-Request-Timeout may ask for. Past it the request is answered 504 (its rows dropped if still queued). 0: no default deadline and no cap.",
    )
    queue_max_rows: int = Field(
        default=10_000,
        ge=1,
        description="Admission control: most rows waiting for one model version's estimator in one worker; a request that would pass it is refused with 429 and Retry-After (a request larger than this is still admitted into an empty queue).",
    )
    backend: Literal["auto", "sklearn"] = Field(
        default="auto",
        description="auto: each model version is served by a fast evaluator where one equals scikit-learn bit for bit on the parity check at load (else by scikit-learn); sklearn: always scikit-learn.",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest JSON request body accepted, in bytes.",
    )
    grpc_max_message_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Largest gRPC message received or sent, in bytes; a larger request is refused with RESOURCE_EXHAUSTED (default: MODELPORT_MAX_BODY_BYTES).",
    )
    max_upload_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest multipart upload (file or form) accepted, in bytes.",
    )
    stream_max_line_bytes: int = Field(
        default=1024 * 1024,
        ge=256,
        description="Streams (the predict/stream routes, `modelport score`): the longest line, one row, accepted in bytes. A longer row is answered with an error in its place; a longer CSV header is a 413.",
    )
    stream_max_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Streams: the largest body accepted, in bytes; unset, no limit (MODELPORT_MAX_BODY_BYTES does not apply to streams). A larger declared Content-Length is a 413; a chunked body that grows past it ends the stream with an error record.",
    )
    upload_memory_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=0,
        description="Under `modelport serve`, an uploaded file up to this many bytes is held in memory while the request is read; a larger one goes to a temporary file.",
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=64, description="Largest image accepted, in pixels (width × height)."
    )
    cookie_secure: bool = Field(
        default=False, description="Mark the session cookie Secure (HTTPS only)."
    )
    cookie_max_age: int = Field(
        default=30 * 24 * 3600, ge=0, description="Session cookie lifetime, in seconds."
    )
    cors_origins: Annotated[list[str], NoDecode, BeforeValidator(_parse_origins)] = Field(
        default_factory=list,
        description="Origins allowed by CORS (comma-separated). Credentials are allowed, so never '*'.",
    )
    docs_enabled: bool = Field(default=True, description="Serve /docs, /redoc and /openapi.json.")
    version_mismatch: Literal["refuse", "warn"] = Field(
        default="refuse",
        description="A model version whose artifact was made with another scikit-learn minor version: refuse it (a readiness problem naming both versions), or warn (serve it, and say so in the log, the card endpoint and the modelport_model_version_mismatch metric).",
    )
    skops_trusted_types: Annotated[list[str], NoDecode, BeforeValidator(_parse_origins)] = Field(
        default_factory=list,
        description="Extra types trusted when loading .skops artifacts (comma-separated).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="When set, prediction routes require it in the X-API-Key header."
    )
    repository_writes: bool | None = Field(
        default=None,
        description="Repository API writes (load, unload): unset, allowed with the API key when one is set and refused (403) when none is; true, allowed (still with the key when one is set); false, always refused (403).",
    )
    repository_timeout: float = Field(
        default=120,
        gt=0,
        description="Seconds a repository load or unload under `modelport serve` waits for the master to reload the model and retire its workers before answering 503.",
    )
    pid_file: Path | None = Field(
        default=None,
        description="gunicorn master's PID file (default: /tmp/modelport-<port>.pid), used by `modelport reload`.",
    )
    log_level: str = Field(default="info", description="gunicorn/uvicorn log level.")
    access_log: bool = Field(default=True, description="One JSON line per request on stdout.")
    malloc_keep_mib: int = Field(
        default=64,
        ge=0,
        le=1024,
        description="Freed memory a glibc malloc arena keeps for the next request, in MiB (two arenas per process; set by `modelport serve` unless MALLOC_* or GLIBC_TUNABLES already tune malloc); 0 keeps glibc's defaults.",
    )

    explain_max_rows: int = Field(
        default=1000,
        ge=1,
        description="Most rows one explanation request may carry (exact explanations cost far more than predictions).",
    )
    payload_log_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of prediction requests whose inputs and outputs are logged (0: none, 1: all); needs MODELPORT_PAYLOAD_LOG_PATH or MODELPORT_PAYLOAD_LOG_URL.",
    )
    payload_log_path: Path | None = Field(
        default=None,
        description="Payload log as JSON lines in this file (shared by the workers, size-rotated).",
    )
    payload_log_url: str | None = Field(
        default=None,
        description="Payload log as CloudEvents 1.0 (structured JSON) POSTed to this http(s) URL instead of a file.",
    )
    payload_log_max_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1024,
        description="Payload log file size past which it is rotated (path → path.1 → ...).",
    )
    payload_log_backups: int = Field(
        default=5, ge=0, description="Rotated payload log files kept beside the current one."
    )
    payload_log_queue: int = Field(
        default=10_000,
        ge=1,
        description="Records a worker holds for the payload log's writer; past it records are dropped and counted, never waited for.",
    )
    payload_log_batch: int = Field(
        default=100,
        ge=1,
        description="CloudEvents per POST to the payload log URL (a JSON array, the batched mode); 1 sends each event alone (structured mode).",
    )

    @model_validator(mode="after")
    def _payload_log_destination(self) -> Self:
        if self.payload_log_path is not None and self.payload_log_url is not None:
            raise ValueError(
                "set MODELPORT_PAYLOAD_LOG_PATH or MODELPORT_PAYLOAD_LOG_URL, not both"
            )
        if (
            self.payload_log_rate > 0
            and self.payload_log_path is None
            and self.payload_log_url is None
        ):
            raise ValueError(
                "MODELPORT_PAYLOAD_LOG_RATE is above 0: set MODELPORT_PAYLOAD_LOG_PATH or MODELPORT_PAYLOAD_LOG_URL"
            )
        return self

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_with_credentials(cls, origins: list[str]) -> list[str]:
        # Cookies route canary traffic, so CORS allows credentials; a wildcard with
        # credentials would let any site read responses on a user's behalf.
        if "*" in origins:
            raise ValueError("'*' is not allowed: list explicit origins (credentials are enabled)")
        return origins


def pid_file_of(settings: Settings) -> Path:
    return settings.pid_file or Path(f"/tmp/modelport-{settings.port}.pid")


# Set by the gunicorn config in the master (`modelport serve`) to its PID, inherited by the
# workers: the app then leaves loading to the master (app.serving.master_repository).
MASTER_PID_ENV = "MODELPORT_GUNICORN_MASTER_PID"


def repository_state_file_of(settings: Settings) -> Path:
    """The repository API's state under `modelport serve` (the models unloaded, the loads and
    unloads asked for and done), beside the master's PID file: one per server."""
    return pid_file_of(settings).with_suffix(".repository.json")


@lru_cache
def get_settings() -> Settings:
    return Settings()

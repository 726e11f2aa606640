"""The service's errors. The core raises these (never `HTTPException`); each protocol turns them
into its own envelope: `app.http.errors` (`{"error": "<Kind>", "detail": ...}`, and the Open
Inference Protocol's `{"error": "<message>"}`), `app.grpc.errors` (a gRPC status code and message).

Kept free of FastAPI so the inference core and the CLI can use it.
"""

from collections.abc import Sequence
from typing import Any


class ServiceError(Exception):
    status_code = 500
    headers: dict[str, str] = {}  # extra response headers; per class, never mutated

    def __init__(self, detail: str | list[dict[str, Any]] | dict[str, Any]) -> None:
        super().__init__(detail if isinstance(detail, str) else type(self).__name__)
        self.detail = detail

    @property
    def kind(self) -> str:
        return type(self).__name__


class Unauthorized(ServiceError):
    status_code = 401
    headers = {"WWW-Authenticate": "ApiKey"}


class Forbidden(ServiceError):
    """Refused whoever asks: the operation is turned off by a setting."""

    status_code = 403


class ModelNotFound(ServiceError):
    status_code = 404


class ModelUnavailable(ServiceError):
    """The model exists in the store but could not be loaded (bad artifact, hash mismatch)."""

    status_code = 503


class NotReady(ServiceError):
    status_code = 503


class LoadFailed(ServiceError):
    """A repository load after which no version of the model serves (Triton answers 400 too)."""

    status_code = 400


class RepositoryBusy(ServiceError):
    """A repository load or unload that could not be applied now (the workers are being
    replaced, or the master did not finish in time): worth retrying."""

    status_code = 503
    headers = {"Retry-After": "1"}


class InvalidInput(ServiceError):
    """Well-formed request whose content fails validation; detail is pydantic's error list."""

    status_code = 422


class MalformedBody(ServiceError):
    """The body cannot be parsed at all (not JSON, not UTF-8)."""

    status_code = 400


class UnreadableFile(ServiceError):
    """An uploaded file that cannot be read as what it claims to be (bad CSV, broken image)."""

    status_code = 400


class BadTensor(ServiceError):
    """An Open Inference Protocol request whose tensors are malformed or fail the model's schema."""

    status_code = 400


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class InvalidTimeout(ServiceError):
    """A request timeout (the X-Request-Timeout header, the v2 `timeout` parameter) that is not
    a positive number."""

    status_code = 400


class Overloaded(ServiceError):
    """Refused at once: the model version's queue is full, or the wait it predicts would outlast
    the request's deadline. `retry_after` (whole seconds, at least 1) is when to try again."""

    status_code = 429

    def __init__(self, detail: str, *, reason: str, retry_after: int) -> None:
        super().__init__(detail)
        self.reason = reason  # "queue_full" or "deadline_unreachable"
        self.retry_after = max(1, retry_after)
        self.headers = {"Retry-After": str(self.retry_after)}


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its reply was ready: answered at the deadline, and
    its rows never reached the estimator if they were still waiting then."""

    status_code = 504


class ClientGone(ServiceError):
    """The client disconnected while its rows waited: they were dropped before the estimator.
    Nobody reads the reply; 499 (nginx's "client closed request") is what the access log shows."""

    status_code = 499


class NotExplainable(ServiceError):
    """No exact explanation method applies to this model (docs/explanations.md says which do)."""

    status_code = 501


class InferenceError(ServiceError):
    """The model itself failed on input that passed validation: a server-side fault."""

    status_code = 500


def one_line(kind: str, detail: Any) -> str:
    """An error as one line of text, for protocols whose errors are a message (the Open Inference
    Protocol's `{"error"}`, a gRPC status): pydantic's issues as "loc: msg" each, joined by "; ";
    else the message; else the kind."""
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, issue.get('loc', [])))}: {issue.get('msg', '')}"
            for issue in detail
            if isinstance(issue, dict)
        )
    return str(detail) if detail else kind


def clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Keep `loc`, `msg` and `type` of each pydantic error.

    `input` and `ctx` are dropped on purpose: they may hold NaN/inf (which JSON cannot carry,
    the cause of FastAPI's own 500 on such input), exception objects, or large client payloads.
    """
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]

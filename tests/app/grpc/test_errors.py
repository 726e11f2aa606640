"""The gRPC error envelope (app.grpc.errors): every service error has a status code of its meaning,
never UNKNOWN, and a client's mistake is never a server fault."""

from typing import Any

import grpc
import pytest

from app import errors
from app.errors import ServiceError
from app.grpc.errors import HTTP_STATUS, message_of, status_of


def _every_error_class() -> list[type[ServiceError]]:
    found: list[type[ServiceError]] = []
    pending: list[type[ServiceError]] = [ServiceError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _example(cls: type[ServiceError]) -> ServiceError:
    if cls is errors.Overloaded:  # the one error with required fields of its own
        return errors.Overloaded("boom", reason="queue_full", retry_after=1)
    return cls("boom")


@pytest.mark.parametrize("cls", _every_error_class(), ids=lambda cls: cls.__name__)
def test_every_service_error_has_a_code_of_its_kind(cls: type[ServiceError]) -> None:
    code = status_of(_example(cls))
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
    if cls.status_code < 500:
        assert code is not grpc.StatusCode.INTERNAL
    # The metrics' HTTP status of that code is of the same class (4xx stays 4xx, 5xx 5xx).
    assert HTTP_STATUS[code] // 100 == cls.status_code // 100


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.BadTensor("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            errors.InvalidInput([{"loc": ["a"], "msg": "m", "type": "t"}]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (errors.ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (
            errors.Overloaded("x", reason="queue_full", retry_after=1),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.ClientGone("x"), grpc.StatusCode.CANCELLED),
        (errors.InvalidTimeout("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ModelUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.NotReady("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.NotExplainable("x"), grpc.StatusCode.UNIMPLEMENTED),
        (errors.InferenceError("x"), grpc.StatusCode.INTERNAL),
    ],  # fmt: skip
    ids=lambda value: getattr(value, "kind", ""),
)
def test_the_codes_of_the_errors_clients_meet(error: ServiceError, code: grpc.StatusCode) -> None:
    assert status_of(error) is code


def test_messages_are_one_line() -> None:
    issues: list[dict[str, Any]] = [
        {"loc": ["instances", 0, "x"], "msg": "not finite", "type": "t"},
        {"loc": [], "msg": "m"},
    ]
    assert message_of(errors.InvalidInput(issues)) == "instances.0.x: not finite; : m"
    assert message_of(errors.ModelNotFound("Model 'x' not found")) == "Model 'x' not found"

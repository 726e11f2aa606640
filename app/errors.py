"""One error envelope for the whole friendly API: `{"error": "<Kind>", "detail": ...}`.

The core raises `ServiceError` subclasses (never `HTTPException`); the handlers installed by
`add_exception_handlers` turn them, FastAPI's validation errors and Starlette's HTTP errors into
the envelope, so no client ever sees a bare `{"detail"}` body or a traceback.
"""

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("modelport")


class ServiceError(Exception):
    status_code = 500

    def __init__(self, detail: str | list[dict[str, Any]] | dict[str, Any]) -> None:
        super().__init__(detail if isinstance(detail, str) else type(self).__name__)
        self.detail = detail

    @property
    def kind(self) -> str:
        return type(self).__name__


class ModelNotFound(ServiceError):
    status_code = 404


class ModelUnavailable(ServiceError):
    """The model exists in the store but could not be loaded (bad artifact, hash mismatch)."""

    status_code = 503


class NotReady(ServiceError):
    status_code = 503


class InvalidInput(ServiceError):
    """Well-formed request whose content fails validation; detail is pydantic's error list."""

    status_code = 422


class MalformedBody(ServiceError):
    """The body cannot be parsed at all (not JSON, not UTF-8)."""

    status_code = 400


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    status_code = 415


class InferenceError(ServiceError):
    """The model itself failed on input that passed validation: a server-side fault."""

    status_code = 500


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


def error_response(status_code: int, kind: str, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"error": kind, "detail": detail})


def _kind_for_status(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


async def _service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    if exc.status_code >= 500:
        logger.error(
            "%s on %s %s: %s",
            exc.kind,
            request.method,
            request.url.path,
            exc.detail,
            exc_info=exc.__cause__,
        )
    return error_response(exc.status_code, exc.kind, exc.detail)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, InvalidInput.__name__, clean_errors(exc.errors()))


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = error_response(exc.status_code, _kind_for_status(exc.status_code), exc.detail)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Last resort: log the traceback server-side, answer with the envelope and nothing more.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalServerError", "internal server error")


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)

"""Errors as HTTP replies: each surface's own envelope, picked by the route that was matched.

The friendly API answers `{"error": "<Kind>", "detail": ...}`. A route may carry its protocol's
own envelope as `error_envelope` (the Open Inference Protocol's `{"error": "<message>"}`, in
app.http.v2_errors, beside its surface): the handlers installed here, and the body-limit
middleware, answer in the envelope of the route the request matched.
No client ever sees a bare `{"detail"}` body or a traceback.
(Separate from `app.errors` so the layers below HTTP do not import FastAPI.)
"""

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from app.errors import DeadlineExceeded, InvalidInput, ServiceError, clean_errors

logger = logging.getLogger("modelport")

# Where a service error's handler leaves its kind in the request's scope, for the server span.
ERROR_KIND = "modelport.error_kind"

# (status, kind, detail) -> the reply. `kind` is the error's class name (or the HTTP phrase);
# `detail` a message or pydantic's list of issues.
Envelope = Callable[[int, str, Any], JSONResponse]


def friendly_envelope(status_code: int, kind: str, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"error": kind, "detail": detail})


def envelope_of(scope: Scope) -> Envelope:
    """The envelope of the route this request matched (the friendly one when none did)."""
    envelope: Envelope = getattr(scope.get("route"), "error_envelope", friendly_envelope)
    return envelope


def _kind_for_status(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "HTTPError"


async def _service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    # A passed deadline is the client's limit doing its job, not a fault: counted
    # (modelport_deadline_expired_total), not logged, or an overload would flood the log.
    if exc.status_code >= 500 and not isinstance(exc, DeadlineExceeded):
        logger.error(
            "%s on %s %s: %s",
            exc.kind,
            request.method,
            request.url.path,
            exc.detail,
            exc_info=exc.__cause__,
        )
    request.scope[ERROR_KIND] = exc.kind
    response = envelope_of(request.scope)(exc.status_code, exc.kind, exc.detail)
    response.headers.update(exc.headers)
    return response


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return envelope_of(request.scope)(422, InvalidInput.__name__, clean_errors(exc.errors()))


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = envelope_of(request.scope)(
        exc.status_code, _kind_for_status(exc.status_code), exc.detail
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Last resort: log the traceback server-side, answer with the envelope and nothing more.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return envelope_of(request.scope)(500, "InternalServerError", "internal server error")


async def _client_disconnect_handler(request: Request, exc: Exception) -> JSONResponse:
    # The client went away (or BodyLimitMiddleware cut its body off and will answer 413 instead):
    # nothing to log as an error, and nobody may be listening.
    return envelope_of(request.scope)(400, "ClientDisconnected", "The request body ended early")


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_disconnect_handler)
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)

"""One error envelope for the whole friendly API: `{"error": "<Kind>", "detail": ...}`.

Installs handlers that turn `ServiceError`s, FastAPI's validation errors and Starlette's HTTP
errors into the envelope, so no client ever sees a bare `{"detail"}` body or a traceback.
Under `/v2` the Open Inference Protocol's own shape is used instead, `{"error": "<message>"}`,
which is all that tritonclient and KServe's client read.
(Separate from `app.errors` so the inference core does not import FastAPI.)
"""

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.errors import InvalidInput, ServiceError, clean_errors

logger = logging.getLogger("modelport")


V2_PREFIX = "/v2"


def error_response(status_code: int, kind: str, detail: Any, *, path: str = "") -> JSONResponse:
    if path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
        # The Open Inference Protocol answers every bad request with 400, validation included.
        status_code = 400 if status_code == 422 else status_code
        return JSONResponse(status_code=status_code, content={"error": _message(kind, detail)})
    return JSONResponse(status_code=status_code, content={"error": kind, "detail": detail})


def _message(kind: str, detail: Any) -> str:
    if isinstance(detail, list):  # pydantic's issues, as one line each: "loc: msg"
        return "; ".join(
            f"{'.'.join(map(str, issue.get('loc', [])))}: {issue.get('msg', '')}"
            for issue in detail
            if isinstance(issue, dict)
        )
    return str(detail) if detail else kind


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
    response = error_response(exc.status_code, exc.kind, exc.detail, path=request.url.path)
    response.headers.update(exc.headers)
    return response


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(
        422, InvalidInput.__name__, clean_errors(exc.errors()), path=request.url.path
    )


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = error_response(
        exc.status_code, _kind_for_status(exc.status_code), exc.detail, path=request.url.path
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Last resort: log the traceback server-side, answer with the envelope and nothing more.
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "InternalServerError", "internal server error", path=request.url.path
    )


async def _client_disconnect_handler(request: Request, exc: Exception) -> JSONResponse:
    # The client went away (or BodyLimitMiddleware cut its body off and will answer 413 instead):
    # nothing to log as an error, and nobody may be listening.
    return error_response(
        400, "ClientDisconnected", "The request body ended early", path=request.url.path
    )


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_disconnect_handler)
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)


class EnvelopeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, but a refused preflight answers with the envelope too."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8", "replace")
        envelope = error_response(response.status_code, "CORSPreflightRefused", reason)
        for name, value in response.headers.items():
            if name.lower().startswith("access-control-") or name.lower() == "vary":
                envelope.headers[name] = value
        return envelope

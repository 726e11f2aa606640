"""Every unary call of the gRPC surface, observed as REST's middleware observes a request: the API
key checked where the call needs it, the request id, the error envelope (app.grpc.errors), one
access-log line and the request metrics.

Metrics reuse REST's families: route is the full method name
(`/inference.GRPCInferenceService/ModelInfer`), method is `GRPC`, and status the HTTP status of the
call's gRPC code (app.grpc.errors.HTTP_STATUS), so one query counts the errors of both surfaces.
The access log adds the gRPC code itself (`grpc_status`). A request id offered in the
`x-request-id` metadata is honoured when it looks like one and comes back in the trailing
metadata. Streaming calls (health Watch, reflection) pass through unobserved.
"""

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from pydantic import SecretStr

from app.access_log import AccessLog, request_id
from app.errors import Overloaded, ServiceError, Unauthorized
from app.grpc.errors import HTTP_STATUS, message_of, status_of
from app.metrics import TURN_METRICS, latency_histogram, request_counter

logger = logging.getLogger("modelport")

METHOD_LABEL = "GRPC"
Behaviour = Callable[[Any, Any], Awaitable[Any]]


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(
        self, *, access_log: AccessLog | None, api_key: SecretStr | None, guarded: set[str]
    ) -> None:
        """`access_log` None: no access log. `guarded`: the full names of the methods that need
        the API key, when one is set."""
        self.access_log = access_log
        self.api_key = api_key
        self.guarded = guarded
        # A method's handler is the same object on every call: wrap it once.
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        method: str = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:  # unknown method, or a stream
            return handler
        wrapped = self._wrapped[method] = grpc.unary_unary_rpc_method_handler(
            self._observe(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return wrapped

    def _observe(self, method: str, behaviour: Behaviour) -> Behaviour:
        needs_key = method in self.guarded

        async def observed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            metadata = dict(context.invocation_metadata() or ())
            call_id = request_id(str(metadata.get("x-request-id", "")))
            trailer: tuple[tuple[str, str], ...] = (("x-request-id", call_id),)
            code = grpc.StatusCode.OK
            response = None
            try:
                if needs_key:
                    self._authenticate(metadata.get("x-api-key"))
                response = await behaviour(request, context)
                context.set_trailing_metadata(trailer)
                return response
            except ServiceError as exc:
                code = status_of(exc)
                if code is grpc.StatusCode.INTERNAL:
                    logger.error(
                        "%s on %s: %s", exc.kind, method, exc.detail, exc_info=exc.__cause__
                    )
                if isinstance(exc, Overloaded):
                    # gRPC's own Retry-After (gRFC A6): clients with a retry policy wait it out.
                    pushback = str(exc.retry_after * 1000)
                    trailer = (*trailer, ("grpc-retry-pushback-ms", pushback))
                await context.abort(code, message_of(exc), trailer)
            except asyncio.CancelledError:
                # The client went away, or the call's deadline passed: grpc.aio cancels the
                # handler, and nothing is answered late.
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:  # the handler set its own status
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                logger.exception("unhandled error on %s", method)
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, "internal server error", trailer)
            finally:
                self._record(method, request, response, code, call_id, started)

        return observed

    def _authenticate(self, offered: Any) -> None:
        """With an API key configured, the `x-api-key` metadata must match it (compared in
        constant time, like REST's X-API-Key)."""
        if self.api_key is None:
            return
        expected = self.api_key.get_secret_value().encode()
        if not isinstance(offered, str) or not secrets.compare_digest(offered.encode(), expected):
            raise Unauthorized("Missing or invalid API key: send it in the x-api-key metadata")

    def _record(
        self,
        method: str,
        request: Any,
        response: Any,
        code: grpc.StatusCode,
        call_id: str,
        started: float,
    ) -> None:
        latency = time.perf_counter() - started
        status = HTTP_STATUS.get(code, 500)
        TURN_METRICS.inc(request_counter(method, METHOD_LABEL, status))
        TURN_METRICS.observe(latency_histogram(method, METHOD_LABEL), latency)
        if self.access_log is None:
            return
        model, version = _model_of(request, response)
        self.access_log.add(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "request_id": call_id,
                "method": METHOD_LABEL,
                "route": method,
                "path": method,
                "status": status,
                "grpc_status": code.name,
                "latency_ms": round(latency * 1000, 3),
                "model": model,
                "version": version,
            }
        )


def _model_of(request: Any, response: Any) -> tuple[str | None, int | None]:
    """The model a call named (infer, metadata, readiness, repository calls) and, for an answered
    inference, the version that answered (as REST logs its X-Model-Version)."""
    name = getattr(request, "model_name", None) or getattr(request, "name", None)
    version = str(getattr(response, "model_version", ""))
    return (str(name) if name else None), (int(version) if version.isdigit() else None)

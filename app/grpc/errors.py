"""The gRPC surface's error envelope: a status code and a one-line message.

Every `ServiceError` (app.errors) carries the HTTP status of its kind; one table turns that into
the gRPC code of the same meaning (the correspondence of google.rpc.Code and HTTP), so an error
class added later maps without a change here. A client's mistake is never UNKNOWN: anything that
is not a `ServiceError` is a server fault, answered INTERNAL without its traceback.
"""

import grpc

from app.errors import ServiceError, one_line

_CODE_OF_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# The other way, for the request metrics and the access log's `status`, which are HTTP statuses
# on every surface (so one query counts errors of both); 499 is "client closed request".
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def status_of(error: ServiceError) -> grpc.StatusCode:
    """The gRPC code of a service error: by its HTTP status; any other 4xx is the client's
    invalid argument, any other 5xx an internal error."""
    code = _CODE_OF_STATUS.get(error.status_code)
    if code is not None:
        return code
    if error.status_code < 500:
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def message_of(error: ServiceError) -> str:
    return one_line(error.kind, error.detail)

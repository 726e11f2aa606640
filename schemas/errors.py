from typing import Any

from pydantic import BaseModel, Field


class ValidationIssue(BaseModel):
    loc: list[int | str]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The envelope of every non-2xx answer outside `/v2`."""

    error: str = Field(
        description="Kind of error, e.g. ModelNotFound, InvalidInput.", examples=["ModelNotFound"]
    )
    detail: str | list[ValidationIssue] | Any = Field(
        description="A message, or for InvalidInput pydantic's list of {loc, msg, type}."
    )


_EXAMPLES: dict[int, tuple[str, Any]] = {
    400: (
        "MalformedBody",
        "Request body is not valid JSON: Invalid JSON: EOF while parsing a list at line 1 column 19",
    ),
    401: ("Unauthorized", "Missing or invalid API key"),
    404: ("ModelNotFound", "Model 'nope' not found"),
    413: ("PayloadTooLarge", "Request body is larger than 33554432 bytes"),
    415: ("UnsupportedMediaType", "Send JSON (Content-Type: application/json), not 'text/plain'"),
    422: (
        "InvalidInput",
        [
            {
                "loc": ["instances", 0, "row", 0],
                "msg": "Input should be a finite number",
                "type": "finite_number",
            }
        ],
    ),
    429: (
        "Overloaded",
        "Model iris v1 cannot answer within the request's deadline: the predicted wait is 0.240 s and 0.100 s remain; retry after 1 s",
    ),
    500: ("InferenceError", "Model iris v1 failed: ValueError: ..."),
    501: (
        "NotExplainable",
        "Model svc v1 cannot be explained: SVC is neither a tree model nor linear, and has 30 features (exact enumeration of feature subsets stops at 10)",
    ),
    503: ("ModelUnavailable", "Model 'iris' version 2 is unavailable: SHA-256 mismatch: ..."),
    504: (
        "DeadlineExceeded",
        "Model iris v1: the request's deadline passed after 0.100 s, before its rows reached the estimator",
    ),
}

# The header every 429 carries (both envelopes).
RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying (at least 1).",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses: the envelope schema with a realistic example each."""
    return {
        status: {
            "model": ErrorResponse,
            "description": description,
            # Explicit, so routes answering HTML on success still document JSON errors.
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorResponse"},
                    "example": {"error": _EXAMPLES[status][0], "detail": _EXAMPLES[status][1]},
                }
            },
            **({"headers": RETRY_AFTER} if status == 429 else {}),
        }
        for status, description in descriptions.items()
    }

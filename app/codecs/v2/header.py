"""The Open Inference Protocol request header: JSON, optionally followed by binary tensor data.

A request body is a JSON header, optionally followed by the binary tensor extension's raw bytes
(`Inference-Header-Content-Length` says where the JSON ends). Every malformed header is a
`BadTensor` (400).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from app.codecs.v2.protocol import HEADER_LENGTH, HEADER_LENGTH_DIGITS, MAX_MESSAGES
from app.errors import BadTensor
from app.serving.json_keys import first_repeated_key
from schemas.v2 import InferenceRequest

# An array holding only numbers: emptied in the header's skeleton for the duplicate-key check.


# -- request header --------------------------------------------------------------------------
def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """Split a body into its JSON header (validated as `InferenceRequest`) and the binary tail.

    Without `header_length` the whole body is JSON and the tail is empty; with it, the first N
    bytes are JSON and the rest is binary tensor data. Anything malformed is a `BadTensor`.
    """
    if header_length is None:
        head, tail = body, b""
    else:
        text = header_length.strip()
        if not re.fullmatch(HEADER_LENGTH_DIGITS, text):
            raise BadTensor(
                f"{HEADER_LENGTH} must be a non-negative integer, got {header_length[:40]!r}"
            )
        length = int(text)
        if length > len(body):
            raise BadTensor(f"{HEADER_LENGTH} is {length}, but the body has only {len(body)} bytes")
        if length == 0:
            raise BadTensor(
                f"{HEADER_LENGTH} 0 (a raw binary request without a JSON header) is not "
                "supported: send a JSON header describing the inputs"
            )
        head, tail = body[:length], body[length:]
    try:
        # Strict: 1.0 is not a shape dimension, 5 is not an id; data elements are checked later.
        request = InferenceRequest.model_validate_json(head, strict=True)
    except ValidationError as exc:
        raise BadTensor(schema_message(exc)) from exc
    _refuse_duplicate_keys(head)
    return request, tail


def schema_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    invalid = [
        error["msg"].removeprefix("Invalid JSON: ")
        for error in errors
        if error["type"] == "json_invalid"
    ]
    if invalid:
        return f"The request header is not valid JSON: {'; '.join(invalid)}"[:1000]
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or 'request'}: {error['msg']}"
        for error in errors[:MAX_MESSAGES]
    ]
    more = f" (and {len(errors) - MAX_MESSAGES} more)" if len(errors) > MAX_MESSAGES else ""
    return f"Invalid inference request: {'; '.join(parts)}{more}"[:1000]


def _refuse_duplicate_keys(head: bytes) -> None:
    """Refuse an object with a repeated key, as every surface does (app.serving.json_keys)."""
    try:
        repeated = first_repeated_key(head)
    except (ValueError, RecursionError) as exc:
        raise BadTensor(f"The request header could not be read: {exc}"[:300]) from exc
    if repeated is not None:
        raise BadTensor(f"Duplicate key {repeated!r} in the request header")

"""An Open Inference Protocol `infer` call as the data plane sees it: a decoder (header, then
tensors to validated rows, and the request's `timeout` parameter) and an encoder (outputs, JSON
or binary as the request asked)."""

from collections.abc import Callable

from app.codecs.v2.header import parse_request
from app.codecs.v2.response import response_body
from app.codecs.v2.rows import timeout_of
from app.codecs.v2.tensors import request_rows
from app.serving.dataplane import Decoded
from app.serving.model import LoadedModel, ModelOutput
from schemas.v2 import InferenceRequest


def infer_request(
    body: bytes, header_length: str | None
) -> Callable[[LoadedModel], Decoded[InferenceRequest]]:
    """The decoder of one infer body; the parsed request is the context (it names the outputs)."""

    def decode(model: LoadedModel) -> Decoded[InferenceRequest]:
        request, tail = parse_request(body, header_length)
        return Decoded(request_rows(model, request, tail), request, timeout_of(request))

    return decode


def infer_reply(
    model: LoadedModel, output: ModelOutput, request: InferenceRequest
) -> tuple[bytes, dict[str, str]]:
    """The reply's body and headers (the binary extension's header length, when binary)."""
    return response_body(model, request, output)

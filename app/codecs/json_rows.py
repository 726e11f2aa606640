"""The friendly JSON surface's codec: `{"instances": [...]}` in, the prediction envelope out."""

from collections.abc import Callable

from app.codecs.replies import prediction_json
from app.serving.dataplane import Decoded
from app.serving.model import LoadedModel, ModelOutput


def json_request(body: bytes) -> Callable[[LoadedModel], Decoded[None]]:
    """The decoder of one JSON body: parsed and validated against the model's own schema."""
    return lambda model: Decoded(model.inputs.validate_json(body), None)


def json_reply(model: LoadedModel, output: ModelOutput, _: None) -> bytes:
    return prediction_json(model, output)

"""Typed FastAPI dependencies: routes declare what they need, never look things up themselves."""

from typing import Annotated

from fastapi import Depends, Path, Request

from app.config import Settings
from app.errors import MalformedBody, PayloadTooLarge, UnsupportedMediaType
from app.inference import LoadedModel
from app.registry import ModelRegistry

ModelName = Annotated[
    str, Path(description="Model name, as listed by GET /models.", examples=["iris"])
]
ModelVersion = Annotated[
    int, Path(ge=1, description="Model version (a positive integer).", examples=[1])
]


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.state.registry
    return registry


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_model(model_name: ModelName, registry: RegistryDep) -> LoadedModel:
    """The model's default version (404 if unknown, 503 if it could not be loaded)."""
    return registry.get(model_name)


def get_model_version(
    model_name: ModelName, version: ModelVersion, registry: RegistryDep
) -> LoadedModel:
    """A pinned version: an explicit version in the path always wins over the default."""
    return registry.get(model_name, version)


ModelDep = Annotated[LoadedModel, Depends(get_model)]
ModelVersionDep = Annotated[LoadedModel, Depends(get_model_version)]

_JSON_TYPES = ("application/json",)


async def read_json_body(request: Request, settings: SettingsDep) -> bytes:
    """The raw JSON body, refused early when it is too large or not JSON.

    The size check runs on the declared Content-Length first and again on the bytes as they
    stream in, so a chunked or lying client cannot make us buffer more than the limit.
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Send JSON (Content-Type: application/json), not {media_type!r}"
        )
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedBody("Invalid Content-Length header")
        if int(declared) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    if not body:
        raise MalformedBody('Request body is empty: send {"instances": [...]}')
    return bytes(body)


JsonBody = Annotated[bytes, Depends(read_json_body)]

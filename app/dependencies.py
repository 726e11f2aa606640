"""Typed FastAPI dependencies: routes declare what they need, never look things up themselves."""

import re
import secrets
from typing import Annotated

from fastapi import Cookie, Depends, Path, Request, Response, Security
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.errors import MalformedBody, Unauthorized, UnsupportedMediaType
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


SESSION_COOKIE = "modelport_session"
_SESSION_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,128}")
SessionCookie = Annotated[
    str | None,
    Cookie(
        alias=SESSION_COOKIE,
        description="Pins this client to one version of a model with a traffic split (set by the server).",
    ),
]


def get_model(
    model_name: ModelName,
    registry: RegistryDep,
    settings: SettingsDep,
    response: Response,
    session: SessionCookie = None,
) -> LoadedModel:
    """The version to serve when none is pinned (404 if unknown, 503 if it could not be loaded).

    With a traffic split, the session cookie picks the version; a client without a (valid)
    cookie gets a new one, so it stays on the version it was assigned.
    """
    entry = registry.entry(model_name)
    if not entry.split:
        return _served(registry.get(model_name), response)
    if session is None or not _SESSION_PATTERN.fullmatch(session):
        session = secrets.token_urlsafe(16)
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=settings.cookie_max_age,
            httponly=True,
            samesite="lax",
            secure=settings.cookie_secure,
        )
    return _served(registry.get(model_name, entry.route(session)), response)


def get_model_version(
    model_name: ModelName, version: ModelVersion, registry: RegistryDep, response: Response
) -> LoadedModel:
    """A pinned version: an explicit version in the path always wins over the split."""
    return _served(registry.get(model_name, version), response)


def _served(model: LoadedModel, response: Response) -> LoadedModel:
    response.headers["X-Model-Version"] = str(model.version)
    return model


ModelDep = Annotated[LoadedModel, Depends(get_model)]
ModelVersionDep = Annotated[LoadedModel, Depends(get_model_version)]

_JSON_TYPES = ("application/json",)


async def read_json_body(request: Request) -> bytes:
    """The raw JSON body (its size is bounded by BodyLimitMiddleware), refused early when the
    declared media type is not JSON."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Send JSON (Content-Type: application/json), not {media_type!r}"
        )
    body = await request.body()
    if not body:
        raise MalformedBody('Request body is empty: send {"instances": [...]}')
    return body


JsonBody = Annotated[bytes, Depends(read_json_body)]


_API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Required on prediction routes when MODELPORT_API_KEY is set.",
)


def require_api_key(
    settings: SettingsDep, offered: Annotated[str | None, Security(_API_KEY_HEADER)] = None
) -> None:
    """Prediction routes' guard: with an API key configured, the X-API-Key header must match it
    (compared in constant time, so response timing does not leak how much of a guess was right)."""
    expected = settings.api_key
    if expected is None:
        return
    if offered is None or not secrets.compare_digest(
        offered.encode(), expected.get_secret_value().encode()
    ):
        raise Unauthorized("Missing or invalid API key: send it in the X-API-Key header")


ApiKeyGuard = Depends(require_api_key)

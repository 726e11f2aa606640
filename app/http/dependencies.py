"""Typed FastAPI dependencies: routes declare what they need, never look things up themselves.

Every dependency is `async def` although none awaits: FastAPI runs a plain `def` dependency in
a worker thread, and four thread hops per request cost more than the whole prediction. The JSON
prediction routes, the hot path, are `DirectRoute`s (app.http.direct_route) that call the plain
functions underneath (`dataplane_of`, `read_json_body`) themselves: FastAPI's dependency
solving costs about as much as the rest of such a request together."""

import secrets
from typing import Annotated

from fastapi import Cookie, Depends, Path, Request, Response, Security
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.errors import MalformedBody, Unauthorized, UnsupportedMediaType
from app.serving.dataplane import DataPlane
from app.serving.model import LoadedModel
from app.serving.registry import ModelRegistry
from app.serving.repository import authorize_write
from app.serving.traffic import Routed

ModelName = Annotated[
    str, Path(description="Model name, as listed by GET /models.", examples=["iris"])
]
ModelVersion = Annotated[
    int, Path(ge=1, description="Model version (a positive integer).", examples=[1])
]


async def get_registry(request: Request) -> ModelRegistry:
    return registry_of(request)


async def get_dataplane(request: Request) -> DataPlane:
    return dataplane_of(request)


async def get_settings_dep(request: Request) -> Settings:
    return settings_of(request)


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


SESSION_COOKIE = "modelport_session"
SessionCookie = Annotated[
    str | None,
    Cookie(
        alias=SESSION_COOKIE,
        description="Pins this client to one version of a model with a traffic split (set by the server).",
    ),
]


def apply_routing(response: Response, routed: Routed, settings: Settings) -> None:
    """Put the routing headers on a response: X-Model-Version, and the session cookie if new."""
    headers = response.raw_headers
    headers.append((b"x-model-version", str(routed.model.version).encode()))
    if routed.new_session is not None:
        # Written out rather than with `set_cookie`, whose http.cookies machinery costs more
        # than the prediction on this path (clients without cookies, e.g. scripts, get a new
        # session on every request). The value is hex: no quoting needed.
        attributes = f"HttpOnly; Max-Age={settings.cookie_max_age}; Path=/; SameSite=lax"
        if settings.cookie_secure:
            attributes += "; Secure"
        cookie = f"{SESSION_COOKIE}={routed.new_session}; {attributes}"
        headers.append((b"set-cookie", cookie.encode("latin-1")))


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def registry_of(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.state.registry
    return registry


def dataplane_of(request: Request) -> DataPlane:
    dataplane: DataPlane = request.state.dataplane
    return dataplane


async def get_model(
    model_name: ModelName,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    response: Response,
    session: SessionCookie = None,
) -> LoadedModel:
    """The version to serve when none is pinned (the canary split may choose; see
    app.serving.traffic)."""
    routed = dataplane.resolve(model_name, None, session)
    apply_routing(response, routed, settings)
    return routed.model


async def get_model_version(
    model_name: ModelName,
    version: ModelVersion,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    response: Response,
) -> LoadedModel:
    """A pinned version: an explicit version in the path always wins over the split."""
    routed = dataplane.resolve(model_name, version, None)
    apply_routing(response, routed, settings)
    return routed.model


def routed_reply(
    content: bytes, routed: Routed, settings: Settings, media_type: str = "application/json"
) -> Response:
    """A reply the route serialised itself, with the routing headers."""
    reply = Response(content, media_type=media_type)
    apply_routing(reply, routed, settings)
    return reply


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


async def require_api_key(
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


async def require_repository_writes(
    settings: SettingsDep, offered: Annotated[str | None, Security(_API_KEY_HEADER)] = None
) -> None:
    """Repository writes' guard (load, unload): the API key when one is set, and writes turned
    on (app.serving.repository.authorize_write, which the gRPC service calls too)."""
    authorize_write(settings, offered)


RepositoryWriteGuard = Depends(require_repository_writes)

"""Typed FastAPI dependencies: routes declare what they need, never look things up themselves.

Every dependency is `async def` although none awaits: FastAPI runs a plain `def` dependency in
a worker thread, and four thread hops per request cost more than the whole prediction. The JSON
prediction routes, the hot path, call the plain functions underneath (`route_model`,
`read_json_body`) themselves, as `DirectRoute`s (app.routing): FastAPI's dependency solving
costs about as much as the rest of such a request together."""

import random
import re
import secrets
from dataclasses import dataclass
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


async def get_registry(request: Request) -> ModelRegistry:
    return registry_of(request)


async def get_settings_dep(request: Request) -> Settings:
    return settings_of(request)


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


@dataclass(frozen=True)
class Routed:
    """The version a request is served by, and the session cookie to set (a new client of a
    model with a traffic split)."""

    model: LoadedModel
    new_session: str | None = None

    def apply(self, response: Response, settings: Settings) -> None:
        """Put the routing headers on a response: X-Model-Version, and the cookie if new."""
        headers = response.raw_headers
        headers.append((b"x-model-version", str(self.model.version).encode()))
        if self.new_session is not None:
            # Written out rather than with `set_cookie`, whose http.cookies machinery costs more
            # than the prediction on this path (clients without cookies, e.g. scripts, get a new
            # session on every request). The value is URL-safe base64: no quoting needed.
            attributes = f"HttpOnly; Max-Age={settings.cookie_max_age}; Path=/; SameSite=lax"
            if settings.cookie_secure:
                attributes += "; Secure"
            cookie = f"{SESSION_COOKIE}={self.new_session}; {attributes}"
            headers.append((b"set-cookie", cookie.encode("latin-1")))


def route_model(
    registry: ModelRegistry, model_name: str, version: int | None, session: str | None
) -> Routed:
    """The version to serve (404 if unknown, 503 if it could not be loaded). A version in the
    path always wins; otherwise, with a traffic split, the session cookie picks the version,
    and a client without a (valid) cookie gets a new one, so it stays on the version it was
    assigned."""
    if version is not None:
        return Routed(registry.get(model_name, version))
    entry = registry.entry(model_name)
    if not entry.split:
        return Routed(registry.get(model_name))
    new_session = None
    if session is None or not _SESSION_PATTERN.fullmatch(session):
        # Not a credential (a client may pick any value, and so its bucket, anyway): `random`
        # (re-seeded in every forked worker) spares a system call on every cookie-less request.
        session = new_session = f"{random.getrandbits(128):032x}"
    return Routed(registry.get(model_name, entry.route(session)), new_session)


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def registry_of(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.state.registry
    return registry


async def get_model(
    model_name: ModelName,
    registry: RegistryDep,
    settings: SettingsDep,
    response: Response,
    session: SessionCookie = None,
) -> LoadedModel:
    """The version to serve when none is pinned (see `route_model`)."""
    routed = route_model(registry, model_name, None, session)
    routed.apply(response, settings)
    return routed.model


async def get_model_version(
    model_name: ModelName,
    version: ModelVersion,
    registry: RegistryDep,
    settings: SettingsDep,
    response: Response,
) -> LoadedModel:
    """A pinned version: an explicit version in the path always wins over the split."""
    routed = route_model(registry, model_name, version, None)
    routed.apply(response, settings)
    return routed.model


def routed_reply(
    content: bytes, routed: Routed, settings: Settings, media_type: str = "application/json"
) -> Response:
    """A reply the route serialised itself, with the routing headers."""
    reply = Response(content, media_type=media_type)
    routed.apply(reply, settings)
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

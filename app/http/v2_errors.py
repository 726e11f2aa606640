"""The Open Inference Protocol's error envelope, `{"error": "<message>"}`: all that tritonclient
and KServe's client read. Carried by the v2 routes themselves (`OipRoute`), so every error of
a v2 request, whatever raised it, answers in this shape; nothing looks at the URL.
"""

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from app.errors import one_line


def oip_envelope(status_code: int, kind: str, detail: Any) -> JSONResponse:
    # The protocol answers every bad request with 400, validation included.
    status_code = 400 if status_code == 422 else status_code
    return JSONResponse(status_code=status_code, content={"error": one_line(kind, detail)})


class OipRoute(APIRoute):
    """A route of the Open Inference Protocol surface: its errors take the protocol's envelope."""

    error_envelope = staticmethod(oip_envelope)


class OipFallbackRoute(OipRoute):
    """Matches what no other route of the protocol matches under its path (`/v2/{path}`), so an
    unknown v2 path is a 404 in the protocol's shape. A path another v2 route serves with other
    methods is left to that route (a 405, in the same shape). `siblings` is the router's own
    list of routes, set once the router is complete."""

    siblings: Sequence[BaseRoute] = ()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.NONE:
            return match, child_scope
        for route in self.siblings:
            if (
                isinstance(route, OipRoute)
                and not isinstance(route, OipFallbackRoute)
                and route.path_regex.match(scope["path"])
            ):
                return Match.NONE, {}
        return match, child_scope

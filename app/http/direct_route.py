"""`DirectRoute`: a FastAPI route for the hot path, without FastAPI's per-request solver.

FastAPI's request handler is general: it reads bodies, solves dependency graphs, opens exit
stacks for dependencies with `yield`, builds a sub-response for headers and cookies, serialises
return values. For an endpoint that takes only path parameters, cookies and the `Request`, and
returns a `Response` it built itself, that machinery costs more than the model call it surrounds
(iris, in-process: ~280 → ~180 µs of CPU per request, together with matching these routes first).
A `DirectRoute` documents the endpoint exactly like an `APIRoute` (its signature gives the
parameters, the OpenAPI operation is the same), and at request time validates each declared
path parameter and cookie with its own field (the same pydantic validation, the same 422 on
failure) and calls the endpoint.

A route with anything else to solve (dependencies such as the API-key guard, query parameters,
headers, a body) gets FastAPI's standard handler, and so does a DirectRoute included through
`include_router` (the including router may add dependencies the route itself does not list):
nothing is ever skipped silently. routers/predict.py adds its routes to the app's own router.
"""

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response, params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

# Set by FastAPI while it builds the handler of a route included through `include_router`
# (private, hence imported by name: a FastAPI without it fails here, at start-up, not silently).
from fastapi.routing import _effective_route_context_var as _inclusion
from starlette.types import ASGIApp, Receive, Scope, Send


class DirectRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self._is_direct():
            self.app = self._direct_app(self.get_route_handler())

    @staticmethod
    def _direct_app(handler: Callable[[Request], Coroutine[Any, Any, Response]]) -> ASGIApp:
        """The route as an ASGI app. FastAPI's own wrapper also opens two exit stacks for
        dependencies with `yield` (there are none) and maps exceptions to their handlers inside
        the route; here they reach Starlette's ExceptionMiddleware, which applies the same
        handlers, so every error answers exactly as on any other route."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(Request(scope, receive, send))
            await response(scope, receive, send)

        return app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        if _inclusion.get() is not None or not self._is_direct():
            return super().get_route_handler()
        endpoint = dependant.call
        assert endpoint is not None
        path_fields = dependant.path_params
        cookie_fields = dependant.cookie_params
        request_name = dependant.request_param_name
        assert request_name is not None

        async def handler(request: Request) -> Response:
            values: dict[str, Any] = {request_name: request}
            errors: list[Any] = []
            for field in path_fields:
                value, issues = field.validate(
                    request.path_params[field.alias], values, loc=("path", field.alias)
                )
                values[field.name] = value
                errors += issues
            if cookie_fields:
                cookies = request.cookies
                for field in cookie_fields:
                    offered = cookies.get(field.alias)
                    if offered is None:
                        values[field.name] = field.default
                        continue
                    value, issues = field.validate(offered, values, loc=("cookie", field.alias))
                    values[field.name] = value
                    errors += issues
            if errors:
                raise RequestValidationError(errors)
            response: Response = await endpoint(**values)
            return response

        return handler

    def _is_direct(self) -> bool:
        """Whether the endpoint takes nothing but path parameters, cookies and the Request."""
        dependant = self.dependant
        return (
            dependant.request_param_name is not None
            and not dependant.dependencies
            and not dependant.query_params
            and not dependant.header_params
            and not dependant.body_params
            and dependant.websocket_param_name is None
            and dependant.http_connection_param_name is None
            and dependant.response_param_name is None
            and dependant.background_tasks_param_name is None
            and all(not field.field_info.is_required() for field in dependant.cookie_params)
        )


def add_direct_routes(
    app: FastAPI,
    endpoints: Sequence[tuple[str, Callable[..., Any]]],
    *,
    tag: str,
    guard: Sequence[params.Depends],
    **operation: Any,
) -> None:
    """POST `endpoints` (path, endpoint) as `DirectRoute`s on the app's own router, ahead of
    every included router (FastAPI matches an included router's routes twice per request).
    `guard` is the API-key guard when a key is configured: a route with a dependency takes
    FastAPI's standard handler. `operation`: the rest of the routes' OpenAPI (responses,
    openapi_extra, response_model)."""
    for path, endpoint in endpoints:
        app.router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            tags=[tag],
            dependencies=guard,
            route_class_override=DirectRoute,
            **operation,
        )

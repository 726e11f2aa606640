"""DirectRoute (app.http.direct_route) in a real FastAPI app: parameters validated as FastAPI validates
them, errors through the app's handlers, and nothing skipped when there is more to solve."""

from collections.abc import Sequence
from typing import Annotated

from fastapi import (
    APIRouter,
    Cookie,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Request,
    Response,
    params,
)
from fastapi.testclient import TestClient

from app.http.direct_route import DirectRoute


async def echo(
    name: str,
    number: Annotated[int, Path(ge=1)],
    request: Request,
    flavour: Annotated[str | None, Cookie()] = None,
) -> Response:
    return Response(f"{name} {number} {flavour} {request.method}")


def refuse() -> None:
    raise HTTPException(status_code=403, detail="refused by the dependency")


def direct_app(dependencies: Sequence[params.Depends] = ()) -> FastAPI:
    app = FastAPI()
    app.router.add_api_route(
        "/echo/{name}/{number}",
        echo,
        dependencies=dependencies,
        route_class_override=DirectRoute,
    )
    return app


def test_parameters_and_cookies_reach_the_endpoint_validated() -> None:
    with TestClient(direct_app()) as client:
        client.cookies.set("flavour", "mint")
        assert client.get("/echo/a/7").text == "a 7 mint GET"


def test_invalid_parameters_answer_422_as_any_fastapi_route_does() -> None:
    plain = FastAPI()
    plain.get("/echo/{name}/{number}")(echo)
    for path in ("/echo/a/0", "/echo/a/x"):
        with TestClient(direct_app()) as direct, TestClient(plain) as reference:
            answer, expected = direct.get(path), reference.get(path)
        assert answer.status_code == expected.status_code == 422
        assert answer.json() == expected.json()


def test_a_route_with_a_dependency_runs_it() -> None:
    with TestClient(direct_app(dependencies=[Depends(refuse)])) as client:
        assert client.get("/echo/a/7").status_code == 403


def test_an_included_route_keeps_the_including_routers_dependencies() -> None:
    router = APIRouter(route_class=DirectRoute)
    router.get("/echo/{name}/{number}")(echo)
    app = FastAPI()
    app.include_router(router, dependencies=[Depends(refuse)])
    with TestClient(app) as client:
        assert client.get("/echo/a/7").status_code == 403

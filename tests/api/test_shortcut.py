"""``Shortcut``: routes answered ahead of the router, as the router would answer them."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from nextoffer.api.errors import exception_handlers
from nextoffer.api.shortcut import Shortcut
from nextoffer.errors import BadRequest

calls: list[dict[str, object]] = []


async def hot(request: Request) -> Response:
    calls.append(
        {
            "route": request.scope["route"].path,
            "params": dict(request.path_params),
            "endpoint": request.scope["endpoint"],
        }
    )
    if request.query_params.get("fail") == "bad":
        raise BadRequest("bad on purpose", pointer="fail")
    if request.query_params.get("fail") == "bug":
        raise RuntimeError("a bug")
    return JSONResponse({"container": request.path_params["container_id"]})


async def other(request: Request) -> Response:
    return JSONResponse({"other": True})


HOT = Route("/c/{container_id}/hot", hot, methods=["POST"])


def client(*, in_router: bool, root_path: str = "") -> TestClient:
    routes = [Route("/other", other, methods=["GET"])]
    if in_router:
        routes.append(HOT)
    app = Starlette(
        routes=routes,
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        middleware=[Middleware(Shortcut, routes=[HOT], handlers=exception_handlers)],
    )
    return TestClient(app, raise_server_exceptions=False, root_path=root_path)


def test_the_route_is_served_without_the_router_with_the_scope_the_router_sets() -> None:
    calls.clear()
    # Not in the router at all: only the shortcut can answer it.
    response = client(in_router=False).post("/c/abc/hot")
    assert response.status_code == 200
    assert response.json() == {"container": "abc"}
    assert calls == [
        {"route": "/c/{container_id}/hot", "params": {"container_id": "abc"}, "endpoint": hot}
    ]


def test_errors_go_through_the_same_handlers_as_routed_requests() -> None:
    response = client(in_router=False).post("/c/abc/hot?fail=bad")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["pointer"] == "fail"
    unexpected = client(in_router=False).post("/c/abc/hot?fail=bug")
    assert unexpected.status_code == 500  # the server-error middleware's handler
    assert unexpected.json()["type"].endswith("/internal")
    assert "a bug" not in unexpected.text


def test_other_methods_and_paths_go_on_to_the_router() -> None:
    with_router = client(in_router=True)
    assert with_router.get("/other").json() == {"other": True}
    wrong_method = with_router.get("/c/abc/hot")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert with_router.post("/c/abc/hot/extra").status_code == 404


def test_a_root_path_is_not_part_of_the_matched_path() -> None:
    response = client(in_router=False, root_path="/api").post("/api/c/xyz/hot")
    assert response.status_code == 200
    assert response.json() == {"container": "xyz"}


def test_a_synchronous_endpoint_is_refused_when_the_app_is_built() -> None:
    def sync(request: Request) -> Response:
        return JSONResponse({})

    with pytest.raises(TypeError, match="async endpoint"):
        Shortcut(other, routes=[Route("/s", sync, methods=["POST"])], handlers={})

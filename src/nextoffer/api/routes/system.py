"""Endpoints without credentials: liveness and the OpenAPI document."""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def healthz(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@cache
def _openapi() -> bytes:
    return resources.files("nextoffer.api").joinpath("openapi.json").read_bytes()


async def openapi(_request: Request) -> Response:
    return Response(_openapi(), media_type="application/json")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]

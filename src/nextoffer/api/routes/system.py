"""Endpoints without credentials: liveness, the OpenAPI document and Prometheus metrics."""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api.metrics import CONTENT_TYPE
from nextoffer.errors import NotFound


async def healthz(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@cache
def _openapi() -> bytes:
    return resources.files("nextoffer.api").joinpath("openapi.json").read_bytes()


async def openapi(_request: Request) -> Response:
    return Response(_openapi(), media_type="application/json")


async def metrics(request: Request) -> Response:
    """Prometheus text format; 404 when metrics are off (``NEXTOFFER_METRICS=0``)."""
    registry = request.app.state.metrics
    if registry is None:
        raise NotFound("metrics are switched off on this server")
    return Response(registry.render(), media_type=CONTENT_TYPE)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

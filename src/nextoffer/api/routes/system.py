"""Endpoints without credentials: liveness, readiness, the OpenAPI document and Prometheus
metrics."""

from __future__ import annotations

import asyncio
import math
import time
from functools import cache
from importlib import resources

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api.metrics import CONTENT_TYPE
from nextoffer.errors import NotFound
from nextoffer.root import NextOffer


async def healthz(_request: Request) -> Response:
    """Liveness: the process answers (nothing else is reached)."""
    return Response(b'{"status":"ok"}', media_type="application/json")


#: Seconds a readiness answer is reused, and the longest a check may take. Balancers
#: probe every few seconds each, and the endpoint needs no credentials: the database sees
#: at most one probe query a second per process, whoever asks.
READY_REUSE_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 2.0


class Readiness:
    """One process's answer to ``GET /readyz``, checked at most every
    :data:`READY_REUSE_SECONDS`; probes arriving during a check share it.

    A check that outlasts :data:`READY_TIMEOUT_SECONDS` is answered ``"timeout"`` but left
    to finish: its pool thread cannot be interrupted (a blackholed store holds it until
    the driver gives up), so probes meanwhile wait on that one check rather than start
    another, and a hung store takes one thread of the pool, not one per probe."""

    def __init__(self) -> None:
        self._checked = -math.inf
        self._answer: dict[str, str] = {}
        self._checking: asyncio.Future[dict[str, str]] | None = None
        #: What the check under way has found so far (``NextOffer.readiness``).
        self._progress: dict[str, str] = {}

    async def answer(self, no: NextOffer) -> dict[str, str]:
        if time.monotonic() - self._checked < READY_REUSE_SECONDS:
            return self._answer
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check(no))
        try:
            return await asyncio.wait_for(asyncio.shield(self._checking), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            # Reused as any answer: probes meanwhile are told at once, the check left on.
            # The store it waits for is the one that hangs; those it passed answered.
            found = list(self._progress.items())
            answer = {name: "timeout" if v == "checking" else v for name, v in found}
            self._answer, self._checked = answer or {"database": "timeout"}, time.monotonic()
            return self._answer

    async def _check(self, no: NextOffer) -> dict[str, str]:
        progress: dict[str, str] = {}
        self._progress = progress
        try:
            answer = await no.run(no.readiness, progress)
        finally:
            self._checking = None
        self._answer, self._checked = answer, time.monotonic()
        return answer


async def readyz(request: Request) -> Response:
    """Readiness: ``200`` when the stores a decision needs answer, else ``503``; each
    check by name (``database``, ``counters`` with Redis), no detail of the stores."""
    checks = await request.app.state.readiness.answer(request.app.state.nextoffer)
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return Response(
        orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json"
    )


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
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]

"""Recorded decisions served over granian's RSGI interface with no framework at all.

    NEXTOFFER_DB=sqlite:///… .venv/bin/python -m granian --interface rsgi \
        --working-dir bench rsgi_decide:app
    (``http_decisions.py --rsgi`` runs it, as httpbench's ``granian-rsgi`` stack)

A bound, not a server: the fastest path a Python-hosted decision can take, a Rust HTTP
server (granian) calling one coroutine per request with nothing between them. ``POST
/data/core/ode/{container}/decisions`` does only the use case's own steps, those of
``bench/asgi_decide.py --layers``' route with no framework: the headers in a dict,
``auth.authenticate``, the body parsed by ``decision_request.parse``, ``decide_async``
(recorded, as nextoffer's route records it), ``decision_response.response`` serialised by
orjson. None of what nextoffer's route does beyond that: no Starlette, no middleware, no
content-type or body-size checks, no ``2019`` request form, no access log, no metrics, no
request id, no error mapping — an error raised here answers granian's bare 500 (the
benchmark counts every non-2xx answer as an error, as wrk does). ``GET /rsgi`` answers a
constant 15-byte JSON body: a bare RSGI app, the reference the same way ``GET /asgi`` is
for uvicorn (``httpbench.py``). ``GET /healthz`` answers the same, for a start's wait.

Each worker process opens its own :class:`NextOffer` from ``NEXTOFFER_*`` settings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from nextoffer.api import decision_request, decision_response
from nextoffer.api.media import DECISION_RESPONSE
from nextoffer.root import NextOffer
from nextoffer.settings import Settings

BARE_BODY = b'{"status":"ok"}'
JSON = [("content-type", "application/json")]
DECISION = [("content-type", DECISION_RESPONSE)]
NOT_FOUND = b'{"status":404}'
#: ``/data/core/ode/{container}/decisions``, split on ``/``.
PREFIX = ("", "data", "core", "ode")
SUFFIX = "decisions"


class App:
    """The RSGI app of one worker process (granian loads it in each)."""

    def __init__(self) -> None:
        self.no: NextOffer | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # granian calls this in the worker process, on the thread that then runs ``loop``,
        # before the loop runs. Opening needs that thread (nextoffer's lifespan opens its
        # root on the loop's thread too), not a running loop: what belongs to a loop, the
        # decision path's batches, is made at the first decision on it. So no lazy open on
        # the first request: a worker that cannot open fails at its start, in its log,
        # instead of answering 500s.
        self.no = NextOffer.open(Settings.from_env())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        # After the loop stopped: the decision path writes what it still queued.
        if self.no is not None:
            self.no.close()
            self.no = None

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path = scope.path
        if path in ("/rsgi", "/healthz"):
            proto.response_bytes(200, JSON, BARE_BODY)
            return
        parts = path.split("/")
        if (
            scope.method != "POST"
            or len(parts) != 6
            or tuple(parts[:4]) != PREFIX
            or parts[5] != SUFFIX
        ):
            proto.response_bytes(404, JSON, NOT_FOUND)
            return
        no = self.no
        assert no is not None, "__rsgi_init__ opens it"
        principal = no.auth.authenticate(dict(scope.headers.items()))
        call, fmt = decision_request.parse(orjson.loads(await proto()))
        outcome = await no.decide_async(principal, parts[4], call)
        body = decision_response.response(
            outcome, fmt, decision_request_id=call.decision_request_id
        )
        proto.response_bytes(200, DECISION, orjson.dumps(body))


app = App()

"""The application factory: ``create_app(settings)`` builds everything, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from nextoffer.api.access_log import AccessLog, Observe
from nextoffer.api.errors import exception_handlers
from nextoffer.api.metrics import FLUSH_SECONDS, Metrics
from nextoffer.api.routes import (
    batch,
    datastreams,
    dps,
    edge,
    ode,
    profiles,
    reports,
    search,
    system,
    xcore,
)
from nextoffer.api.shortcut import Shortcut
from nextoffer.api.url_guard import UrlGuard
from nextoffer.console import routes as console_routes
from nextoffer.errors import Unavailable
from nextoffer.logs import Throttled
from nextoffer.root import NextOffer
from nextoffer.settings import Settings

log = logging.getLogger("nextoffer.api")

#: Seconds between two tries to open a worker's root while the database is away.
OPEN_RETRY_SECONDS = 1.0


async def _open(settings: Settings, **hooks: Any) -> NextOffer:
    """``NextOffer.open``, tried again every :data:`OPEN_RETRY_SECONDS` while the database
    (or Redis) cannot be reached: a worker restarted during an outage waits for it instead
    of failing its start, which makes uvicorn stop every worker of the node, those still
    serving decisions from their snapshots included. ``serve`` checks the stores before
    any worker starts, so a wrong address is refused there, at once."""
    waiting = Throttled(log)  # a line every ten seconds while it waits
    while True:
        try:
            # On the loop's thread, as before the retries: what it opens is the loop's.
            return NextOffer.open(settings, **hooks)
        except Unavailable as exc:
            waiting.error("the worker's start waits for the database: %s", exc)
            await asyncio.sleep(OPEN_RETRY_SECONDS)


def create_app(
    settings: Settings | None = None, *, nextoffer: NextOffer | None = None
) -> Starlette:
    """The ASGI app. Its :class:`NextOffer` is opened and closed by the lifespan, unless
    ``nextoffer`` is given (then its owner closes it)."""
    settings = settings or (nextoffer.settings if nextoffer is not None else Settings.from_env())
    metrics = Metrics() if settings.metrics else None
    access_log = AccessLog() if settings.access_log else None

    async def flusher() -> None:
        # Observations wait in per-process buffers while requests keep coming; this
        # pushes them out when the server goes quiet.
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            if metrics is not None:
                metrics.flush()
            if access_log is not None:
                access_log.flush()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = nextoffer is None
        no = nextoffer or await _open(
            settings,
            on_rebuild=metrics.catalog_rebuilt if metrics else None,
            on_refused=metrics.cap_refused if metrics else None,
        )
        app.state.nextoffer = no
        flushing = (
            asyncio.get_running_loop().create_task(flusher()) if metrics or access_log else None
        )
        # Snapshots are built in the background: the worker serves at once, and a decision
        # arriving meanwhile waits for its container's build instead of starting another.
        warming = (
            asyncio.ensure_future(no.run(no.decisions.warm))
            if owned and settings.warm_catalogs
            else None
        )
        if owned and settings.batch_runner:  # queued batch jobs, and dead ones (issue 18)
            no.batch.start()
        if owned:  # events past their retention, when the operator set one
            no.retention.start()
        try:
            yield
        finally:
            if warming is not None:
                with contextlib.suppress(Exception):
                    await warming
            if flushing is not None:
                flushing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flushing
            if access_log is not None:
                access_log.flush()
            if owned:
                await no.aclose()

    app = Starlette(
        # ``POST …/decisions`` and ``POST /ee/…`` never reach the router: ``Shortcut``
        # serves them first. The paths do not overlap, so the order below is free.
        routes=[
            *ode.routes,
            *system.routes,
            *search.routes,
            *xcore.routes,
            *profiles.routes,
            *reports.routes,
            *dps.routes,
            *console_routes(),  # the console, at /console/ (issue 19)
            *datastreams.routes,
            *edge.routes,
            *batch.routes,  # issue 18
        ],
        exception_handlers=exception_handlers,
        middleware=[
            Middleware(Observe, metrics=metrics, access_log=access_log),
            Middleware(UrlGuard),
            Middleware(
                Shortcut, routes=[ode.DECISIONS, *edge.INTERACT], handlers=exception_handlers
            ),
        ],
        lifespan=lifespan,
    )
    # A path with a slash too many is an unknown route: a 404, as docs/api.md says, not
    # a 307 to the path without it (the console's own router, under its Mount, still
    # redirects its pages').
    app.router.redirect_slashes = False
    app.state.metrics = metrics
    app.state.readiness = system.Readiness()
    return app

"""The application factory: ``create_app(settings)`` builds everything, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from nextoffer.api.access_log import AccessLog, Observe
from nextoffer.api.context import Services, run
from nextoffer.api.errors import exception_handlers
from nextoffer.api.metrics import FLUSH_SECONDS, Metrics
from nextoffer.api.routes import ode, profiles, reports, search, system, xcore
from nextoffer.api.shortcut import Shortcut
from nextoffer.ids import IdFactory, utcnow
from nextoffer.service.auth import Authenticator
from nextoffer.service.catalogs import CatalogCache
from nextoffer.service.decisions import Decisions
from nextoffer.service.events import Events
from nextoffer.service.profiles import Profiles
from nextoffer.service.reports import Reports
from nextoffer.service.repository import Repository
from nextoffer.settings import Settings
from nextoffer.storage.counters import CapCounterStore, SqlCounters
from nextoffer.storage.store import Store


def build_services(
    settings: Settings, store: Store | None = None, *, metrics: Metrics | None = None
) -> Services:
    store = store or Store.open(settings.db_url, pool_size=settings.db_pool_size)
    catalogs = CatalogCache(
        store,
        clock=utcnow,
        check_interval=settings.catalog_check_seconds,
        on_rebuild=metrics.catalog_rebuilt if metrics else None,
        freeze_heap=settings.freeze_heap,
    )
    repository = Repository(store, ids=IdFactory(), clock=utcnow, on_change=catalogs.invalidate)
    counters: CapCounterStore = SqlCounters(store)
    if settings.redis_url:  # shared by every node; redis is an optional dependency
        from nextoffer.storage.redis_counters import RedisCounters

        counters = RedisCounters.from_url(settings.redis_url)
    return Services(
        settings=settings,
        store=store,
        auth=Authenticator(store),
        repository=repository,
        profiles=Profiles(store, clock=utcnow),
        events=Events(store, counters=counters, catalogs=catalogs, clock=utcnow),
        decisions=Decisions(
            store,
            repository=repository,
            catalogs=catalogs,
            counters=counters,
            clock=utcnow,
            on_refused=metrics.cap_refused if metrics else None,
        ),
        reports=Reports(store, repository=repository),
    )


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Starlette:
    """The ASGI app. The database is opened in the lifespan unless ``services`` is given."""
    settings = settings or Settings.from_env()
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
        owned = services is None
        app.state.services = services or build_services(settings, metrics=metrics)
        flushing = (
            asyncio.get_running_loop().create_task(flusher()) if metrics or access_log else None
        )
        # Snapshots are built in the background: the worker serves at once, and a decision
        # arriving meanwhile waits for its container's build instead of starting another.
        warming = (
            asyncio.ensure_future(run(app.state.services.decisions.warm))
            if owned and settings.warm_catalogs
            else None
        )
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
                app.state.services.store.close()

    app = Starlette(
        # The decision routes first: the router tries routes in order, and a decision is
        # the request that has to be cheap (the paths do not overlap, so order is free).
        routes=[
            *ode.routes,
            *system.routes,
            *search.routes,
            *xcore.routes,
            *profiles.routes,
            *reports.routes,
        ],
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        middleware=[
            Middleware(Observe, metrics=metrics, access_log=access_log),
            Middleware(Shortcut, routes=[ode.DECISIONS], handlers=exception_handlers),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    return app

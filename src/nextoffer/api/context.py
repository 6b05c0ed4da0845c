"""What a route needs from the application: the services, the settings, the caller."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from nextoffer.api.bodies import read_json
from nextoffer.service.auth import Authenticator, Principal
from nextoffer.service.decisions import Decisions
from nextoffer.service.events import Events
from nextoffer.service.profiles import Profiles
from nextoffer.service.reports import Reports
from nextoffer.service.repository import Repository
from nextoffer.settings import Settings
from nextoffer.storage.store import Store

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    auth: Authenticator
    repository: Repository
    profiles: Profiles
    events: Events
    decisions: Decisions
    reports: Reports


def services(request: Request) -> Services:
    value: Services = request.app.state.services
    return value


def authenticate(request: Request) -> Principal:
    """The caller; verified tokens and clients are cached, so this rarely does IO."""
    return services(request).auth.authenticate(request.headers)


async def body_json(request: Request) -> Any:
    settings = services(request).settings
    return await read_json(
        request, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
    )


_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        # The standard library's default size (6 threads on 2 cores), not anyio's 40:
        # fewer threads contend for the GIL and the connection pool, and the hop itself
        # is cheaper (decisions over HTTP +16-19 %, docs/benchmarks.md).
        size = min(32, (os.cpu_count() or 1) + 4)
        _executor = ThreadPoolExecutor(size, thread_name_prefix="nextoffer")
    return _executor


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking service work (it opens a database transaction) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        _pool(), functools.partial(fn, *args, **kwargs)
    )


async def finished(future: Future[Any]) -> None:
    """Wait until ``future`` is done (its outcome stays in it).

    ``asyncio.wrap_future`` hands every outcome over with ``call_soon_threadsafe``, which
    wakes the loop through its self-pipe (a system call per decision). The decision path
    resolves records on the loop's own thread, so the outcome is passed on directly there,
    and through ``call_soon_threadsafe`` only from other threads. As with ``wrap_future``,
    a cancelled wait cancels ``future`` (a record not yet taken by its batch is dropped).
    """
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    home = threading.get_ident()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def done(_: Future[Any]) -> None:
        if threading.get_ident() == home:
            wake()
        else:
            loop.call_soon_threadsafe(wake)

    future.add_done_callback(done)
    try:
        await waiter
    except asyncio.CancelledError:
        future.cancel()
        raise

"""What a route needs from the application: the services, the settings, the caller."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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

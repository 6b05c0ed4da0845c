"""Blocking work and the event loop: :func:`in_pool` runs a call that opens a database
transaction in the root's thread pool; :func:`finished` awaits a record's future.

Use cases with an ``async`` form (``Decisions.decide_async``, ``Repository.get_async``)
call these when their storage strategy is not ``inline``; routes never choose.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


async def in_pool(executor: Executor | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in ``executor`` (the loop's default when ``None``)."""
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(fn, *args, **kwargs)
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

"""Blocking work and the event loop: :func:`in_pool` runs a call that opens a database
transaction in the root's thread pool; :func:`finished` awaits a record's future, and
:func:`in_thread` refuses to let a thread wait for one only its loop resolves.

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


def in_thread(future: Future[T] | asyncio.Future[T]) -> Future[T]:
    """``future`` as one a thread can wait for: a running loop's own future is resolved by
    that loop only, so the loop's thread waiting for it would wait forever — refused."""
    if isinstance(future, asyncio.Future):
        raise RuntimeError(
            "a record queued on the running event loop is awaited there (decide_async), "
            "not waited for in its thread"
        )
    return future


async def in_pool(executor: Executor | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in ``executor`` (the loop's default when ``None``)."""
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(fn, *args, **kwargs)
    )


async def finished(future: Future[Any] | asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done (its outcome stays in it).

    The running loop's own future (a record the loop writes itself, ``SqlitePath``) is
    awaited as it is; its error, if any, stays in it for the caller to read, and a
    cancelled wait cancels it (its batch then skips the record).

    ``asyncio.wrap_future`` hands every outcome over with ``call_soon_threadsafe``, which
    wakes the loop through its self-pipe (a system call per decision). The decision path
    resolves records on the loop's own thread, so the outcome is passed on directly there,
    and through ``call_soon_threadsafe`` only from other threads. As with ``wrap_future``,
    a cancelled wait cancels ``future`` (a record not yet taken by its batch is dropped).
    """
    if isinstance(future, asyncio.Future):
        try:
            await future
        except asyncio.CancelledError:
            raise
        except Exception:  # the outcome stays in ``future``; settle() reads it
            pass
        return
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

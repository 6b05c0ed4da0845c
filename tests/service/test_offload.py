"""``service.offload.finished``: waiting on the event loop for a record's future."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from nextoffer.service.offload import finished, in_thread


def test_a_future_resolved_on_the_loop_thread_wakes_the_waiter_directly() -> None:
    async def main() -> object:
        future: Future[object] = Future()
        loop = asyncio.get_running_loop()
        woken_through_the_pipe = []
        threadsafe = loop.call_soon_threadsafe

        def counting(*args: object) -> object:
            woken_through_the_pipe.append(args)
            return threadsafe(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        loop.call_soon(future.set_result, "written")
        await asyncio.wait_for(finished(future), timeout=5)
        assert woken_through_the_pipe == []
        return future.result()

    assert asyncio.run(main()) == "written"


def test_a_future_resolved_on_another_thread_wakes_the_waiter_through_the_loop() -> None:
    async def main() -> BaseException | None:
        future: Future[object] = Future()
        threading.Timer(0.01, future.set_exception, (RuntimeError("lost"),)).start()
        await asyncio.wait_for(finished(future), timeout=5)
        return future.exception()

    error = asyncio.run(main())
    assert isinstance(error, RuntimeError)


def test_a_future_already_done_returns_at_once() -> None:
    async def main() -> None:
        future: Future[object] = Future()
        future.set_result([])
        await asyncio.wait_for(finished(future), timeout=1)

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["thread-safe", "the loop's own"])
def test_a_cancelled_wait_cancels_the_future_not_yet_taken(kind: str) -> None:
    async def main() -> Future[object] | asyncio.Future[object]:
        future: Future[object] | asyncio.Future[object] = (
            Future() if kind == "thread-safe" else asyncio.get_running_loop().create_future()
        )
        task = asyncio.ensure_future(finished(future))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return future

    assert asyncio.run(main()).cancelled()


def test_the_loop_s_own_future_is_awaited_and_its_error_stays_in_it() -> None:
    async def main() -> BaseException | None:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_exception, RuntimeError("lost"))
        await asyncio.wait_for(finished(future), timeout=5)  # does not raise
        return future.exception()

    assert isinstance(asyncio.run(main()), RuntimeError)


def test_a_thread_may_not_wait_for_a_future_only_its_loop_resolves() -> None:
    async def main() -> None:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        with pytest.raises(RuntimeError, match="decide_async"):
            in_thread(future)
        plain: Future[object] = Future()
        assert in_thread(plain) is plain

    asyncio.run(main())

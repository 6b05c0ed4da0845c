"""The decision path's coroutines on an event loop (``DecisionPath.on_loop``): PostgreSQL's
reads on asynchronous connections and its records awaited there, and Redis reservations
through the asyncio client (``CountersElsewhere``). Real servers; caps stay exact when
many decisions of one loop reserve at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
import redis
import uvloop

from nextoffer.errors import BadRequest, Conflict, Unavailable
from nextoffer.storage.counters import CounterKey, SqlCounters
from nextoffer.storage.decision_path import CountersElsewhere, OnLoop
from nextoffer.storage.pg_path import PgPath
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.report_fold import FOLD_SECONDS, PG_LOCK
from nextoffer.storage.store import Store
from support.backends import emptied_database, redis_url
from support.decision_path_contract import (
    CONTAINER,
    A,
    B,
    add_events,
    add_profile,
    events_of,
    record,
    report,
    stored,
)


@pytest.fixture
def opened() -> Iterator[tuple[Store, PgPath]]:
    store = Store.open(emptied_database(), pool_size=10)
    path = PgPath(store)
    yield store, path
    path.close()
    store.close()


def loop_of(path: PgPath | CountersElsewhere) -> OnLoop:
    assert path.on_loop is not None
    return path.on_loop


def test_reads_on_the_loop_answer_as_the_path_s_reads(opened: tuple[Store, PgPath]) -> None:
    store, path = opened
    add_profile(store, "p-1", [("Email", "a@x"), ("ECID", "1")], {"tier": "gold"})
    add_events(store, "p-1", [(1, 10), (2, 30), (3, 20)])
    SqlCounters(store).add([A], 3)
    on = loop_of(path)

    async def main() -> None:
        try:
            assert await on.profile("O@AdobeOrg", "prod", "ECID", "1") == ("p-1", {"tier": "gold"})
            assert await on.profile("O@AdobeOrg", "prod", "Email", "b@x") is None
            assert await on.profile("Other@AdobeOrg", "prod", "Email", "a@x") is None
            events = await on.events("p-1", limit=2)
            assert events == path.events("p-1", limit=2)
            assert [e["n"] for e in events] == [3, 2]  # the newest two, oldest first
            assert await on.counts([A, B]) == {A: 3} == path.counts([A, B])
            assert await on.counts([]) == {}
            # Many reads at once share the loop's few connections.
            found = await asyncio.gather(
                *(on.profile("O@AdobeOrg", "prod", "Email", "a@x") for _ in range(40))
            )
            assert set(map(repr, found)) == {repr(("p-1", {"tier": "gold"}))}
        finally:
            await on.aclose()

    asyncio.run(main())


def test_records_awaited_on_the_loop_reserve_caps_exactly(opened: tuple[Store, PgPath]) -> None:
    store, path = opened
    on = loop_of(path)
    limit, decisions = 25, 60

    async def main() -> list[list[CounterKey]]:
        try:
            return await asyncio.gather(
                *(on.record(record(offers=["o-1"], reserve=[(A, limit)])) for _ in range(decisions))
            )
        finally:
            await on.aclose()

    outcomes = asyncio.run(main())
    assert outcomes.count([]) == limit
    assert outcomes.count([A]) == decisions - limit
    assert path.counts([A]) == {A: limit}
    assert len(events_of(store)) == limit
    assert report(store) == {"o-1": limit}


def test_the_loop_writer_folds_the_report_without_a_report_read(
    opened: tuple[Store, PgPath],
) -> None:
    store, path = opened
    on = loop_of(path)

    async def main() -> None:
        try:
            await asyncio.gather(*(on.record(record(offers=["o-1", "o-2"])) for _ in range(7)))
            # No further record comes: the writer comes back for the events on its own.
            await asyncio.sleep(FOLD_SECONDS * 4)
            assert report(store, folded=False) == {"o-1": 7, "o-2": 7}
        finally:
            await on.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_close_on_the_loop_ends_its_writer_s_open_transaction(
    opened: tuple[Store, PgPath], run: Callable[[Coroutine[Any, Any, None]], None]
) -> None:
    # The app's lifespan closes the root on the loop's thread: a transaction the loop's
    # writer has open (a batch, a fold) must not hold the lock the last fold waits for.
    store, path = opened
    on = loop_of(path)
    path.fold()  # the watermark's row exists

    async def main() -> None:
        await on.record(record(offers=["o-1"]))
        writer = on._loops[asyncio.get_running_loop()].writer  # type: ignore[attr-defined]
        assert writer is not None
        await writer.execute("BEGIN")
        await writer.execute("SELECT position FROM report_folds WHERE name = 'offers' FOR UPDATE")
        path.close()  # folds on the writer thread's connection: needs that row

    run(main())
    assert report(store, folded=False) == {"o-1": 1}


def test_two_nodes_writers_on_loops_reserve_the_same_counters_exactly(
    opened: tuple[Store, PgPath],
) -> None:
    store, path = opened
    other = PgPath(store)  # another node: its own connections and batches
    ours, theirs = loop_of(path), loop_of(other)
    limit, decisions = 25, 80

    async def main() -> list[list[CounterKey]]:
        try:
            return await asyncio.gather(
                *(
                    # Both counters, listed in either order: the batches lock them in key
                    # order, so the two writers queue instead of deadlocking.
                    (ours if n % 2 else theirs).record(
                        record(
                            reserve=[(A, limit), (B, limit)] if n % 3 else [(B, limit), (A, limit)]
                        )
                    )
                    for n in range(decisions)
                )
            )
        finally:
            await ours.aclose()
            await theirs.aclose()

    try:
        outcomes = asyncio.run(main())
    finally:
        other.close()
    assert outcomes.count([]) == limit
    assert path.counts([A, B]) == {A: limit, B: limit}
    assert len(events_of(store)) == limit


def test_a_conflict_on_the_loop_fails_only_its_record(opened: tuple[Store, PgPath]) -> None:
    store, path = opened
    on = loop_of(path)
    first = record(reserve=[(A, 5)])

    async def main() -> None:
        try:
            assert await on.record(first) == []
            with pytest.raises(Conflict):
                await on.record(replace(first, proposition_id=first.proposition_id))
            assert await on.record(record(reserve=[(A, 5)])) == []
        finally:
            await on.aclose()

    asyncio.run(main())
    assert path.counts([A]) == {A: 2}
    assert stored(store, first.proposition_id) == dict(first.body or {})


def test_a_batch_of_events_alone_fails_only_its_stored_and_repeated_ids(
    opened: tuple[Store, PgPath],
) -> None:
    # No counter reserved: the batch is one statement (``_A_EVENTS_ONLY``), its stored ids
    # found by the insert itself.
    store, path = opened
    on = loop_of(path)
    first = record(offers=["o-1"], note="first")
    twin = record(offers=["o-2"], note="twin")

    async def main() -> list[Any]:
        try:
            assert await on.record(first) == []
            # Queued in one pass of the loop: one batch.
            return await asyncio.gather(
                on.record(replace(first, body={"x": 1})),
                on.record(record(offers=["o-3"])),
                on.record(twin),
                on.record(replace(twin, body={"x": 2})),
                return_exceptions=True,
            )
        finally:
            await on.aclose()

    again, fresh, twin_first, twin_again = asyncio.run(main())
    assert isinstance(again, Conflict)
    assert fresh == [] and twin_first == []
    assert isinstance(twin_again, Conflict)
    assert stored(store, first.proposition_id) == dict(first.body or {})
    assert stored(store, twin.proposition_id) == dict(twin.body or {})
    assert len(events_of(store)) == 3
    assert report(store) == {"o-1": 1, "o-2": 1, "o-3": 1}


def test_a_batch_of_events_alone_is_numbered_only_once_a_fold_lets_go(
    opened: tuple[Store, PgPath],
) -> None:
    # A fold holds the advisory lock exclusively while it reads the highest place: a batch
    # must not take places before it holds the lock shared, or the fold could pass over
    # places of a transaction still open (``report_fold.py``).
    store, path = opened
    on = loop_of(path)
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    place = "SELECT pg_sequence_last_value(pg_get_serial_sequence('decision_events', 'seq'))"
    waiting = record(offers=["o-1"])

    async def main() -> None:
        try:
            await on.record(record(offers=["o-1"]))  # the loop's writer is connected
            with psycopg.connect(url, autocommit=True) as fold:
                before = fold.execute(place).fetchone()
                fold.execute("SELECT pg_advisory_lock(%s)", (PG_LOCK,))
                written = asyncio.ensure_future(on.record(waiting))
                await asyncio.sleep(0.3)
                assert not written.done()
                assert fold.execute(place).fetchone() == before  # no place taken yet
                fold.execute("SELECT pg_advisory_unlock(%s)", (PG_LOCK,))
            assert await written == []
        finally:
            await on.aclose()

    asyncio.run(main())
    assert stored(store, waiting.proposition_id) == dict(waiting.body or {})


def test_a_record_the_database_refuses_on_the_loop_fails_alone_and_the_writer_goes_on(
    opened: tuple[Store, PgPath],
) -> None:
    store, path = opened
    on = loop_of(path)
    fine = record(offers=["o-1"], reserve=[(A, 5)])
    # Longer than the column: the events' insert fails after the counters were set, and
    # the batch is rolled back whole; it is written again record by record.
    broken = record("x" * 40, offers=["o-2"], reserve=[(B, 5)])

    async def main() -> None:
        try:
            # Queued in one pass of the loop: one batch.
            answers = await asyncio.gather(
                on.record(fine), on.record(broken), return_exceptions=True
            )
            assert answers[0] == []
            assert isinstance(answers[1], BadRequest), answers[1]
            assert await on.record(record(offers=["o-3"], reserve=[(A, 5)])) == []
        finally:
            await on.aclose()

    asyncio.run(main())
    assert path.counts([A, B]) == {A: 2}
    assert stored(store, fine.proposition_id) == dict(fine.body or {})
    assert stored(store, broken.proposition_id) is None
    assert report(store) == {"o-1": 1, "o-3": 1}


def test_reads_on_the_loop_after_close_are_unavailable(opened: tuple[Store, PgPath]) -> None:
    _, path = opened
    on = loop_of(path)
    path.close()
    with pytest.raises(Unavailable):
        asyncio.run(on.profile("O@AdobeOrg", "prod", "Email", "a@x"))


def test_close_closes_connections_of_loops_that_did_not(opened: tuple[Store, PgPath]) -> None:
    store, path = opened
    on = loop_of(path)
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    asyncio.run(on.counts([A]))  # a loop that ends without aclose()

    def sessions() -> int:
        with psycopg.connect(url, autocommit=True) as watcher:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            ).fetchone()
        assert row is not None
        return int(row[0])

    before = sessions()
    path.close()
    for _ in range(200):  # the server ends the session once the client said goodbye
        if sessions() < before:
            break
        asyncio.run(asyncio.sleep(0.01))
    assert sessions() == before - 1


# -- Redis: reservations through the asyncio client ----------------------------------------


@pytest.fixture
def elsewhere(opened: tuple[Store, PgPath]) -> Iterator[tuple[Store, CountersElsewhere, str]]:
    """PostgreSQL's path with counters in Redis, in a container of its own (a fresh key
    space: the Redis server is shared by the run)."""
    store, path = opened
    counters = RedisCounters.from_url(redis_url(), store=store)
    counters.ping()
    yield store, CountersElsewhere(path, counters), f"{CONTAINER}-{uuid.uuid4().hex}"
    counters.close()


def test_reservations_in_redis_on_the_loop_meet_the_limit_exactly(
    elsewhere: tuple[Store, CountersElsewhere, str],
) -> None:
    store, path, container = elsewhere
    key = replace(A, container_id=container)
    on = loop_of(path)
    limit, decisions = 25, 60

    async def main() -> list[list[CounterKey]]:
        try:
            return await asyncio.gather(
                *(
                    on.record(record(container_id=container, reserve=[(key, limit)]))
                    for _ in range(decisions)
                )
            )
        finally:
            await on.aclose()

    outcomes = asyncio.run(main())
    assert outcomes.count([]) == limit
    assert outcomes.count([key]) == decisions - limit
    assert path.counts([key]) == {key: limit}  # read from Redis
    assert len(events_of(store, container)) == limit


def test_a_record_that_fails_after_its_redis_reservation_releases_it(
    elsewhere: tuple[Store, CountersElsewhere, str],
) -> None:
    store, path, container = elsewhere
    key = replace(A, container_id=container)
    on = loop_of(path)
    # Longer than the column: the decision event's insert fails after the reservation.
    broken = record("x" * 40, container_id=container, reserve=[(key, 5)])

    async def main() -> None:
        try:
            assert await on.counts([key]) == {}
            assert await on.record(broken) == []  # the decision stands, unrecorded
            assert await on.counts([key]) == {key: 0}  # released
        finally:
            await on.aclose()

    asyncio.run(main())
    assert events_of(store, container) == []


def test_an_unreachable_redis_on_the_loop_is_unavailable(opened: tuple[Store, PgPath]) -> None:
    store, path = opened
    counters = RedisCounters.from_url("redis://127.0.0.1:1/0", store=store, timeout=0.5)
    on = loop_of(CountersElsewhere(path, counters))

    async def main() -> None:
        try:
            with pytest.raises(Unavailable):
                await on.counts([A])
            with pytest.raises(Unavailable):
                await on.record(record(reserve=[(A, 1)]))
        finally:
            await on.aclose()

    try:
        asyncio.run(main())
    finally:
        counters.close()


def test_a_record_that_reserves_nothing_makes_no_call_to_redis(
    opened: tuple[Store, PgPath],
) -> None:
    store, path = opened
    container = f"{CONTAINER}-{uuid.uuid4().hex}"
    counters = RedisCounters.from_url(
        "redis://127.0.0.1:1/0", store=store, timeout=0.5
    )  # unreachable
    on = loop_of(CountersElsewhere(path, counters))

    async def main() -> None:
        try:
            assert await on.record(record(container_id=container, offers=["o-1"])) == []
        finally:
            await on.aclose()

    try:
        asyncio.run(main())
    finally:
        counters.close()
    assert len(events_of(store, container)) == 1  # recorded, Redis never asked


def _lose_scripts() -> None:
    """Redis loses its scripts (a restart, ``SCRIPT FLUSH``): they are loaded again."""
    redis.Redis.from_url(redis_url()).script_flush()


def _drop_connections() -> None:
    """Redis closes the loop's kept connection (a restart, a timeout): it is opened again
    for the next batch."""
    killed = redis.Redis.from_url(redis_url()).client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1


@pytest.mark.parametrize(
    "disrupt", [_lose_scripts, _drop_connections], ids=["scripts lost", "connection dropped"]
)
def test_reservations_after_redis_was_disrupted_still_meet_the_limit(
    elsewhere: tuple[Store, CountersElsewhere, str], disrupt: Callable[[], None]
) -> None:
    _, path, container = elsewhere
    key = replace(A, container_id=container)
    on = loop_of(path)
    limit = 7

    async def main() -> list[list[CounterKey]]:
        try:
            first = await asyncio.gather(
                *(
                    on.record(record(container_id=container, reserve=[(key, limit)]))
                    for _ in range(3)
                )
            )
            disrupt()
            rest = await asyncio.gather(
                *(
                    on.record(record(container_id=container, reserve=[(key, limit)]))
                    for _ in range(9)
                )
            )
            return [*first, *rest]
        finally:
            await on.aclose()

    outcomes = asyncio.run(main())
    assert outcomes.count([]) == limit
    assert outcomes.count([key]) == 12 - limit
    assert path.counts([key]) == {key: limit}


def test_reservations_of_one_pass_are_each_all_or_nothing_across_containers(
    elsewhere: tuple[Store, CountersElsewhere, str],
) -> None:
    # One pass of the loop: one run of the script per container, in one round trip.
    _, path, container = elsewhere
    other = f"{CONTAINER}-{uuid.uuid4().hex}"  # a container of its own (36 characters)
    a, b = replace(A, container_id=container), replace(B, container_id=container)
    c = replace(A, container_id=other)
    on = loop_of(path)

    async def main() -> list[list[CounterKey]]:
        try:
            return await asyncio.gather(
                on.record(record(container_id=container, reserve=[(a, 2), (b, 1)])),
                on.record(record(container_id=container, reserve=[(a, 2), (b, 1)])),  # b full
                on.record(record(container_id=container, reserve=[(a, 2)])),
                on.record(record(container_id=container, reserve=[(a, 2)])),  # a full
                on.record(record(container_id=other, reserve=[(c, 1)])),
                on.record(record(container_id=other, reserve=[(c, 1)])),  # c full
            )
        finally:
            await on.aclose()

    outcomes = asyncio.run(main())
    assert outcomes == [[], [b], [], [a], [], [c]]
    # The refused second record took nothing of a: the third could take a's last unit.
    assert path.counts([a, b, c]) == {a: 2, b: 1, c: 1}

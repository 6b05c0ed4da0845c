"""A Redis that lost the cap counters says so, instead of answering zeros (a real Redis
server; ``storage/redis_markers.py``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from nextoffer.errors import CountersLost, CountersNotMoved, Unavailable
from nextoffer.storage import counter_moves
from nextoffer.storage import tables as t
from nextoffer.storage.counter_moves import Moved, moving_key
from nextoffer.storage.counters import CounterKey, LoopCounters, SqlCounters
from nextoffer.storage.redis_counters import RedisCounters, redis_key
from nextoffer.storage.redis_markers import marker_key
from nextoffer.storage.store import Store
from support.backends import redis_url
from support.counter_contract import A
from support.servers import free_port, redis_server


@pytest.fixture
def key() -> CounterKey:
    """A counter in a container of its own (the Redis server is shared by the run)."""
    return replace(A, container_id=f"c-{uuid.uuid4().hex}")


def lose(raw: redis.Redis, container: str) -> int:
    """What a Redis restarted without its data holds of a container: nothing."""
    names = list(raw.scan_iter(match=f"nextoffer:cap:{{{container}}}:*"))
    return int(raw.delete(*names)) if names else 0


def listed(store: Store) -> list[str]:
    with store.session() as session:
        return [r[0] for r in session.conn.execute(select(t.redis_counter_markers.c.container_id))]


def test_a_container_s_first_count_places_its_marker_and_lists_it(
    db: Store, counters: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    assert counters.read([key]) == {}
    assert raw.exists(marker_key(key.container_id))
    assert listed(db) == [key.container_id]
    assert counters.reserve([(key, 2)]) == []
    assert counters.read([key]) == {key: 1}


def test_every_operation_refuses_counters_redis_has_lost(
    counters: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    assert counters.reserve([(key, 1)]) == []
    assert counters.reserve([(key, 1)]) == [key]  # the cap is reached
    assert lose(raw, key.container_id) == 2  # the counter and the marker
    for operation in (
        lambda: counters.read([key]),
        lambda: counters.reserve([(key, 1)]),
        lambda: counters.add([key]),
        lambda: counters.release([key]),
    ):
        with pytest.raises(CountersLost) as caught:
            operation()
        assert caught.value.containers == (key.container_id,)
        assert "nextoffer admin counters --accept-loss" in caught.value.detail
    # Nothing was counted again from zero by any of them.
    assert not raw.exists(redis_key(key))
    assert not raw.exists(marker_key(key.container_id))


def test_a_lost_container_keeps_no_other_container_s_counts_out(
    counters: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    # An event counts in every container of its tenant: one add over two containers.
    other = replace(key, container_id=f"c-{uuid.uuid4().hex}")
    counters.add([key, other])
    lose(raw, other.container_id)
    with pytest.raises(CountersLost) as caught:
        counters.add([key, other])
    assert caught.value.containers == (other.container_id,)
    assert counters.read([key]) == {key: 2}
    with pytest.raises(CountersLost):
        counters.release([key, other])
    assert counters.read([key]) == {key: 1}


def test_the_loop_s_operations_refuse_them_too(
    db: Store, key: CounterKey, raw: redis.Redis
) -> None:
    async def main(on_loop: LoopCounters) -> None:
        assert await on_loop.reserve([(key, 1)]) == []
        lose(raw, key.container_id)
        with pytest.raises(CountersLost):
            await on_loop.read([key])
        # Reservations of one pass of the loop go in one round trip: each refused.
        outcomes = await asyncio.gather(
            on_loop.reserve([(key, 1)]), on_loop.reserve([(key, 5)]), return_exceptions=True
        )
        assert all(isinstance(o, CountersLost) for o in outcomes), outcomes
        with pytest.raises(CountersLost):
            await on_loop.release([key])

    on_a_loop(db, main)
    assert not raw.exists(redis_key(key))


def on_a_loop(store: Store, main: Callable[[LoopCounters], Awaitable[None]]) -> None:
    """``main`` given new counters' loop form on an event loop of its own; both closed
    after."""
    counters = RedisCounters.from_url(redis_url(), store=store)
    on_loop = counters.on_loop
    assert on_loop is not None

    async def run() -> None:
        try:
            await main(on_loop)
        finally:
            await on_loop.aclose()

    try:
        asyncio.run(run())
    finally:
        counters.close()


def test_a_process_started_after_the_loss_refuses_them(
    db: Store, key: CounterKey, raw: redis.Redis
) -> None:
    # What the database lists, not what one process remembers, tells a loss.
    first = RedisCounters.from_url(redis_url(), store=db)
    try:
        first.add([key])
    finally:
        first.close()
    lose(raw, key.container_id)
    later = RedisCounters.from_url(redis_url(), store=db)
    try:
        assert later.markers.lost() == [key.container_id]
        with pytest.raises(CountersLost):
            later.reserve([(key, 5)])
    finally:
        later.close()


def test_counters_from_before_the_markers_are_adopted(
    db: Store, counters: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    # A deployment upgraded with counters already in Redis: its first count after the
    # upgrade marks the container, and the counts Redis holds stand.
    raw.set(redis_key(key), 3)
    assert counters.reserve([(key, 3)]) == [key]
    assert counters.read([key]) == {key: 3}
    assert listed(db) == [key.container_id]


def test_accepting_the_loss_counts_the_caps_again_from_what_redis_holds(
    counters: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    other = replace(key, container_id=f"c-{uuid.uuid4().hex}")
    counters.add([key, other])
    lose(raw, key.container_id)
    lose(raw, other.container_id)
    assert sorted(counters.markers.lost()) == sorted([key.container_id, other.container_id])
    assert counters.markers.accept_loss([key.container_id]) == [key.container_id]
    assert counters.markers.lost() == [other.container_id]
    assert counters.reserve([(key, 1)]) == []
    assert counters.read([key]) == {key: 1}
    with pytest.raises(CountersLost):
        counters.read([other])
    assert counters.markers.accept_loss() == [other.container_id]
    assert counters.markers.lost() == []


def test_a_redis_restarted_without_its_data_is_told_on_the_loop(
    tmp_path: Path, db: Store, key: CounterKey
) -> None:
    # A real restart: the server forgets its scripts (NOSCRIPT, loaded again) and every key.
    redis_url()  # the suite's Redis server: redis-server is installed (or, off CI, skip)
    port = free_port()
    counters = RedisCounters.from_url(f"redis://127.0.0.1:{port}/0", store=db)
    on_loop = counters.on_loop
    assert on_loop is not None

    async def reserve(n: int) -> list[CounterKey]:
        return await on_loop.reserve([(key, n)])

    loop = asyncio.new_event_loop()
    try:
        with redis_server(port, tmp_path, "--appendonly", "no"):
            assert loop.run_until_complete(reserve(1)) == []
            assert loop.run_until_complete(reserve(1)) == [key]
        with redis_server(port, tmp_path, "--appendonly", "no"):
            with pytest.raises(CountersLost):
                loop.run_until_complete(reserve(1))
            assert counters.markers.lost() == [key.container_id]
    finally:
        loop.run_until_complete(on_loop.aclose())
        loop.close()
        counters.close()


def test_a_first_count_the_database_could_not_list_is_counted_again_later(
    db: Store,
    counters: RedisCounters,
    key: CounterKey,
    raw: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The database away at a container's first count (a node decides from its snapshots
    # meanwhile): its marker must not stay in Redis unlisted, or a later loss of Redis
    # would pass for a first count and the caps start again from zero, silently.
    real = Store.write

    def away(store: Store, *args: object, **kwargs: object) -> object:
        raise Unavailable("the database is away")

    monkeypatch.setattr(Store, "write", away)
    with pytest.raises(Unavailable):
        counters.reserve([(key, 1)])
    monkeypatch.setattr(Store, "write", real)
    assert counters.reserve([(key, 1)]) == []  # the database back: listed now
    assert listed(db) == [key.container_id]
    lose(raw, key.container_id)
    with pytest.raises(CountersLost):
        counters.reserve([(key, 1)])


def test_a_first_count_racing_another_process_s_is_not_taken_for_a_loss(
    db: Store, key: CounterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # B finds no marker; before B reads the database, A's first count of the same
    # container places the marker and lists it. B must ask Redis again, not cry loss.
    a = RedisCounters.from_url(redis_url(), store=db)
    b = RedisCounters.from_url(redis_url(), store=db)
    real = b.markers._absent
    asked: list[list[str]] = []

    def absent(containers: list[str]) -> list[str]:
        asked.append(list(containers))
        if len(asked) == 1:
            a.markers.missing(containers)  # A's first count lands now
            return list(containers)
        return real(containers)

    monkeypatch.setattr(b.markers, "_absent", absent)
    try:
        b.markers.missing([key.container_id])
        assert asked == [[key.container_id], [key.container_id]]
        assert b.reserve([(key, 1)]) == []
    finally:
        a.close()
        b.close()


# A deployment that counted its caps in the database, then added Redis (both databases).


@pytest.fixture
def both(db_url: str) -> Iterator[Store]:
    """A database of either kind beside Redis."""
    store = Store.open(db_url)
    yield store
    store.close()


@pytest.fixture
def added(both: Store) -> Iterator[RedisCounters]:
    """Redis's counters of a deployment that had none, listed in ``both``."""
    opened = RedisCounters.from_url(redis_url(), store=both)
    yield opened
    opened.close()


def counted(store: Store, key: CounterKey, n: int, *more: CounterKey) -> None:
    """``n`` counted in the database (no Redis) for ``key`` and each of ``more``."""
    SqlCounters(store).add([key, *more], n)


def rows(store: Store) -> int:
    with store.session() as session:
        return len(session.conn.execute(select(t.cap_counters.c.counter_key)).all())


def test_a_first_count_of_counters_the_database_holds_fails_closed_until_moved(
    both: Store, added: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    counted(both, key, 2)
    for operation in (
        lambda: added.read([key]),
        lambda: added.reserve([(key, 5)]),
        lambda: added.add([key]),
    ):
        with pytest.raises(CountersNotMoved) as caught:
            operation()
        assert isinstance(caught.value, CountersLost)  # caps fail closed, as for a loss
        assert caught.value.containers == (key.container_id,)
        assert "nextoffer admin counters --into-redis" in caught.value.detail
    # Nothing taken for a first count: not marked, not listed, nothing counted.
    assert not raw.exists(marker_key(key.container_id))
    assert listed(both) == []
    assert not raw.exists(redis_key(key))

    assert added.moves.move_in() == Moved(moved={key.container_id: 1})
    assert rows(both) == 0
    assert listed(both) == [key.container_id]
    assert not raw.exists(moving_key(key.container_id))
    assert added.read([key]) == {key: 2}
    assert added.reserve([(key, 3)]) == []
    assert added.reserve([(key, 3)]) == [key]


def test_the_loop_s_first_count_fails_closed_too(
    both: Store, key: CounterKey, raw: redis.Redis
) -> None:
    counted(both, key, 1)

    async def main(on_loop: LoopCounters) -> None:
        with pytest.raises(CountersNotMoved):
            await on_loop.reserve([(key, 5)])
        with pytest.raises(CountersNotMoved):
            await on_loop.read([key])

    on_a_loop(both, main)
    assert not raw.exists(redis_key(key))


def test_a_move_keeps_the_counts_made_in_redis_meanwhile(
    both: Store, added: RedisCounters, key: CounterKey
) -> None:
    # Counted in Redis first (a deployment that added Redis before caps failed closed),
    # then the database's counts moved: the two added.
    assert added.reserve([(key, 9)]) == []
    counted(both, key, 4)
    assert added.moves.unmoved() == {key.container_id: 1}
    assert added.moves.move_in().moved == {key.container_id: 1}
    assert added.read([key]) == {key: 5}


def test_a_move_stopped_anywhere_and_run_again_adds_no_count_twice(
    both: Store,
    added: RedisCounters,
    key: CounterKey,
    raw: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = [replace(key, offer_id=f"xcore:offer:{i}") for i in range(5)]
    counted(both, keys[0], 3, *keys[1:])
    real_delete, real_finish = counter_moves._delete_moved, counter_moves.CounterMoves._finish
    deleted: list[int] = []

    def interrupted_delete(session: object, **kw: object) -> int:
        if deleted:  # the second batch: added in Redis, Ctrl-C before its rows go
            raise KeyboardInterrupt
        deleted.append(1)
        return real_delete(session, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(counter_moves, "_delete_moved", interrupted_delete)
    with pytest.raises(KeyboardInterrupt):
        added.moves.move_in(batch=2)
    assert rows(both) == 3  # the first batch's gone, the second's still there
    monkeypatch.setattr(counter_moves, "_delete_moved", real_delete)

    def interrupted_finish(self: object, container: str) -> None:
        raise KeyboardInterrupt  # every row gone, the container not yet marked

    monkeypatch.setattr(counter_moves.CounterMoves, "_finish", interrupted_finish)
    with pytest.raises(KeyboardInterrupt):
        added.moves.move_in(batch=2)
    assert rows(both) == 0
    assert not raw.exists(marker_key(key.container_id))
    monkeypatch.setattr(counter_moves.CounterMoves, "_finish", real_finish)

    # Run again: finishes (marks and lists it).
    assert added.moves.move_in([key.container_id], batch=2) == Moved()
    assert listed(both) == [key.container_id]
    assert not raw.exists(moving_key(key.container_id))
    assert added.read(keys) == {k: 3 for k in keys}


def test_a_row_changed_between_its_move_and_its_delete_moves_its_difference(
    both: Store, added: RedisCounters, key: CounterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server without Redis still counting during the move (it should be stopped): the
    # row it changed is not deleted, and the next walk adds only what it grew by.
    counted(both, key, 2)
    real = added.moves._redis
    calls: list[int] = []

    def meanwhile(fn: Any, *args: Any, **kw: Any) -> object:
        done = real(fn, *args, **kw)
        if "keys" in kw:  # the move's script ran; its rows not yet deleted
            calls.append(1)
            if len(calls) == 1:
                counted(both, key, 1)
        return done

    monkeypatch.setattr(added.moves, "_redis", meanwhile)
    added.moves.move_in()
    assert len(calls) == 2
    assert rows(both) == 0
    assert added.read([key]) == {key: 3}


def test_a_move_of_named_containers_leaves_the_others(
    both: Store, added: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    other = replace(key, container_id=f"c-{uuid.uuid4().hex}")
    in_redis = replace(key, container_id=f"c-{uuid.uuid4().hex}")
    assert added.reserve([(in_redis, 5)]) == []  # all its counters in Redis already
    counted(both, key, 2)
    counted(both, other, 7)
    moved = added.moves.move_in([key.container_id, in_redis.container_id])
    assert moved == Moved(moved={key.container_id: 1})
    assert added.moves.unmoved() == {other.container_id: 1}
    assert not raw.exists(marker_key(other.container_id))
    with pytest.raises(CountersNotMoved):
        added.read([other])
    assert added.read([key, in_redis]) == {key: 2, in_redis: 1}


def test_a_container_whose_redis_counters_were_lost_is_not_moved(
    both: Store, added: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    # Moved now, its counts would be overwritten by a restore of Redis's backup.
    added.add([key])
    lose(raw, key.container_id)
    counted(both, key, 2)
    assert added.moves.move_in() == Moved(lost=[key.container_id])
    assert rows(both) == 1
    assert added.markers.lost() == [key.container_id]


# A deployment that stops using Redis: its counters moved into the database (both).


def test_a_move_deletes_its_rows_by_key(tmp_path: Path) -> None:
    # A move deleted each batch's rows by (key, count) pairs, which SQLite matches by
    # reading the whole table: a million counters took minutes, quadratic in them.
    store = Store.open(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        statement = counter_moves.moved_rows([("c|o|k", 1), ("c|o|j", 2)])
        compiled = statement.compile(store.engine, compile_kwargs={"literal_binds": True})
        with store.session() as session:
            plan = " ".join(
                str(row[-1])
                for row in session.conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
            )
    finally:
        store.close()
    assert "USING INDEX" in plan and "SCAN cap_counters" not in plan, plan


def in_database(store: Store, keys: list[CounterKey]) -> dict[CounterKey, int]:
    return SqlCounters(store).read(keys)


def test_a_move_out_of_redis_adds_redis_s_counts_to_the_database_s(
    both: Store, added: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    other = replace(key, offer_id="xcore:offer:9")
    elsewhere = replace(key, container_id=f"c-{uuid.uuid4().hex}")
    added.add([key, other], 3)
    added.add([elsewhere], 1)
    counted(both, key, 2)  # counted in the database before (never moved in)
    moved = added.moves.move_out([key.container_id])
    assert moved == Moved(moved={key.container_id: 2})
    assert in_database(both, [key, other, elsewhere]) == {key: 5, other: 3}
    for name in (redis_key(key), redis_key(other), marker_key(key.container_id)):
        assert not raw.exists(name)
    assert not raw.exists(counter_moves.leaving_key(key.container_id))
    assert listed(both) == [elsewhere.container_id]  # the other container untouched
    assert added.read([elsewhere]) == {elsewhere: 1}
    # A server still on Redis: caps closed (the counts are the database's now).
    with pytest.raises(CountersNotMoved):
        added.reserve([(key, 9)])


def test_a_move_out_stopped_anywhere_and_run_again_adds_no_count_twice(
    both: Store,
    added: RedisCounters,
    key: CounterKey,
    raw: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = [replace(key, offer_id=f"xcore:offer:{i}") for i in range(5)]
    added.add(keys, 2)
    counted(both, keys[0], 1)
    real_add = counter_moves._add_taken
    applied: list[int] = []

    def stopped_before_the_database(session: Any, **kw: Any) -> list[str]:
        if applied:  # the second batch: taken out of Redis, Ctrl-C before it is added
            raise KeyboardInterrupt
        applied.append(1)
        return real_add(session, **kw)

    monkeypatch.setattr(counter_moves, "_add_taken", stopped_before_the_database)
    with pytest.raises(KeyboardInterrupt):
        added.moves.move_out(batch=2)
    monkeypatch.setattr(counter_moves, "_add_taken", real_add)
    # Stopped half-way: a server still on Redis finds the marker gone, caps closed.
    with pytest.raises(CountersLost):
        added.reserve([(keys[4], 9)])

    real_redis = added.moves._redis

    def stopped_after_the_database(fn: Any, *args: Any, **kw: Any) -> Any:
        if getattr(fn, "__name__", "") == "hdel":  # added and committed, Ctrl-C now
            raise KeyboardInterrupt
        return real_redis(fn, *args, **kw)

    monkeypatch.setattr(added.moves, "_redis", stopped_after_the_database)
    with pytest.raises(KeyboardInterrupt):
        added.moves.move_out(batch=2)
    monkeypatch.setattr(added.moves, "_redis", real_redis)

    added.moves.move_out(batch=2)
    assert in_database(both, keys) == {keys[0]: 3, **{k: 2 for k in keys[1:]}}
    assert listed(both) == []
    assert not list(raw.scan_iter(match=f"nextoffer:cap:{{{key.container_id}}}:*"))


def test_a_move_out_leaves_a_container_whose_redis_counters_were_lost(
    both: Store, added: RedisCounters, key: CounterKey, raw: redis.Redis
) -> None:
    added.add([key])
    lose(raw, key.container_id)
    assert added.moves.move_out() == Moved(lost=[key.container_id])
    assert listed(both) == [key.container_id]
    assert in_database(both, [key]) == {}


def test_a_move_out_keeps_a_database_count_made_while_it_ran(
    both: Store, added: RedisCounters, key: CounterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server without Redis started too early: its count, made between the take out of
    # Redis and the add to the database, stays beside the count moved.
    added.add([key], 3)
    real = added.moves._redis

    def meanwhile(fn: Any, *args: Any, **kw: Any) -> Any:
        done = real(fn, *args, **kw)
        if "args" in kw:  # the take script ran
            counted(both, key, 1)
        return done

    monkeypatch.setattr(added.moves, "_redis", meanwhile)
    assert added.moves.move_out().moved == {key.container_id: 1}
    assert in_database(both, [key]) == {key: 4}

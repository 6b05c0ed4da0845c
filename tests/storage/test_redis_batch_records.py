"""A batch job's records with counters in Redis (``CountersElsewhere.record_many``): their
reservations taken many to a round trip, their writes group-committed by the path's
writer, on SQLite and PostgreSQL with a real Redis."""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

import pytest

from nextoffer.errors import Unavailable
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import CountersElsewhere, DecisionPath, DecisionRecord
from nextoffer.storage.pg_path import PgPath
from nextoffer.storage.redis_counters import RUN, RedisCounters
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.backends import emptied_database, migrated_sqlite, redis_url
from support.decision_path_contract import DAY, NOW

Opened = tuple[Store, DecisionPath, RedisCounters, str]


@pytest.fixture(params=["sqlite", "postgresql"])
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    """A decision path on the database with counters in the suite's Redis, in a container
    of its own (the Redis server is shared by the run)."""
    url = migrated_sqlite(tmp_path) if request.param == "sqlite" else emptied_database()
    store = Store.open(url)
    path: DecisionPath = SqlitePath(store) if request.param == "sqlite" else PgPath(store)
    counters = RedisCounters.from_url(redis_url(), store=store)
    yield store, path, counters, f"c-{uuid.uuid4().hex[:30]}"
    path.close()
    counters.close()
    store.close()


def batch_record(
    container: str, n: int, reserve: list[tuple[CounterKey, int]], offer: str = "o-1"
) -> DecisionRecord:
    """A batch decision's record: no event, an offer proposed, its counters to reserve."""
    return DecisionRecord(
        proposition_id=str(uuid.uuid4()),
        container_id=container,
        created=NOW,
        created_us=1_772_618_400_000_000,
        profile_key=f"p-{n}",
        body=None,
        day=DAY,
        proposed_offers=[offer],
        reserve=reserve,
    )


def record_all(path: DecisionPath, records: list[DecisionRecord]) -> list[Future[list[CounterKey]]]:
    futures: list[Future[list[CounterKey]]] = [Future() for _ in records]
    path.record_many(list(zip(records, futures, strict=True)))
    wait(futures, timeout=60)
    return futures


def proposed(store: Store, container: str) -> int:
    """The offers report's propositions of the container (the batch records' rows)."""
    with store.engine.connect() as conn:
        from sqlalchemy import text

        found = conn.execute(
            text("SELECT COALESCE(SUM(propositions), 0) FROM offer_daily WHERE container_id = :c"),
            {"c": container},
        ).scalar_one()
    return int(found)


def spy_transactions(path: DecisionPath) -> list[int]:
    """The number of records of each transaction the path's writer commits."""
    writer = path._writer  # type: ignore[attr-defined]
    sizes: list[int] = []
    write = writer._write

    def counted(conn: Any, records: list[DecisionRecord]) -> Any:
        sizes.append(len(records))
        return write(conn, records)

    writer._write = counted
    return sizes


def test_batch_records_reserve_many_a_round_trip_and_commit_many_a_transaction(
    opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each record all of its counters or none, in order (a global cap and its profile's
    own), refusals its outcome; the reservations in runs of ``_RESERVE_MANY`` sent
    together, never one ``reserve`` per record; the writes in transactions of more than
    one record. (Before, each record reserved alone and wrote alone: one commit each.)"""
    store, path, counters, container = opened
    elsewhere = CountersElsewhere(path, counters)
    everyone = CounterKey(container, "xcore:offer:1", "globalCap")
    limit, decisions = 150, 200
    records = [
        batch_record(
            container,
            n,
            [
                (everyone, limit),
                (CounterKey(container, "xcore:offer:1", "profileCap", f"p-{n % 190}"), 1),
            ],
        )
        for n in range(decisions)
    ]
    assert counters.read([everyone]) == {}  # the container's marker placed (a first count)
    sizes = spy_transactions(path)
    runs: list[int] = []
    script = counters._reserve_many

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return script(*args, **kwargs)

    monkeypatch.setattr(counters, "_reserve_many", counted)
    monkeypatch.setattr(counters, "reserve", lambda wanted: pytest.fail("one reserve a record"))
    outcomes = [f.result() for f in record_all(elsewhere, records)]
    assert outcomes[:limit] == [[]] * limit
    # p-150 .. p-189 find everyone's cap full; p-190 .. p-199 their own count taken too.
    assert all(everyone in outcome for outcome in outcomes[limit:])
    assert [len(o) for o in outcomes[190:]] == [2] * 10
    assert len(runs) == math.ceil(decisions / RUN)
    assert counters.read([everyone]) == {everyone: limit}
    assert proposed(store, container) == limit
    assert sum(sizes) == limit
    assert max(sizes) > 1, sizes


def test_a_failed_write_of_batch_records_releases_their_reservations(opened: Opened) -> None:
    """The database refuses the batch (its writer's connection fails): every record's
    reservation is released in Redis and the decision stands (``[]``), as a record
    alone's is."""
    store, path, counters, container = opened
    elsewhere = CountersElsewhere(path, counters)
    key = CounterKey(container, "xcore:offer:1", "globalCap")
    writer = path._writer  # type: ignore[attr-defined]

    def broken(conn: Any, records: list[DecisionRecord]) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    writer._write = broken
    futures = record_all(elsewhere, [batch_record(container, n, [(key, 10)]) for n in range(8)])
    assert [f.result() for f in futures] == [[]] * 8
    assert counters.read([key]) == {key: 0}
    assert proposed(store, container) == 0


def test_a_record_postgresql_refuses_in_a_batch_releases_only_its_own(tmp_path: Path) -> None:
    """An offer id past its column: PostgreSQL refuses that record's row, the batch is
    written again record by record (``group_commit.refused_alone``), and only that
    record's reservation goes back."""
    store = Store.open(emptied_database())
    path = PgPath(store)
    counters = RedisCounters.from_url(redis_url(), store=store)
    container = f"c-{uuid.uuid4().hex[:30]}"
    key = CounterKey(container, "xcore:offer:1", "globalCap")
    try:
        records = [batch_record(container, n, [(key, 10)]) for n in range(6)]
        records[3] = batch_record(container, 3, [(key, 10)], offer="o" * 65)
        futures = record_all(CountersElsewhere(path, counters), records)
        assert [f.result() for f in futures] == [[]] * 6
        assert counters.read([key]) == {key: 5}
        assert proposed(store, container) == 5
    finally:
        path.close()
        counters.close()
        store.close()


def test_an_unreachable_redis_is_each_capped_batch_record_s_outcome(opened: Opened) -> None:
    """Redis away: every record that reserves fails :class:`Unavailable` (the decider then
    counts its capped offers as full) and writes nothing; one that reserves nothing is
    written."""
    store, path, _, container = opened
    away = RedisCounters.from_url("redis://127.0.0.1:1/0", store=store, timeout=0.5)
    key = CounterKey(container, "xcore:offer:1", "globalCap")
    try:
        futures = record_all(
            CountersElsewhere(path, away),
            [batch_record(container, 0, [(key, 5)]), batch_record(container, 1, [])],
        )
    finally:
        away.close()
    assert isinstance(futures[0].exception(), Unavailable)
    assert futures[1].result() == []
    assert proposed(store, container) == 1

"""What only PostgreSQL's group-committing writer does (``storage/pg_path.py``): records of
one batch succeed or fail alone (a value the database refuses fails only the record
that carries it), and writers of two processes reserve the same counters exactly, without
deadlocking (the contract every path passes: ``test_decision_path.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from nextoffer.errors import BadRequest, Conflict
from nextoffer.storage import pg_path
from nextoffer.storage.counters import CounterKey, SqlCounters
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.pg_path import PgPath
from nextoffer.storage.store import Store
from support.backends import emptied_database
from support.decision_path_contract import (
    A,
    B,
    Z,
    events_of,
    outcome,
    record,
    report,
    stored,
)


@pytest.fixture
def opened() -> Iterator[tuple[Store, PgPath]]:
    store = Store.open(emptied_database(), pool_size=10)
    path = PgPath(store)
    # As once callers have met: every record goes through the writer thread, so records
    # submitted while its batch waits for a lock queue instead of writing themselves.
    path._writer.start()
    yield store, path
    path.close()
    store.close()


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of records of every batch the writers plan."""
    sizes: list[int] = []
    plan = pg_path.plan_batch

    def counted(records: Any, stored: Any, counts: Any, owners: Any = None) -> Any:
        sizes.append(len(records))
        return plan(records, stored, counts, owners)

    monkeypatch.setattr(pg_path, "plan_batch", counted)
    return sizes


@contextmanager
def writer_held(store: Store, path: PgPath) -> Iterator[Future[list[CounterKey]]]:
    """The writer's first batch (a record reserving ``Z``) waits for ``Z``'s row, locked by
    another transaction for the block: records queued meanwhile form the next batch."""
    SqlCounters(store).add([Z], 0)
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as other:
        other.execute(
            "SELECT count FROM cap_counters WHERE counter_key = %s FOR UPDATE", (Z.encode(),)
        )
        first = path.record(record(offers=(), reserve=[(Z, 100)]))
        until_waiting(url, first)
        yield first
        other.rollback()
    assert first.result(timeout=30) == []


def until_waiting(url: str, first: Future[list[CounterKey]]) -> None:
    """Until the writer's transaction waits for a lock (its batch is taken)."""
    with psycopg.connect(url, autocommit=True) as watcher:
        for _ in range(5_000):
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if first.running() and waiting is not None and waiting[0] > 0:
                return
            time.sleep(0.002)
    raise AssertionError("the writer never waited for the lock")


def test_a_refused_record_is_not_written_and_the_others_of_its_batch_commit(
    opened: tuple[Store, PgPath], batches: list[int]
) -> None:
    store, path = opened
    with writer_held(store, path):
        taken = record(offers=["o-1"], reserve=[(A, 1)], note="taken")
        full = record(offers=["o-2"], reserve=[(A, 1), (B, 5)])
        twin = record(taken.proposition_id, offers=["o-3"], reserve=[(B, 5)])
        plain = record(offers=["o-1"], note="plain")
        futures = [path.record(r) for r in (taken, full, twin, plain)]
    assert futures[0].result(timeout=30) == []
    assert futures[1].result(timeout=30) == [A]
    with pytest.raises(Conflict):
        futures[2].result(timeout=30)
    assert futures[3].result(timeout=30) == []
    assert batches == [1, 4]
    assert stored(store, taken.proposition_id) == dict(taken.body)
    assert stored(store, full.proposition_id) is None
    assert stored(store, plain.proposition_id) == dict(plain.body)
    counts = path.counts([A, B])
    assert (counts[A], counts.get(B, 0)) == (1, 0)
    assert report(store) == {"o-1": 2}


def test_a_record_the_database_refuses_fails_alone_and_the_writer_goes_on(
    opened: tuple[Store, PgPath], batches: list[int]
) -> None:
    store, path = opened
    with writer_held(store, path):
        fine = record(offers=["o-1"], reserve=[(A, 5)])
        # Longer than the column: the events' insert fails after the counters were set,
        # and the batch is rolled back whole; it is written again record by record.
        broken = record("x" * 40, offers=["o-2"], reserve=[(B, 5)])
        futures = [path.record(r) for r in (fine, broken)]
    assert futures[0].result(timeout=30) == []
    with pytest.raises(BadRequest):
        futures[1].result(timeout=30)
    assert batches == [1, 2, 1, 1]
    assert path.counts([A, B]) == {A: 1}
    assert stored(store, fine.proposition_id) == dict(fine.body or {})
    assert stored(store, broken.proposition_id) is None
    assert len(events_of(store)) == 2  # the first batch's and the fine record's
    assert report(store) == {"o-1": 1}
    # The writer goes on with the next batch.
    after = record(offers=["o-3"], reserve=[(A, 5)])
    assert outcome(path, after) == []
    assert path.counts([A]) == {A: 2}
    assert report(store) == {"o-1": 1, "o-3": 1}


def test_two_processes_reserve_the_same_counters_exactly(opened: tuple[Store, PgPath]) -> None:
    store, one = opened
    other = PgPath(store)  # another process's writer: its own connections and batches
    limit = 40
    try:

        def wanted(n: int) -> DecisionRecord:
            # Both orders, so the writers would deadlock without locking in key order.
            keys = [(A, limit), (B, 1000)] if n % 2 else [(B, 1000), (A, limit)]
            return record(offers=["o-1"], reserve=keys)

        futures: list[Future[list[CounterKey]]] = []
        lock = threading.Lock()

        def run(path: PgPath) -> None:
            for n in range(50):
                future = path.record(wanted(n))
                with lock:
                    futures.append(future)

        threads = [threading.Thread(target=run, args=(p,)) for p in (one, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes = [f.result(timeout=60) for f in futures]
    finally:
        other.close()
    assert outcomes.count([]) == limit
    assert outcomes.count([A]) == 100 - limit
    assert one.counts([A, B]) == {A: limit, B: limit}
    assert len(events_of(store)) == limit
    assert report(store) == {"o-1": limit}


def test_closing_a_connection_whose_socket_is_already_gone_raises_nothing() -> None:
    # After the server broke the connection its socket may have no descriptor left: the
    # close must go on (it ran before the root's other closers), not raise EBADF.
    import asyncio
    import socket

    from nextoffer.storage import pg_path

    gone = socket.socket()
    gone.close()

    class Transport:
        def get_extra_info(self, name: str) -> socket.socket:
            return gone

    class Connection:
        _transport = Transport()
        terminated = False

        def terminate(self) -> None:
            self.terminated = True

    loop = asyncio.new_event_loop()
    loop.close()
    conn = Connection()
    pg_path._terminate(loop, conn)  # type: ignore[arg-type]
    assert conn.terminated

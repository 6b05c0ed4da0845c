"""``Store.write`` makes again a transaction PostgreSQL gave up in a deadlock.

The test builds a deadlock the write loses: the write takes advisory lock 1 and then
waits for lock 2, which another connection holds; that connection then waits for lock 1.
The write waited first, so its backend's deadlock check (``deadlock_timeout`` after its
wait began) finds the cycle first and aborts it. ``Store.write`` makes the write again
once the other connection is through, and it commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from nextoffer.errors import Unavailable
from nextoffer.storage.errors import transient
from nextoffer.storage.store import Store
from support.backends import emptied_database


@pytest.fixture
def store() -> Iterator[Store]:
    opened = Store.open(emptied_database())
    yield opened
    opened.close()


def test_a_write_that_loses_a_deadlock_is_made_again_and_commits(store: Store) -> None:
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    holds_2, attempts, errors = threading.Event(), [], []

    def other() -> None:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(2)")
            holds_2.set()
            _wait_for_a_lock_wait(conn)  # the write waits for lock 2 first
            time.sleep(0.2)
            conn.execute("SELECT pg_advisory_xact_lock(1)")  # then this waits: a cycle

    def work(session: Any) -> int:
        attempts.append(len(attempts) + 1)
        session.conn.execute(text("SELECT pg_advisory_xact_lock(1)"))
        if len(attempts) == 1:
            thread.start()
            assert holds_2.wait(10)
        session.conn.execute(text("SELECT pg_advisory_xact_lock(2)"))
        return len(attempts)

    thread = threading.Thread(target=lambda: _catching(other, errors), daemon=True)
    assert store.write(work) == 2
    thread.join(10)
    assert errors == []  # the other connection won the deadlock and went on


def test_a_deadlock_is_transient_and_an_outage_is_not() -> None:
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    assert transient(deadlock)
    wrapped = Unavailable("the database is unavailable")
    wrapped.__cause__ = deadlock
    assert transient(wrapped)
    assert not transient(Unavailable("the database is unavailable"))


def _wait_for_a_lock_wait(conn: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + 10
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    with psycopg.connect(conn.info.dsn, autocommit=True) as watcher:
        while watcher.execute(query).fetchone() == (0,):
            assert time.monotonic() < deadline
            time.sleep(0.02)


def _catching(run: Any, errors: list[BaseException]) -> None:
    try:
        run()
    except BaseException as exc:
        errors.append(exc)

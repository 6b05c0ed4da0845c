"""The decision path on every store (the contract), and what only SQLite's group-committing
writer does: batches, exact caps under concurrency, cancelled records, closing, and
writers of several processes queueing on the writer lock. PostgreSQL's batches:
``test_pg_path.py``."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from nextoffer.errors import BadRequest, Conflict, Unavailable
from nextoffer.root import NextOffer
from nextoffer.settings import Settings
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.group_commit import Outcome
from nextoffer.storage.pg_path import PgPath
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.backends import emptied_database
from support.decision_path_contract import (
    A,
    B,
    DecisionPathContract,
    add_profile,
    events_of,
    outcome,
    record,
    report,
    stored,
)


class TestSqlitePath(DecisionPathContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Iterator[tuple[Store, SqlitePath]]:
        store = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
        path = SqlitePath(store)
        yield store, path
        path.close()
        store.close()

    def test_the_root_chooses_it_for_sqlite(self, tmp_path: Path) -> None:
        with NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'r.db'}")) as no:
            assert isinstance(no.path, SqlitePath)
            assert no.path.inline


class TestPgPath(DecisionPathContract):
    @pytest.fixture
    def path(self) -> Iterator[tuple[Store, PgPath]]:
        store = Store.open(emptied_database(), pool_size=10)
        path = PgPath(store)
        yield store, path
        path.close()
        store.close()

    def test_the_root_chooses_it_for_postgres(self) -> None:
        with NextOffer.open(Settings(db_url=emptied_database())) as no:
            assert isinstance(no.path, PgPath)
            assert not no.path.inline


# -- SQLite only: the group-committing writer ------------------------------------------


#: The SQLite path opened on each store of these tests (the root opens one per process).
_paths: dict[int, SqlitePath] = {}


def path_of(store: Store) -> SqlitePath:
    path = _paths.get(id(store))
    if path is None:
        path = _paths[id(store)] = SqlitePath(store)
        # As once callers have met: every record goes through the writer thread, so
        # records submitted while the test holds the write lock queue instead of writing.
        path._writer.start()
    return path


def close(store: Store) -> None:
    """Close the store's path, then the store (as the root does)."""
    path = _paths.pop(id(store), None)
    if path is not None:
        path.close()
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'd.db'}")
    yield opened
    close(opened)


def until(condition: Callable[[], bool], *, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def count_commits(path: SqlitePath, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the writer's batch transactions. Not its write-lock turns: a fold of the
    offers report takes the lock too, once :data:`FOLD_SECONDS` have passed, which a slow
    run reaches between two batches."""
    original = path._writer._write
    taken = [0]

    def counting(conn: sqlite3.Connection, records: list[DecisionRecord]) -> list[Outcome]:
        taken[0] += 1
        return original(conn, records)

    monkeypatch.setattr(path._writer, "_write", counting)
    return taken


def test_records_from_one_loop_iteration_commit_together_on_the_loop_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = path_of(store)
    original = store.write_lock
    takers: list[str] = []

    def counting() -> AbstractContextManager[None]:
        takers.append(threading.current_thread().name)
        return original()

    monkeypatch.setattr(store, "write_lock", counting)

    async def decide_many() -> list[list[CounterKey]]:
        # Twenty requests reach their record in one pass of the loop: one batch.
        futures = [path.record(record(created_us=n)) for n in range(20)]
        assert not any(f.done() for f in futures)  # written after this callback returns
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    assert asyncio.run(decide_many()) == [[]] * 20
    assert takers == [threading.current_thread().name]  # one commit, on the loop's thread
    assert len(events_of(store)) == 20


def test_a_record_queued_on_the_loop_is_the_loop_s_own_future_and_a_cancelled_one_is_skipped(
    store: Store,
) -> None:
    path = path_of(store)

    async def main() -> tuple[list[CounterKey], bool]:
        kept = path.record(record("p-kept"))
        dropped = path.record(record("p-dropped"))
        # The loop's own future (no lock per step), resolved by the loop's batch.
        assert isinstance(kept, asyncio.Future) and isinstance(dropped, asyncio.Future)
        dropped.cancel()  # its caller gave up before the batch: not written
        return await kept, dropped.cancelled()

    assert asyncio.run(main()) == ([], True)
    assert stored(store, "p-kept") is not None
    assert stored(store, "p-dropped") is None


def test_a_conflict_in_a_loop_batch_fails_only_its_record(store: Store) -> None:
    path = path_of(store)

    async def main() -> BaseException | None:
        future = path.record(record("p-once"))
        again = path.record(record("p-once"))  # the same proposition id: a conflict
        assert await future == []
        with pytest.raises(Conflict):
            await again
        return again.exception()

    assert isinstance(asyncio.run(main()), Conflict)


#: A value SQLite cannot hold (an integer past 64 bits): the database refuses the record.
REFUSED_US = 2**70


def test_a_record_the_database_refuses_fails_alone_in_a_loop_batch(store: Store) -> None:
    # Its batch is rolled back whole and written again record by record: the others of
    # the batch are written as if it were not there, and only its caller hears of it.
    path = path_of(store)
    fine, refused, after = (
        record(offers=["o-1"], reserve=[(A, 5)]),
        record(offers=["o-2"], reserve=[(B, 5)], created_us=REFUSED_US),
        record(offers=["o-3"], reserve=[(A, 5)]),
    )

    async def main() -> list[object]:
        futures = [path.record(r) for r in (fine, refused, after)]  # one batch
        return await asyncio.gather(*futures, return_exceptions=True)

    answers = asyncio.run(main())
    assert answers[0] == [] and answers[2] == []
    assert isinstance(answers[1], BadRequest), answers[1]
    assert stored(store, fine.proposition_id) == dict(fine.body or {})
    assert stored(store, refused.proposition_id) is None
    assert path.counts([A, B]) == {A: 2}


def test_a_record_the_database_refuses_fails_alone_in_the_writer_thread_s_batch(
    store: Store,
) -> None:
    path = path_of(store)
    with store.write_lock():
        first = path.record(record(offers=()))
        until(first.running)  # the writer holds its first batch and waits for the lock
        fine = record(offers=["o-1"], reserve=[(A, 5)])
        refused = record(offers=["o-2"], reserve=[(B, 5)], created_us=REFUSED_US)
        futures = [path.record(r) for r in (fine, refused)]
    assert first.result(timeout=30) == []
    assert futures[0].result(timeout=30) == []
    with pytest.raises(BadRequest):
        futures[1].result(timeout=30)
    assert stored(store, fine.proposition_id) == dict(fine.body or {})
    assert path.counts([A, B]) == {A: 1}
    assert outcome(path, record(offers=["o-3"])) == []  # the writer goes on


def test_a_stored_id_in_a_batch_fails_only_its_record_and_reserves_nothing(store: Store) -> None:
    """A batch is first written without looking its ids up: the events' unique key finds
    the stored one, and the batch is written again with them looked up."""
    path = path_of(store)
    first = record(reserve=[(A, 5)], note="first")
    assert path.record(first).result(timeout=30) == []

    async def main() -> list[BaseException | list[CounterKey]]:
        futures = [
            path.record(record(offers=["o-2"], reserve=[(A, 5)], note="before")),
            path.record(record(first.proposition_id, offers=["o-3"], reserve=[(A, 5), (B, 5)])),
            path.record(record(offers=["o-2"], reserve=[(B, 5)], note="after")),
        ]
        return await asyncio.gather(*futures, return_exceptions=True)

    before, again, after = asyncio.run(main())
    assert before == [] and after == []
    assert isinstance(again, Conflict)
    assert path.counts([A, B]) == {A: 2, B: 1}
    assert stored(store, first.proposition_id) == dict(first.body or {})
    assert report(store) == {"o-1": 1, "o-2": 2}


def test_a_batch_of_new_ids_is_written_without_looking_them_up(store: Store) -> None:
    path = path_of(store)
    statements: list[str] = []
    conn = path._thread_conn()
    conn.set_trace_callback(statements.append)

    async def main() -> list[list[CounterKey]]:
        return await asyncio.gather(*(path.record(record(reserve=[(A, 5)])) for _ in range(3)))

    assert asyncio.run(main()) == [[], [], []]
    conn.set_trace_callback(None)
    assert any(s.startswith("INSERT INTO decision_events") for s in statements)
    assert not [s for s in statements if "SELECT proposition_id" in s]
    assert path.counts([A]) == {A: 3}


def from_threads(
    submit: Callable[[int], Future[list[CounterKey]]], *, threads: int, each: int
) -> list[Future[list[CounterKey]]]:
    """``threads`` threads submitting ``each`` records at once; their futures, in order."""
    barrier = threading.Barrier(threads)
    futures: list[list[Future[list[CounterKey]]]] = [[] for _ in range(threads)]

    def run(t: int) -> None:
        barrier.wait()
        for i in range(each):
            futures[t].append(submit(t * each + i))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [f for mine in futures for f in mine]


def test_a_lone_caller_writes_its_record_on_its_own_thread(store: Store) -> None:
    path = SqlitePath(store)  # no caller has met another yet
    try:
        takers: list[str] = []
        original = store.write_lock

        def counting() -> AbstractContextManager[None]:
            takers.append(threading.current_thread().name)
            return original()

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store, "write_lock", counting)
            futures = [path.record(record(offers=["o-1"], created_us=n)) for n in range(3)]
        assert all(f.done() for f in futures)  # written before record() returned
        assert [f.result() for f in futures] == [[]] * 3
        assert takers == [threading.current_thread().name] * 3
        assert path._writer._thread is None  # no writer thread was started
        assert report(store) == {"o-1": 3}
    finally:
        path.close()


def test_callers_that_meet_start_the_writer_thread(store: Store) -> None:
    path = SqlitePath(store)
    try:
        with store.write_lock():
            # The first caller writes itself and waits for the lock; the second finds it
            # writing, so it starts the writer thread and queues.
            first: list[Future[list[CounterKey]]] = []
            caller = threading.Thread(target=lambda: first.append(path.record(record())))
            caller.start()
            until(path._writer._writing.locked)
            second = path.record(record())
            assert not second.done()
            assert path._writer._thread is not None
        caller.join(timeout=30)
        assert first[0].result(timeout=30) == []
        assert second.result(timeout=30) == []
        assert len(events_of(store)) == 2
    finally:
        path.close()


def test_records_submitted_at_once_commit_together(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = path_of(store)
    commits = count_commits(path, monkeypatch)
    with store.write_lock():  # the writer waits: everything submitted meanwhile queues
        futures = from_threads(
            lambda n: path.record(record(offers=["o-1"], created_us=n)), threads=8, each=25
        )
        assert not any(f.done() for f in futures)
    assert [f.result(timeout=30) for f in futures] == [[]] * 200
    # The first batch is what the writer took before the lock; the rest is one batch.
    assert 1 <= commits[0] <= 2
    assert len(events_of(store)) == 200
    assert report(store) == {"o-1": 200}


def test_concurrent_reservations_meet_the_limit_exactly(store: Store) -> None:
    path = path_of(store)
    futures = from_threads(
        lambda n: path.record(record(offers=["o-1"], reserve=[(A, 150), (B, 1000)])),
        threads=8,
        each=25,
    )
    outcomes = [f.result(timeout=30) for f in futures]
    assert outcomes.count([]) == 150
    assert outcomes.count([A]) == 50
    assert path.counts([A, B]) == {A: 150, B: 150}
    assert len(events_of(store)) == 150
    assert report(store) == {"o-1": 150}


def test_records_of_one_batch_succeed_or_fail_alone(store: Store) -> None:
    path = path_of(store)
    with store.write_lock():
        first = path.record(record(offers=()))
        until(first.running)  # the writer holds its first batch and waits for the lock
        taken = record(offers=["o-1"], reserve=[(A, 1)], note="taken")
        full = record(offers=["o-2"], reserve=[(A, 1)])
        twin = record(taken.proposition_id, offers=["o-3"], reserve=[(B, 5)])
        plain = record(offers=["o-1"], note="plain")
        futures = [path.record(r) for r in (taken, full, twin, plain)]
    assert first.result(timeout=30) == []
    assert futures[0].result(timeout=30) == []
    assert futures[1].result(timeout=30) == [A]
    with pytest.raises(Conflict):
        futures[2].result(timeout=30)
    assert futures[3].result(timeout=30) == []
    assert stored(store, taken.proposition_id) == dict(taken.body)
    assert stored(store, full.proposition_id) is None
    assert stored(store, plain.proposition_id) == dict(plain.body)
    counts = path.counts([A, B])
    assert (counts[A], counts.get(B, 0)) == (1, 0)
    assert report(store) == {"o-1": 2}


def test_a_record_cancelled_before_its_batch_is_not_written(store: Store) -> None:
    path = path_of(store)
    first = record(offers=["o-1"], reserve=[(A, 5)])
    cancelled = record(offers=["o-2"], reserve=[(A, 5)])
    with store.write_lock():
        written = path.record(first)
        until(written.running)  # taken by the writer: no longer cancellable
        assert not written.cancel()
        dropped = path.record(cancelled)
        assert dropped.cancel()
    assert written.result(timeout=30) == []
    last = record(offers=["o-3"])
    assert outcome(path, last) == []  # queued after the cancelled one: that one is done
    assert stored(store, first.proposition_id) is not None
    assert stored(store, cancelled.proposition_id) is None
    assert stored(store, last.proposition_id) is not None
    assert path.counts([A]) == {A: 1}
    assert report(store) == {"o-1": 1, "o-3": 1}


def written(url: str) -> int:
    reopened = Store.open(url)
    try:
        return len(events_of(reopened))
    finally:
        reopened.close()


def test_close_writes_what_was_queued_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = Store.open(url)
    assert outcome(path_of(store), record(created_us=0)) == []  # the writer is running
    futures = [path_of(store).record(record(created_us=n)) for n in range(1, 51)]
    close(store)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [[]] * 50
    assert written(url) == 51


def test_close_writes_what_was_queued_before_the_writer_connected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = Store.open(url)
    path = path_of(store)
    assert isinstance(path, SqlitePath)
    # The writer thread is scheduled only once close() has begun (it may be, in any run):
    # made certain here by holding its first connect until then.
    connect = path._connect

    def scheduled_late(**options: bool) -> sqlite3.Connection:
        if threading.current_thread().name == "nextoffer-decision-writer":
            until(lambda: path._closed)
        return connect(**options)

    monkeypatch.setattr(path, "_connect", scheduled_late)
    futures = [path.record(record(created_us=n)) for n in range(50)]
    close(store)
    assert all(f.done() for f in futures)
    assert [f.exception() for f in futures] == [None] * 50
    assert written(url) == 50


def test_a_record_after_close_is_unavailable(store: Store) -> None:
    path = path_of(store)
    assert outcome(path, record()) == []
    close(store)
    late = record()
    with pytest.raises(Unavailable):
        path.record(late).result(timeout=5)


def test_a_record_racing_close_is_answered(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    path = path_of(store)
    assert isinstance(path, SqlitePath)
    assert outcome(path, record()) == []  # the writer is running
    # record() has passed its check of _closed when close() is called (any scheduling may
    # do this): made certain here by holding record() in the writer's _start meanwhile.
    entered, go_on = threading.Event(), threading.Event()
    start_writer = path._writer._start

    def held() -> None:
        entered.set()
        go_on.wait(timeout=10)
        start_writer()

    monkeypatch.setattr(path._writer, "_start", held)
    racing: list[Future[list[CounterKey]]] = []
    recorder = threading.Thread(target=lambda: racing.append(path.record(record())))
    recorder.start()
    assert entered.wait(timeout=10)
    closer = threading.Thread(target=close, args=(store,))
    closer.start()
    closer.join(timeout=1)  # done at once, unless close() waits for the record to queue
    go_on.set()
    recorder.join(timeout=10)
    closer.join(timeout=30)
    assert len(racing) == 1
    # Written, or refused as closed: answered either way, not left waiting.
    error = racing[0].exception(timeout=2)
    assert error is None or isinstance(error, Unavailable)


def test_reads_after_close_are_unavailable(store: Store) -> None:
    path = path_of(store)
    assert path.profile("O@AdobeOrg", "prod", "Email", "a@x") is None  # opens this thread's
    close(store)
    with pytest.raises(Unavailable):
        path.profile("O@AdobeOrg", "prod", "Email", "a@x")
    elsewhere: list[BaseException] = []

    def read() -> None:
        try:
            path.counts([A])
        except BaseException as exc:
            elsewhere.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    reader.join()
    assert len(elsewhere) == 1
    assert isinstance(elsewhere[0], Unavailable)


def test_inline_reads_never_wait_for_a_writer(store: Store) -> None:
    path = path_of(store)
    assert path.inline
    with store.session(write=True) as session:  # a write transaction stays open meanwhile
        session.runtime.insert_profile("O@AdobeOrg", "prod", "p-1", {}, now="t")
        session.runtime.add_identities("O@AdobeOrg", "prod", "p-1", [("Email", "a@x")])
        started = time.monotonic()
        assert path.profile("O@AdobeOrg", "prod", "Email", "a@x") is None  # not committed
        assert path.counts([A]) == {}
        assert time.monotonic() - started < 1
    assert path.profile("O@AdobeOrg", "prod", "Email", "a@x") == ("p-1", {})


# -- writers of several processes ------------------------------------------------------

#: Holds the writer lock of a store for argv[2] seconds, then exits.
HOLDER = """
import sys, time
from nextoffer.storage.database import open_engine
from nextoffer.storage.store import Store
store = Store(open_engine(sys.argv[1]))
with store.write_lock():
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
store.close()
"""
HOLD = 0.6


@contextmanager
def held_elsewhere(url: str) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the writer lock of ``url`` for :data:`HOLD` seconds (from
    when this enters); on exit, the child has ended well."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, str(HOLD)], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        yield child
        assert child.wait(timeout=30) == 0


def test_a_session_write_waits_for_another_process_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = Store.open(url)
    try:
        with held_elsewhere(url):
            started = time.monotonic()
            add_profile(store, "p-1", [("Email", "a@x")], {"tier": "gold"})
            elapsed = time.monotonic() - started
        assert elapsed >= HOLD - 0.2
        assert path_of(store).profile("O@AdobeOrg", "prod", "Email", "a@x") == (
            "p-1",
            {"tier": "gold"},
        )
    finally:
        close(store)


def test_a_decision_record_waits_for_another_process_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = Store.open(url)
    try:
        path = path_of(store)
        with held_elsewhere(url):
            started = time.monotonic()
            future = path.record(record(reserve=[(A, 1)]))
            time.sleep(HOLD / 3)
            assert not future.done()
            assert future.result(timeout=30) == []
            elapsed = time.monotonic() - started
        assert elapsed >= HOLD - 0.2
        assert path.counts([A]) == {A: 1}
    finally:
        close(store)


# -- SQLite: two processes, each writing its batches on its own event loop ---------------


TWO_WRITERS = """
import asyncio, sys, uuid
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store

store = Store.open(sys.argv[1])
path = SqlitePath(store)
key = CounterKey("c-1", "xcore:offer:1", "globalCap")

def record():
    pid = str(uuid.uuid4())
    return DecisionRecord(pid, "c-1", "2026-03-04T10:00:00.000Z", 1_772_618_400_000_000, "p-1",
                          {"propositionId": pid}, "2026-03-04", ["o-1"], [(key, 300)])

async def main():
    print("ready", flush=True)
    sys.stdin.readline()  # both start at once
    outcomes = []
    for _ in range(20):  # 20 loop passes of 10 records, as requests arriving
        outcomes += await asyncio.gather(*(path.record(record()) for _ in range(10)))
    return outcomes

outcomes = asyncio.run(main())
path.close()
store.close()
print(sum(o == [] for o in outcomes), sum(o == [key] for o in outcomes), flush=True)
"""


def test_two_processes_loops_record_with_caps_exact(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = Store.open(url)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_WRITERS, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        with store.write_lock():  # both begin by finding the lock held
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            time.sleep(0.1)
        results = [child.communicate(timeout=60)[0].split() for child in children]
        assert [child.returncode for child in children] == [0, 0]
        taken = [int(result[0]) for result in results]
        refused = [int(result[1]) for result in results]
        # Every record answered, the cap exact: one process alone could take only 200.
        assert [t + r for t, r in zip(taken, refused, strict=True)] == [200, 200]
        assert sum(taken) == 300 and min(taken) >= 100
        path = path_of(store)
        assert path.counts([A]) == {A: 300}
        assert len(events_of(store)) == 300
        assert report(store) == {"o-1": 300}
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
        close(store)

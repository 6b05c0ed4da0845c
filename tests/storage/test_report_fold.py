"""The lean record and the fold (``storage/report_fold.py``) on SQLite and PostgreSQL: a
record writes its event and reservations and leaves the offers report to the fold; a fold
counts every event once — twice in a row, after a failed fold, after a process died
without folding, with folders of several processes at once; a backlog is folded in
bounded turns; the writer folds on its own turn (the event loop's, the writer thread's);
a batch job's record, which has no event, reports with its record."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import pytest

from nextoffer.errors import NextOfferError, Unavailable
from nextoffer.storage import group_commit, report_fold, sqlite_path
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import DecisionPath
from nextoffer.storage.pg_path import PgPath
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.backends import emptied_database
from support.decision_path_contract import A, events_of, outcome, record, report

Opened = tuple[Store, DecisionPath, str]


def open_path(store: Store) -> DecisionPath:
    return SqlitePath(store) if store.sqlite_path else PgPath(store)


@pytest.fixture(params=["sqlite", "postgresql"])
def opened(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opened]:
    url = f"sqlite:///{tmp_path / 'f.db'}" if request.param == "sqlite" else emptied_database()
    store = Store.open(url, pool_size=10)
    path = open_path(store)
    yield store, path, url
    path.close()
    store.close()


@pytest.fixture
def no_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fold on the writers' turns: only the folds a test asks for."""
    monkeypatch.setattr(group_commit, "FOLD_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_path, "FOLD_SECONDS", 3600.0)


def watermark(store: Store) -> tuple[int, int]:
    """(the fold's position, the last event's place)."""
    with store.engine.connect() as conn:
        position = conn.exec_driver_sql(
            "SELECT COALESCE(MAX(position), 0) FROM report_folds WHERE name = 'offers'"
        ).scalar()
        high = conn.exec_driver_sql("SELECT COALESCE(MAX(seq), 0) FROM decision_events").scalar()
    return int(position or 0), int(high or 0)


def test_a_record_writes_its_event_and_leaves_the_report_to_the_fold(
    opened: Opened, no_turns: None
) -> None:
    store, path, _ = opened
    first = record(offers=["o-1", "o-2"], reserve=[(A, 5)])
    assert outcome(path, first) == []
    assert len(events_of(store)) == 1
    assert path.counts([A]) == {A: 1}  # the reservation is durable before the answer
    assert report(store, folded=False) == {}  # the derived report is not written yet
    path.fold()
    assert report(store, folded=False) == {"o-1": 1, "o-2": 1}
    assert watermark(store) == (1, 1)


def test_folding_again_counts_nothing_twice(opened: Opened, no_turns: None) -> None:
    store, path, _ = opened
    for _ in range(3):
        assert outcome(path, record(offers=["o-1"])) == []
    path.fold()
    path.fold()
    assert report(store) == {"o-1": 3}  # folded once more by another process's path
    assert outcome(path, record(offers=["o-2"])) == []
    path.fold()
    assert report(store, folded=False) == {"o-1": 3, "o-2": 1}
    assert watermark(store) == (4, 4)


def test_a_failed_fold_moves_nothing_and_the_next_counts_once(
    opened: Opened, no_turns: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, path, _ = opened
    for _ in range(2):
        assert outcome(path, record(offers=["o-1"])) == []
    # The watermark's move fails after the report rows were added: all of it rolls back.
    monkeypatch.setattr(report_fold, "_MOVE", "UPDATE no_such_table SET x = ?")
    monkeypatch.setattr(report_fold, "_PG_MOVE", "UPDATE no_such_table SET x = %s")
    with pytest.raises(NextOfferError):
        path.fold()
    assert report(store, folded=False) == {}
    assert watermark(store) == (0, 2)
    monkeypatch.undo()
    path.fold()
    assert report(store, folded=False) == {"o-1": 2}


#: Records two decisions with its own decision path, then dies without closing it (no
#: fold on close, no fold on the writer's turn: they are due in an hour).
DIES = """
import os, sys
from nextoffer.storage import group_commit
group_commit.FOLD_SECONDS = 3600.0
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.store import Store
store = Store.open(sys.argv[1])
if store.sqlite_path:
    from nextoffer.storage.sqlite_path import SqlitePath as Path
else:
    from nextoffer.storage.pg_path import PgPath as Path
path = Path(store)
for n in range(2):
    done = path.record(DecisionRecord(
        proposition_id=f"dead-{n}", container_id="c-1", created="2026-03-04T10:00:00.000Z",
        created_us=n, profile_key="p", body={"n": n}, day="2026-03-04",
        proposed_offers=["o-9"],
    ))
    assert done.result(timeout=30) == []
os._exit(0)
"""


def test_a_process_that_dies_before_folding_loses_nothing(opened: Opened) -> None:
    store, path, url = opened
    died = subprocess.run([sys.executable, "-c", DIES, url], capture_output=True, timeout=60)
    assert died.returncode == 0, died.stderr.decode()
    assert len(events_of(store)) == 2
    assert report(store, folded=False) == {}  # the dead process folded nothing
    path.fold()  # any other process's fold counts them
    assert report(store, folded=False) == {"o-9": 2}


def test_folders_of_several_processes_count_every_event_once(opened: Opened) -> None:
    store, one, url = opened
    others = [Store.open(url, pool_size=10) for _ in range(2)]
    paths = [one, *(open_path(other) for other in others)]
    futures: list[Future[list[CounterKey]]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write(path: DecisionPath) -> None:
        for n in range(60):
            future = path.record(record(offers=["o-1", "o-2"] if n % 2 else ["o-1"]))
            with lock:
                futures.append(future)

    def fold(path: DecisionPath) -> None:
        while not stop.is_set():
            path.fold()

    try:
        writers = [threading.Thread(target=write, args=(p,)) for p in paths]
        folders = [threading.Thread(target=fold, args=(p,)) for p in paths]
        for thread in (*writers, *folders):
            thread.start()
        for thread in writers:
            thread.join()
        assert [f.result(timeout=60) for f in futures] == [[]] * 180
        stop.set()
        for thread in folders:
            thread.join()
    finally:
        stop.set()
        for path, other in zip(paths[1:], others, strict=True):
            path.close()
            other.close()
    assert report(store) == {"o-1": 180, "o-2": 90}
    position, high = watermark(store)
    assert position == high


def test_a_backlog_is_folded_in_bounded_turns(
    opened: Opened, no_turns: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, path, _ = opened
    for _ in range(10):
        assert outcome(path, record(offers=["o-1"])) == []
    monkeypatch.setattr(group_commit, "FOLD_EVENTS", 4)
    writer = path._writer  # type: ignore[attr-defined]
    turns = []
    with writer._writing:
        for _ in range(5):
            writer._fold_turn(group_commit.FOLD_EVENTS)
            turns.append((writer._unfolded, watermark(store)[0]))
    assert turns[:3] == [(True, 4), (True, 8), (False, 10)]
    assert report(store, folded=False) == {"o-1": 10}


def test_the_writer_thread_folds_on_its_own_turn_when_records_stop(
    opened: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, path, _ = opened
    monkeypatch.setattr(group_commit, "FOLD_SECONDS", 0.05)
    writer = path._writer  # type: ignore[attr-defined]
    writer.start()
    folds: list[str] = []
    fold = writer._fold

    def counted(conn: object, limit: int | None) -> bool:
        folds.append(threading.current_thread().name)
        return bool(fold(conn, limit))

    monkeypatch.setattr(writer, "_fold", counted)
    assert outcome(path, record(offers=["o-1"])) == []
    deadline = time.monotonic() + 30
    while report(store, folded=False) != {"o-1": 1} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert report(store, folded=False) == {"o-1": 1}
    assert set(folds) == {"nextoffer-decision-writer"}


def test_sqlite_folds_on_the_event_loops_turn(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    path = SqlitePath(store)
    folds: list[str] = []
    fold = path._fold

    def counted(conn: object, limit: int | None) -> bool:
        folds.append(threading.current_thread().name)
        return fold(conn, limit)  # type: ignore[arg-type]

    path._fold = counted  # type: ignore[method-assign]

    async def decide() -> dict[str, int]:
        written = [path.record(record(offers=["o-1"])) for _ in range(5)]
        assert [await w for w in written] == [[]] * 5  # type: ignore[misc]
        assert report(store, folded=False) == {}  # answered before the fold
        # The fold is due FOLD_SECONDS after the batch; a later timer runs after it.
        await asyncio.sleep(report_fold.FOLD_SECONDS * 2)
        return report(store, folded=False)

    try:
        assert asyncio.run(decide()) == {"o-1": 5}
        assert folds and set(folds) == {threading.current_thread().name}
    finally:
        path.close()
        store.close()


def test_a_record_without_an_event_reports_with_its_record(opened: Opened, no_turns: None) -> None:
    store, path, _ = opened
    batch = replace(record(offers=["o-5", "o-6"]), body=None)  # a batch job's
    assert outcome(path, batch) == []
    assert events_of(store) == []
    assert report(store, folded=False) == {"o-5": 1, "o-6": 1}
    path.fold()
    assert report(store, folded=False) == {"o-5": 1, "o-6": 1}


def test_close_folds_what_is_left(opened: Opened, no_turns: None) -> None:
    store, _, url = opened
    other = Store.open(url, pool_size=10)
    path = open_path(other)
    try:
        for _ in range(3):
            assert outcome(path, record(offers=["o-1"])) == []
        assert report(store, folded=False) == {}
    finally:
        path.close()
        other.close()
    assert report(store, folded=False) == {"o-1": 3}


def test_a_failed_fold_on_the_loop_is_tried_again_a_turn_later(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'l.db'}")
    path = SqlitePath(store)
    calls: list[float] = []
    fold = path._fold

    def failing_once(conn: object, limit: int | None) -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise Unavailable("the database is locked")
        return fold(conn, limit)  # type: ignore[arg-type]

    path._fold = failing_once  # type: ignore[method-assign]

    async def decide() -> dict[str, int]:
        written = [path.record(record(offers=["o-1"])) for _ in range(3)]
        assert [await w for w in written] == [[]] * 3  # type: ignore[misc]
        # Due at 1×, failed; again at 2× (not at once, over and over); done by 2.5×.
        await asyncio.sleep(report_fold.FOLD_SECONDS * 2.5)
        return report(store, folded=False)

    try:
        assert asyncio.run(decide()) == {"o-1": 3}
        assert len(calls) == 2
        assert calls[1] - calls[0] >= report_fold.FOLD_SECONDS * 0.9
    finally:
        path.close()
        store.close()

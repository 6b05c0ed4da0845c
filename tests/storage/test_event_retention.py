"""Retention's deletes (``Runtime.prune_decision_events``, ``prune_experience_events``) on
SQLite and PostgreSQL: old decision events go once the offers report counted them, and
the report keeps its counts; events it has not counted stay, however old; the newest
event always stays, so the next one still gets a place the fold has not passed; a walk
stops at the first event made after the limit; experience events go by their own
timestamp, the oldest first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nextoffer.storage import group_commit, sqlite_path
from nextoffer.storage.decision_path import DecisionPath
from nextoffer.storage.pg_path import PgPath
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.backends import emptied_database
from support.decision_path_contract import events_of, outcome, record, report

Opened = tuple[Store, DecisionPath]
DAY_US = 86_400 * 1_000_000
T0 = 1_772_618_400_000_000  # the records' time (2026-03-04T10:00Z)


@pytest.fixture(params=["sqlite", "postgresql"])
def opened(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Opened]:
    # Only the folds a test asks for.
    monkeypatch.setattr(group_commit, "FOLD_SECONDS", 3600.0)
    monkeypatch.setattr(sqlite_path, "FOLD_SECONDS", 3600.0)
    url = f"sqlite:///{tmp_path / 'f.db'}" if request.param == "sqlite" else emptied_database()
    store = Store.open(url, pool_size=10)
    path = SqlitePath(store) if store.sqlite_path else PgPath(store)
    yield store, path
    path.close()
    store.close()


def prune_decisions(store: Store, before_us: int, limit: int = 1000) -> int:
    return store.write(lambda s: s.runtime.prune_decision_events(before_us=before_us, limit=limit))


def notes(store: Store) -> list[str]:
    return [event["note"] for event in events_of(store)]


def test_counted_events_past_the_limit_go_and_the_report_keeps_its_counts(
    opened: Opened,
) -> None:
    store, path = opened
    for day, offer in ((0, "o-1"), (1, "o-1"), (2, "o-2"), (9, "o-2")):
        outcome(path, record(offers=[offer], created_us=T0 + day * DAY_US, note=f"day {day}"))
    path.fold()
    assert report(store, folded=False) == {"o-1": 2, "o-2": 2}
    assert prune_decisions(store, before_us=T0 + 5 * DAY_US) == 3
    assert notes(store) == ["day 9"]
    assert report(store) == {"o-1": 2, "o-2": 2}


def test_events_the_report_has_not_counted_stay_however_old(opened: Opened) -> None:
    store, path = opened
    outcome(path, record(created_us=T0, note="counted"))
    path.fold()
    outcome(path, record(created_us=T0, note="not counted yet"))
    outcome(path, record(created_us=T0 + 9 * DAY_US, note="new"))
    assert prune_decisions(store, before_us=T0 + 5 * DAY_US) == 1
    assert notes(store) == ["not counted yet", "new"]
    assert report(store) == {"o-1": 3}  # the fold counts what stayed, once


def test_the_newest_event_stays_and_the_next_one_is_still_counted(opened: Opened) -> None:
    store, path = opened
    outcome(path, record(offers=["o-1"], created_us=T0, note="first"))
    outcome(path, record(offers=["o-1"], created_us=T0, note="second"))
    path.fold()
    assert prune_decisions(store, before_us=T0 + 100 * DAY_US) == 1
    assert notes(store) == ["second"]
    # On SQLite the next place is the largest + 1: had the table been emptied, the new
    # event would take a place at or below the watermark and never be counted.
    outcome(path, record(offers=["o-3"], created_us=T0, note="third"))
    assert report(store) == {"o-1": 2, "o-3": 1}


def test_a_walk_takes_at_most_its_limit_and_stops_at_a_newer_event(opened: Opened) -> None:
    store, path = opened
    for day in (0, 1, 6, 2, 3, 7):  # day 2's event comes after one made on day 6
        outcome(path, record(created_us=T0 + day * DAY_US, note=f"day {day}"))
    path.fold()
    before = T0 + 5 * DAY_US
    assert prune_decisions(store, before_us=before, limit=1) == 1
    assert notes(store) == ["day 1", "day 2", "day 3", "day 6", "day 7"]  # by time made
    assert prune_decisions(store, before_us=before, limit=10) == 1
    # Day 2 and 3 wait behind day 6 (two nodes' clocks): a pass reads what it deletes.
    assert notes(store) == ["day 2", "day 3", "day 6", "day 7"]
    assert prune_decisions(store, before_us=before, limit=10) == 0


def add_event(store: Store, event_id: str, timestamp_us: int) -> None:
    store.write(
        lambda s: s.runtime.insert_event(
            "O@AdobeOrg",
            "prod",
            "p-1",
            event_id=event_id,
            event_type="web.webpagedetails.pageViews",
            timestamp="2026-03-04T10:00:00.000Z",
            timestamp_us=timestamp_us,
            body={"_id": event_id},
        )
    )


def test_experience_events_go_by_their_own_timestamp_the_oldest_first(opened: Opened) -> None:
    store, _ = opened
    # Sent in any order: the timestamp decides, not the arrival.
    for event_id, day in (("new", 9), ("old-2", 2), ("future", 400), ("old-0", 0), ("old-1", 1)):
        add_event(store, event_id, T0 + day * DAY_US)

    def prune(limit: int) -> int:
        return store.write(
            lambda s: s.runtime.prune_experience_events(before_us=T0 + 5 * DAY_US, limit=limit)
        )

    def kept() -> list[str]:
        with store.session() as session:
            return [e["_id"] for e in session.runtime.recent_events("p-1", limit=100)]

    assert prune(limit=2) == 2
    assert kept() == ["old-2", "new", "future"]
    assert prune(limit=2) == 1
    assert prune(limit=2) == 0
    assert kept() == ["new", "future"]
    add_event(store, "old-0", T0)  # its id is forgotten with it: stored again
    assert kept() == ["old-0", "new", "future"]

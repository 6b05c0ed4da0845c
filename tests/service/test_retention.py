"""Retention (``service/retention.py``): a pass deletes every event past its limit in
transactions of a few rows, telling its progress; a server's passes run by themselves
until closed, and none run without a limit; the limits are the root's settings, read
from the environment; ``nextoffer db prune`` runs one pass from a shell."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from nextoffer.cli import main
from nextoffer.errors import BadRequest
from nextoffer.root import NextOffer
from nextoffer.service.retention import Pruned, Retention
from nextoffer.settings import Settings
from nextoffer.storage import tables as t
from nextoffer.storage.session import Session
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.decision_path_contract import CONTAINER, events_of, fold, outcome, record, report

T0 = datetime(2026, 3, 4, 10, tzinfo=UTC)
NOW = T0 + timedelta(days=10)


def at(days: float) -> int:
    return int((T0 + timedelta(days=days)).timestamp() * 1_000_000)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A SQLite database holding seven decision events of days 0 to 6, counted in the
    offers report, and three experience events of days 0, 1 and 9."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store.open(url)
    path = SqlitePath(store)
    for day in range(7):
        outcome(path, record(offers=["o-1"], created_us=at(day), note=f"day {day}"))
    path.fold()
    for event_id, day in (("e-0", 0), ("e-1", 1), ("e-9", 9)):
        store.write(
            lambda s, event_id=event_id, day=day: s.runtime.insert_event(
                "O@AdobeOrg",
                "prod",
                "p-1",
                event_id=event_id,
                event_type="web.webpagedetails.pageViews",
                timestamp="2026-03-04T10:00:00.000Z",
                timestamp_us=at(day),
                body={"_id": event_id},
            )
        )
    path.close()
    store.close()
    yield url


def experience_events(store: Store) -> list[str]:
    with store.session() as session:
        return [e["_id"] for e in session.runtime.recent_events("p-1", limit=100)]


def test_a_pass_deletes_what_is_past_each_limit_a_few_rows_at_a_time(url: str) -> None:
    store = Store.open(url)
    retention = Retention(
        store,
        decision_events_days=5.5,  # before day 4.5: days 0-4
        experience_events_days=9.5,  # before day 0.5: day 0
        clock=lambda: NOW,
        rows=2,
        pause=0,
    )
    heard: list[Pruned] = []
    assert retention.prune(on_progress=heard.append) == Pruned(5, 1)
    assert heard == [Pruned(2, 0), Pruned(4, 0), Pruned(5, 0), Pruned(5, 1)]
    assert [e["note"] for e in events_of(store)] == ["day 5", "day 6"]
    assert experience_events(store) == ["e-1", "e-9"]
    assert report(store) == {"o-1": 7}
    assert retention.prune() == Pruned(0, 0)  # nothing left past the limits
    store.close()


def test_a_kind_without_a_limit_is_kept(url: str) -> None:
    store = Store.open(url)
    retention = Retention(
        store, decision_events_days=0, experience_events_days=5, clock=lambda: NOW
    )
    assert retention.prune() == Pruned(0, 2)
    assert len(events_of(store)) == 7
    store.close()


def test_a_servers_passes_run_by_themselves_until_closed(url: str) -> None:
    store = Store.open(url)
    retention = Retention(
        store, decision_events_days=5.5, experience_events_days=0, clock=lambda: NOW, every=0.05
    )
    retention.start()
    deadline = time.monotonic() + 10
    while len(events_of(store)) > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(events_of(store)) == 2
    retention.close()
    assert retention._thread is not None and not retention._thread.is_alive()
    store.close()


def test_without_a_limit_a_server_s_passes_delete_no_event_of_a_live_profile(
    url: str,
) -> None:
    # They run all the same: a deleted profile's decision events go without a retention.
    store = Store.open(url)
    retention = Retention(
        store, decision_events_days=0, experience_events_days=0, clock=lambda: NOW, every=0.01
    )
    retention.start()
    time.sleep(0.2)
    retention.close()
    assert retention._thread is not None and not retention._thread.is_alive()
    assert len(events_of(store)) == 7 and len(experience_events(store)) == 3
    store.close()


def test_the_limits_are_the_roots_settings_read_from_the_environment(url: str) -> None:
    env = {
        "NEXTOFFER_DB": url,
        "NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS": "30",
        "NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS": "0.5",
    }
    with NextOffer.open(Settings.from_env(env)) as no:
        assert no.retention.decision_events_days == 30
        assert no.retention.experience_events_days == 0.5
    with pytest.raises(BadRequest) as refused:
        Settings.from_env({"NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS": "-1"})
    assert str(refused.value) == (
        "NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS='-1': must be a number >= 0 "
        "(a number of days; 0: for ever)"
    )


def test_db_prune_deletes_what_its_flags_say_and_prints_how_many(url: str) -> None:
    # The events are days old against today's clock, so 1 day keeps none of the old ones
    # but the newest decision event (the next one's place follows it).
    result = CliRunner().invoke(
        main,
        [
            "db",
            "prune",
            "--db",
            url,
            "--decision-events-days",
            "1",
            "--experience-events-days",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.splitlines()[-1]
        == "deleted: 6 decision events, 3 experience events, 0 ranking trials, "
        "0 decision events and 0 cap counters of deleted profiles"
    )
    store = Store.open(url)
    assert [e["note"] for e in events_of(store)] == ["day 6"]
    assert report(store) == {"o-1": 7}
    store.close()


def test_db_prune_without_a_retention_deletes_no_event_of_a_live_profile(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS", raising=False)
    monkeypatch.delenv("NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS", raising=False)
    result = CliRunner().invoke(main, ["db", "prune", "--db", url])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "deleted: 0 decision events, 0 experience events, 0 ranking trials, "
        "0 decision events and 0 cap counters of deleted profiles"
    )
    store = Store.open(url)
    assert len(events_of(store)) == 7
    store.close()


def test_a_pass_deletes_the_ranking_trials_of_decisions_past_the_limit(url: str) -> None:
    # A strategy's counted displays and successes (ranking_trials) are kept as long as
    # the decisions they are of: feedback on an older proposition counts for nothing.
    store = Store.open(url)
    with store.session(write=True) as session:
        session.ranking.claim("c1", {("old", 0, "o-1", 0): at(1), ("old", 0, "o-1", 1): at(1)})
        session.ranking.claim("c1", {("new", 0, "o-1", 0): at(6)})
    retention = Retention(
        store, decision_events_days=5.5, experience_events_days=0, clock=lambda: NOW, pause=0
    )
    assert retention.prune() == Pruned(5, 0, 2)
    with store.session(write=True) as session:  # what is left is still counted once
        assert session.ranking.claim("c1", {("new", 0, "o-1", 0): at(6)}) == set()
        assert session.ranking.claim("c1", {("old", 0, "o-1", 0): at(1)}) == {("old", 0, "o-1", 0)}
    store.close()


#: The container of the events, owned by ``O@AdobeOrg``'s sandbox ``prod``.
_CONTAINER = {
    "container_id": CONTAINER,
    "org_id": "O@AdobeOrg",
    "sandbox": "prod",
    "container_type": "decisioning",
    "name": "c",
    "product_contexts": "[]",
    "etag": 1,
    "created": "t",
    "modified": "t",
    "created_by": "u",
    "modified_by": "u",
    "created_client": "k",
    "modified_client": "k",
}


def _event(session: Session, note: str, day: float, *, key: str = "p-1") -> None:
    """A decision event of ``key`` written as a record writes it, with no decision path
    open: nothing folds it into the offers report."""
    session.conn.execute(
        insert(t.decision_events).values(
            proposition_id=str(uuid.uuid4()),
            container_id=CONTAINER,
            created="2026-03-14T10:00:00.000000Z",
            created_us=at(day),
            profile_key=key,
            body=orjson.dumps({"note": note}).decode(),
            offers='["o-1"]',
        )
    )


def test_an_erasure_walks_a_few_places_at_a_time_and_waits_for_the_report(url: str) -> None:
    store = Store.open(url)
    with store.session(write=True) as session:
        session.conn.execute(insert(t.containers).values(**_CONTAINER))
        _event(session, "unfolded", 7)
        _event(session, "newest", 8)
    # p-1's profile deleted a day ago; another org's key of the same name is not ours.
    day_ago = "2026-03-13T10:00:00.000000Z"
    for org in ("O@AdobeOrg", "X@AdobeOrg"):
        store.write(lambda s, org=org: s.erasures.request(org, "prod", ["p-1"], now=day_ago))
    retention = Retention(
        store,
        decision_events_days=0,
        experience_events_days=0,
        clock=lambda: NOW,
        places=3,
        pause=0,
    )
    heard: list[Pruned] = []
    assert retention.prune(on_progress=heard.append) == Pruned(erased=7)
    assert [p.erased for p in heard] == [3, 6, 7]  # three places per transaction
    assert [e["note"] for e in events_of(store)] == ["unfolded", "newest"]
    fold(store)
    assert retention.prune() == Pruned(erased=1)  # counted now; the newest stays
    assert [e["note"] for e in events_of(store)] == ["newest"]
    with store.session(write=True) as session:
        _event(session, "after the deletion", 9)
    fold(store)
    assert retention.prune() == Pruned(erased=1)
    assert [e["note"] for e in events_of(store)] == ["after the deletion"]
    with store.session() as session:  # both done: the other org's found nothing of its own
        assert (
            session.conn.execute(select(func.count()).select_from(t.profile_erasures)).scalar_one()
            == 0
        )
    store.close()


def test_a_profile_s_events_written_just_after_its_deletion_go_too(url: str) -> None:
    # Another process decided from its profile cache, or a record was in flight: for a
    # while after the deletion the erasure follows the newest event (its profile id only).
    store = Store.open(url)
    with store.session(write=True) as session:
        session.conn.execute(insert(t.containers).values(**_CONTAINER))
    now = "2026-03-14T10:00:00.000000Z"
    keys = ["p-1", "identity:Email:a@x"]
    store.write(lambda s: s.erasures.request("O@AdobeOrg", "prod", keys, now=now))
    clock = [NOW]
    retention = Retention(
        store,
        decision_events_days=0,
        experience_events_days=0,
        clock=lambda: clock[0],
        settle=60,
        pause=0,
    )
    assert retention.prune() == Pruned(erased=6)  # all but the newest
    with store.session(write=True) as session:
        _event(session, "from a cache after the deletion", 7)
        _event(session, "another profile's", 8, key="p-2")
    fold(store)
    assert retention.prune() == Pruned(erased=2)  # day 6, and the cache's
    assert [e["note"] for e in events_of(store)] == ["another profile's"]
    clock[0] = NOW + timedelta(minutes=2)  # settled: it ends at the newest event now
    with store.session(write=True) as session:
        _event(session, "p-1 again, much later (cannot be: an id is never reused)", 9)
        _event(session, "the newest", 10, key="p-2")
    fold(store)
    assert retention.prune() == Pruned()
    with store.session() as session:
        queued = session.conn.execute(select(func.count()).select_from(t.profile_erasures))
        assert queued.scalar_one() == 0
    assert len(events_of(store)) == 3
    store.close()


def test_an_event_dated_far_ahead_stops_no_pass(url: str) -> None:
    # A node whose clock ran years ahead recorded the first event: the walk steps over it
    # (kept) and deletes the older events behind it.
    store = Store.open(url)
    with store.session(write=True) as session:
        first = select(func.min(t.decision_events.c.seq)).scalar_subquery()
        session.conn.execute(
            update(t.decision_events)
            .where(t.decision_events.c.seq == first)
            .values(created_us=at(3650))
        )
    retention = Retention(
        store, decision_events_days=5.5, experience_events_days=0, clock=lambda: NOW, pause=0
    )
    assert retention.prune() == Pruned(4)  # days 1-4; day 0's event now dates from 2036
    assert [e["note"] for e in events_of(store)] == ["day 5", "day 6", "day 0"]
    store.close()


@pytest.mark.parametrize("days", ["inf", "nan", "-1"])
def test_db_prune_refuses_a_number_of_days_that_is_none(url: str, days: str) -> None:
    result = CliRunner().invoke(main, ["db", "prune", "--db", url, "--decision-events-days", days])
    assert result.exit_code == 2, result.output
    assert "--decision-events-days" in result.output
    assert "Traceback" not in result.output


def test_a_retention_longer_than_any_date_keeps_every_event(url: str) -> None:
    store = Store.open(url)
    retention = Retention(
        store, decision_events_days=1e12, experience_events_days=1e12, clock=lambda: NOW
    )
    assert retention.prune() == Pruned()
    assert len(events_of(store)) == 7
    store.close()

"""Retention (``service/retention.py``): a pass deletes every event past its limit in
transactions of a few rows, telling its progress; a server's passes run by themselves
until closed, and none run without a limit; the limits are the root's settings, read
from the environment; ``nextoffer db prune`` runs one pass from a shell."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from nextoffer.cli import main
from nextoffer.errors import BadRequest
from nextoffer.root import NextOffer
from nextoffer.service.retention import Pruned, Retention
from nextoffer.settings import Settings
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.decision_path_contract import events_of, outcome, record, report

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


def test_without_a_limit_no_pass_runs(url: str) -> None:
    store = Store.open(url)
    retention = Retention(
        store, decision_events_days=0, experience_events_days=0, clock=lambda: NOW
    )
    assert not retention.enabled
    retention.start()
    assert retention._thread is None
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
        == "deleted: 6 decision events, 3 experience events, 0 ranking trials"
    )
    store = Store.open(url)
    assert [e["note"] for e in events_of(store)] == ["day 6"]
    assert report(store) == {"o-1": 7}
    store.close()


def test_db_prune_without_a_retention_is_refused_and_deletes_nothing(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS", raising=False)
    monkeypatch.delenv("NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS", raising=False)
    result = CliRunner().invoke(main, ["db", "prune", "--db", url])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: no retention to apply: give --decision-events-days or --experience-events-days"
        " (or set NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS / NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS)"
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

"""What ranking strategies learned, in SQL (SQLite and PostgreSQL): cells add up, the
version moves once per adding transaction, a reader gets only what changed, and two
writers at once lose nothing; the trials counted (``ranking_trials``): a key is claimed
once, and retention deletes the trials of old decisions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from nextoffer.storage import tables as t
from nextoffer.storage.store import Store
from support.backends import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = Store.open(f"sqlite:///{tmp_path / 'r.db'}")
        yield opened
        opened.close()
        return
    with fresh_database() as url:
        opened = Store.open(url, pool_size=10)
        yield opened
        opened.close()


def add(store: Store, cells: dict[tuple[str, str, int, int], float]) -> None:
    """One feedback transaction: ``cells``, and an impression of A (a click when the
    cells reward A) in the daily report."""
    clicked = int(("S", "A", 0, -1) in cells)
    with store.session(write=True) as session:
        session.ranking.add("c1", cells, {("S", "2026-01-01", "A", False): (1, clicked)})


def test_cells_add_up_and_readers_get_what_changed(store: Store) -> None:
    add(store, {("S", "A", 0, 0): 1.0, ("S", "A", 0, -1): 1.0})
    add(store, {("S", "A", 0, 0): 1.0, ("S", "B", 0, 0): 1.0})
    with store.session() as session:
        version, cells = session.ranking.changes("c1", 0)
        assert version == 2
        totals = {(c.strategy_id, c.offer_id, c.row, c.col): c.value for c in cells}
        assert totals == {
            ("S", "A", 0, 0): 2.0,
            ("S", "A", 0, -1): 1.0,
            ("S", "B", 0, 0): 1.0,
        }
        assert session.ranking.changes("c1", 2) == (2, [])
    add(store, {("S", "B", 0, 0): 1.0})
    with store.session() as session:
        version, cells = session.ranking.changes("c1", 2)
        assert version == 3
        assert [(c.offer_id, c.value) for c in cells] == [("B", 2.0)]
        assert session.ranking.changes("other", 0) == (0, [])
        daily = session.ranking.daily("c1", "S", first_day="2026-01-01", last_day="2026-01-31")
    assert daily == [
        {"day": "2026-01-01", "offerId": "A", "explored": False, "impressions": 3, "clicks": 1}
    ]


def test_concurrent_writers_lose_nothing(store: Store) -> None:
    def writer() -> None:
        for _ in range(20):
            add(store, {("S", "A", 0, 0): 1.0})

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.session() as session:
        version, cells = session.ranking.changes("c1", 0)
    assert version == 80
    assert [c.value for c in cells] == [80.0]


def test_a_trial_is_claimed_once(store: Store) -> None:
    first = {("p1", 0, "A", 0): 10, ("p1", 0, "A", 1): 10}
    with store.session(write=True) as session:
        assert session.ranking.claim("c1", first) == set(first)
    with store.session(write=True) as session:
        again = session.ranking.claim("c1", {**first, ("p1", 1, "A", 0): 10})
    assert again == {("p1", 1, "A", 0)}  # another position of the decision is another trial


def test_retention_deletes_the_trials_of_old_decisions(store: Store) -> None:
    with store.session(write=True) as session:
        session.ranking.claim(
            "c1",
            {("old1", 0, "A", 0): 1, ("old1", 0, "A", 1): 1, ("old2", 0, "B", 0): 2},
        )
        session.ranking.claim("c1", {("new", 0, "A", 0): 50})
    with store.session(write=True) as session:
        assert session.ranking.prune_trials(before_us=10, limit=1) == 2  # old1, both rows
    with store.session(write=True) as session:
        assert session.ranking.prune_trials(before_us=10, limit=100) == 1
        assert session.ranking.prune_trials(before_us=10, limit=100) == 0
    with store.session() as session:
        left = session.conn.execute(select(t.ranking_trials.c.proposition_id)).scalars().all()
        assert left == ["new"]

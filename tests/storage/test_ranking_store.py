"""What ranking strategies learned, in SQL (SQLite and PostgreSQL): cells add up, the
version moves once per adding transaction, a reader gets only what changed, and two
writers at once lose nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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

"""The trials ranking strategies counted (``ranking_trials``, ``storage/ranking.py``), on
SQLite and PostgreSQL: a key is claimed once, and retention deletes the trials of old
decisions."""

from __future__ import annotations

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
        opened = Store.open(url)
        yield opened
        opened.close()


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

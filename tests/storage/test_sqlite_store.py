"""The storage contract on the embedded default, SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nextoffer.errors import BadRequest
from nextoffer.storage.store import Store
from support.store_contract import StoreContract


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'db' / 'n.db'}")
    yield opened
    opened.close()


class TestSQLiteStore(StoreContract):
    def test_wal_mode_is_on(self, store: Store) -> None:
        with store.session() as session:
            assert session.conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://x/y", "not a url"])
def test_unusable_database_urls_are_refused(url: str) -> None:
    with pytest.raises(BadRequest):
        Store.open(url)

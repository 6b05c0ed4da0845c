"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nextoffer.storage.store import Store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    """A SQLite database beside Redis: it lists the containers whose counters Redis holds
    (the counters' markers)."""
    store = Store.open(f"sqlite:///{tmp_path / 'markers.db'}")
    yield store
    store.close()

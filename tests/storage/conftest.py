"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.store import Store
from support.backends import redis_url


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    """A SQLite database beside Redis: it lists the containers whose counters Redis holds
    (the counters' markers)."""
    store = Store.open(f"sqlite:///{tmp_path / 'markers.db'}")
    yield store
    store.close()


@pytest.fixture
def counters(db: Store) -> Iterator[RedisCounters]:
    """Counters in the run's Redis, listed in ``db``."""
    opened = RedisCounters.from_url(redis_url(), store=db)
    yield opened
    opened.close()


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    """A plain client of the run's Redis, to look at or change what nextoffer keeps there."""
    client = redis.Redis.from_url(redis_url())
    yield client
    client.close()

"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.backends import emptied_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A test that takes it runs on both backends: a fresh SQLite file, an emptied
    PostgreSQL database (skipped, saying why, when no server was started)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nextoffer.db'}"
        return
    yield emptied_database()

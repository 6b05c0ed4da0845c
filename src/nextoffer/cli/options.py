"""Options several commands share, and the checks that go with them.

``--db``: a command that only uses a database refuses a SQLite file that is not there
(a mistyped path would otherwise become a new, empty database); ``serve``, ``admin
bootstrap`` and ``db upgrade`` create it. Imports nothing heavy: ``serve --help`` and
``pql`` start without the storage layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from nextoffer.errors import NotFound

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULT = "Database URL (default: $NEXTOFFER_DB, else ./.nextoffer/nextoffer.db)"


def db_option(*, creates: bool) -> Callable[[F], F]:
    """``--db`` (or ``NEXTOFFER_DB``), its help saying whether a missing SQLite file is
    created or refused."""
    help_text = (
        f"{_DEFAULT}; a SQLite file that does not exist is created."
        if creates
        else f"{_DEFAULT}; a SQLite file must exist (admin bootstrap or db upgrade makes one)."
    )
    return click.option("--db", "db_url", envvar="NEXTOFFER_DB", help=help_text)


def existing_database(url: str) -> str:
    """``url``, unless it names a SQLite file that does not exist (``NotFound``)."""
    from nextoffer.storage.database import sqlite_file

    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise NotFound(
            f"no database at {path}: run `nextoffer admin bootstrap` or "
            "`nextoffer db upgrade` to create one, or check --db (NEXTOFFER_DB)"
        )
    return url

"""Row locks a write takes on what it reads, so that what it checked holds until it commits.

On PostgreSQL two transactions read the same rows at once; one that checks a row and then
writes from what it read (an update merged onto it, a reference to it, a row added under
it) holds that row until it commits: ``"update"`` when it changes or deletes the row,
``"share"`` when it only needs the row to stay. SQLite compiles no ``FOR UPDATE``: every
writer there holds the database's write lock from its start (``Store.session``).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from sqlalchemy import Select

Lock = Literal["share", "update"] | None

S = TypeVar("S", bound=Select[Any])


def locked(query: S, lock: Lock, **of: Any) -> S:
    """``query`` reading its rows with ``lock`` (``of=`` names the table whose rows, when
    the query joins several)."""
    if lock is None:
        return query
    return query.with_for_update(read=lock == "share", **of)

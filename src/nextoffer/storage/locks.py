"""Row locks a write takes on what it reads, so that what it checked holds until it commits.

On PostgreSQL two transactions read the same rows at once; one that checks a row and then
writes from what it read (an update merged onto it, a reference to it, a row added under
it) holds that row until it commits, in PostgreSQL's modes: ``"update"`` when it deletes
the row (or must exclude every other writer of it), ``"no key update"`` when it changes
the row's other columns, ``"share"`` when the row must not change, ``"key share"`` when it
must only not be deleted. The weaker modes let more writers pass: an event stored under a
profile (``"key share"``) waits for no upsert of that profile (``"no key update"``), only
for its delete, so the two cannot deadlock over the order they lock profiles in. SQLite
compiles no ``FOR UPDATE``: every writer there holds the database's write lock from its
start (``Store.session``).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from sqlalchemy import Select

Lock = Literal["key share", "share", "no key update", "update"] | None

S = TypeVar("S", bound=Select[Any])


def locked(query: S, lock: Lock, **of: Any) -> S:
    """``query`` reading its rows with ``lock`` (``of=`` names the table whose rows, when
    the query joins several)."""
    if lock is None:
        return query
    return query.with_for_update(
        read=lock in ("key share", "share"), key_share=lock in ("key share", "no key update"), **of
    )

"""Driver errors become ours, here and nowhere else.

A constraint the write broke → :class:`~nextoffer.errors.Conflict`; a value the database
cannot hold (a data exception: a number out of its range, a NUL in text; on SQLite an
integer past 64 bits, which the driver refuses before the database sees it; on PostgreSQL
a value past one of its limits, such as an index entry's size) →
:class:`~nextoffer.errors.BadRequest`, since the request carried it; the database gone,
locked too long or out of connections → :class:`~nextoffer.errors.Unavailable`.
SQLAlchemy's errors (sessions), the drivers' own on the decision paths' connections
(``sqlite3``'s and psycopg's) and asyncpg's (the loop's PostgreSQL path) are all mapped
by :func:`translated`; :func:`guarded` applies it to a block.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError as SqlDataError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from nextoffer.errors import BadRequest, Conflict, NextOfferError, Unavailable

_Errors = tuple[type[Exception], ...]


def _driver_errors() -> tuple[_Errors, _Errors, _Errors]:
    """(integrity errors, data errors, every error) of the drivers this process has
    loaded: psycopg's and asyncpg's only once a PostgreSQL store imported them (a SQLite
    server never loads them, and nothing raises their errors before they are loaded)."""
    integrity: _Errors = (sqlite3.IntegrityError,)
    data: _Errors = (sqlite3.DataError,)
    errors: _Errors = (sqlite3.Error,)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        integrity, data = (*integrity, psycopg.IntegrityError), (*data, psycopg.DataError)
        errors = (*errors, psycopg.Error)
    asyncpg = sys.modules.get("asyncpg.exceptions")
    if asyncpg is not None:  # its errors carry the server's SQLSTATE (class 23, class 22)
        integrity = (*integrity, asyncpg.IntegrityConstraintViolationError)
        data = (*data, asyncpg.DataError)
        errors = (*errors, asyncpg.PostgresError)
    return integrity, data, errors


def _past_a_limit(cause: BaseException | None) -> bool:
    """Whether PostgreSQL refused a value as past one of its limits (SQLSTATE class 54:
    an index entry over 2,704 bytes, a key too long). The request carried it: sending it
    again cannot succeed, so it is no outage."""
    return str(getattr(cause, "sqlstate", "") or "").startswith("54")


def transient(exc: BaseException) -> bool:
    """Whether PostgreSQL gave the transaction up for another's sake (a deadlock, SQLSTATE
    40P01, or a serialization failure, 40001): made again, it may pass. ``exc`` is our
    error raised from the driver's (:func:`guarded`) or the driver's own."""
    cause = exc.__cause__ if isinstance(exc, NextOfferError) else exc
    if isinstance(cause, DBAPIError):
        cause = cause.orig
    return str(getattr(cause, "sqlstate", "") or "") in ("40P01", "40001")


def _too_large_for_sqlite(exc: BaseException) -> bool:
    """Whether ``exc`` is sqlite3's refusal to bind an integer past 64 bits: an
    ``OverflowError``, not a ``sqlite3.Error`` (nor wrapped by SQLAlchemy), known by the
    message the module gives it."""
    return isinstance(exc, OverflowError) and "to SQLite INTEGER" in str(exc)


def translated(exc: BaseException) -> NextOfferError | None:
    """Our error for a driver error; ``None`` for anything else (left to propagate)."""
    if isinstance(exc, NextOfferError):
        return exc
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    integrity, data, errors = _driver_errors()
    if isinstance(exc, (SqlIntegrityError, *integrity)):
        return Conflict(f"the write conflicts with stored data: {cause}")
    if isinstance(exc, (SqlDataError, *data)) or _too_large_for_sqlite(exc):
        return BadRequest(f"a value the database cannot hold: {cause}")
    if _past_a_limit(cause):
        return BadRequest(f"a value too large for the database to index: {cause}")
    if isinstance(exc, (DBAPIError, *errors)):
        return Unavailable(f"the database is unavailable: {cause}", retry_after=1)
    if isinstance(exc, PoolTimeout):
        return Unavailable(f"no database connection free: {exc}", retry_after=1)
    return None


@contextmanager
def guarded(about: str | None = None) -> Iterator[None]:
    """Raise driver errors of the block as ours (:func:`translated`); ``about`` leads
    their detail when the block reaches more than one database or table (which one
    refused). Our own errors pass unchanged: they say what they are about."""
    try:
        yield
    except Exception as exc:
        ours = translated(exc)
        if ours is None or ours is exc:
            raise
        if about is not None:
            ours = type(ours)(f"{about}: {ours.detail}")
        raise ours from exc

"""Driver errors become ours, here and nowhere else.

A constraint the write broke → :class:`~nextoffer.errors.Conflict`; a value the database
cannot hold (a data exception: a number out of its range, a NUL in text; on SQLite an
integer past 64 bits, which the driver refuses before the database sees it; on PostgreSQL
a value past one of its limits, such as an index entry's size) →
:class:`~nextoffer.errors.BadRequest`, since the request carried it; the database gone,
locked too long or out of connections → :class:`~nextoffer.errors.Unavailable`, and a
server that answered and refused us (user, password, database name, access rules) →
:class:`~nextoffer.errors.DatabaseRefused`. The driver's own words, which may name a
host, a port, a role or a file, go in the error's ``internal`` text for the operator,
not in the detail a client reads.
SQLAlchemy's errors (sessions), the drivers' own on the decision paths' connections
(``sqlite3``'s and psycopg's) and asyncpg's (the loop's PostgreSQL path) are all mapped
by :func:`translated`; :func:`guarded` applies it to a block.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError as SqlDataError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from nextoffer.errors import BadRequest, Conflict, DatabaseRefused, NextOfferError, Unavailable

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


#: How libpq words a server's refusal of a connection, which psycopg raises with no
#: SQLSTATE: a failed authentication (password, SCRAM, peer, ident), a role or database
#: that does not exist, no ``pg_hba.conf`` rule for us, a role that may not log in, a
#: password the server asked for and the URL lacks. (asyncpg gives the SQLSTATE.)
_REFUSALS = re.compile(
    r"authentication failed|(?:role|database) \".*\" does not exist|no pg_hba\.conf entry"
    r"|not permitted to log in|no password supplied"
)


def _refused(cause: BaseException | None) -> bool:
    """Whether the database server refused our connection: SQLSTATE class 28 (invalid
    authorization) or 3D000 (no such database), or libpq's words for them."""
    state = str(getattr(cause, "sqlstate", "") or "")
    if state:
        return state.startswith("28") or state == "3D000"
    return _REFUSALS.search(str(cause)) is not None


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
        if _refused(cause):
            return DatabaseRefused(str(cause))
        return Unavailable("the database is unavailable", internal=str(cause))
    if isinstance(exc, PoolTimeout):
        return Unavailable("no database connection free", internal=str(exc))
    return None


def redis_unavailable(exc: Exception, store: str = "the cap counter store") -> Unavailable:
    """Our error for a Redis error: ``store`` (Redis) is unavailable, redis-py's words
    (which name its host and port) kept for the operator."""
    return Unavailable(f"{store} (Redis) is unavailable", internal=str(exc))


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
        if about is not None:  # ``ours`` is new (not ``exc``): ours to reword
            ours.reworded(f"{about}: {ours.detail}")
        raise ours from exc

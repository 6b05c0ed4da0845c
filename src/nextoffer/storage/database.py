"""Opening a database from a URL: engine options and per-dialect connection setup.

SQLite: one writer at a time, so writers begin with ``BEGIN IMMEDIATE`` (below).
PostgreSQL: no such lock; write paths rely on row-level conditional UPDATEs (etags, cap
limits) and ``INSERT … ON CONFLICT`` (``session.upsert``), which hold under concurrency.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from nextoffer.errors import BadRequest
from nextoffer.settings import sqlite_synchronous

#: Bytes the WAL file is cut back to when it restarts (a burst may grow it past this).
WAL_SIZE_LIMIT = 128 * 1024 * 1024


#: What a Redis URL needs when the redis client is not installed (:func:`require_client`).
REDIS = ("redis", "redis", "a Redis URL (--redis, NEXTOFFER_REDIS)")


def require_client(module: str, extra: str, needed_for: str) -> None:
    """Refuse, saying what to install, when an optional dependency is missing (a plain
    ``pip install .`` has no PostgreSQL or Redis client): not an ``ImportError``'s
    traceback at the first connection."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise BadRequest(
            f"{needed_for} needs the {module} package, not installed here: "
            f"pip install 'nextoffer[{extra}]' (in a clone: pip install '.[{extra}]')"
        ) from exc


def parse_url(url: str) -> URL:
    """``url`` parsed, or :class:`BadRequest` saying it is not a database URL."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a bad host, e.g. ``[::1``
        raise BadRequest(f"not a database URL: {url!r}") from exc


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///path`` URL names (``None`` for another database, or an
    in-memory one); raises :class:`BadRequest` for what is no database URL."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).expanduser()


def open_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``sqlite:///path`` or ``postgresql://…`` (or ``postgres://…``);
    folders are created."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgres":  # libpq's other scheme (psql, Heroku and others give it)
        parsed, backend = parsed.set(drivername="postgresql"), "postgresql"
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise BadRequest("an in-memory SQLite database cannot be shared; give a file path")
        folder = Path(database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file on the way (FileExistsError), /proc, no permission
            raise BadRequest(
                f"cannot create the folder {folder} of the SQLite database: {exc.strerror}"
                + (
                    f" ({exc.filename})"
                    if exc.filename and str(exc.filename) != str(folder)
                    else ""
                )
            ) from exc
        engine = create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            connect_args={"check_same_thread": False, "timeout": 30},
            # Keep every connection: an overflow connection is closed when returned, and
            # reopening one costs a connect and four PRAGMAs (seen on the decision path).
            pool_size=pool_size * 3,
            max_overflow=0,
        )
        _setup_sqlite(engine, sqlite_synchronous())
        return engine
    if backend == "postgresql":
        for client in ("psycopg", "asyncpg"):
            require_client(client, "postgres", "a PostgreSQL database")
        # Every worker of every node has its own pool: size it with the server's
        # max_connections in mind (docs/deploy.md). Pre-ping finds connections a database
        # restart broke, so the first request after an outage does not fail on one; the
        # connect timeout makes an unreachable host a prompt 503, not a hung request.
        return create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_timeout=30,
            connect_args={"connect_timeout": 5},
        )
    raise BadRequest(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _setup_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below) so that writers take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Checkpoints run on a thread of their own, not inside a commit (checkpoints.py).
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        # When the WAL restarts after a checkpoint, cut the file back to this size.
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # A writer that starts deferred can fail to upgrade its lock under contention
        # (SQLITE_BUSY without waiting); BEGIN IMMEDIATE waits for the lock instead.
        # Straight on the driver's connection: SQLAlchemy's work for a statement (an
        # execution context, events) is most of what a BEGIN costs, for nothing here.
        mode = connection.get_execution_options().get("nextoffer_write")
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if mode else "BEGIN")

"""The SQL store: one database, its connections, its writers' lock and its schema.

``Store.session(write=...)`` opens one transaction and yields a :class:`Session`
(``session.py``) whose methods read and write records. The service layer owns the
transaction: it opens the session, makes its calls, and the session commits when the
``with`` block ends without an error. A driver error becomes one of our errors at this
boundary (``errors.py``). The store opens nothing above itself: the decision path is
built on it by whoever composes the application (``nextoffer.root``).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TypeVar

from sqlalchemy import Engine, text

from nextoffer.errors import IdentityClaimed, Unavailable
from nextoffer.storage import migrations
from nextoffer.storage.checkpoints import Checkpointer
from nextoffer.storage.database import open_engine
from nextoffer.storage.errors import guarded, transient
from nextoffer.storage.session import Session

_PING = text("SELECT 1")
T = TypeVar("T")

#: How often a write that lost a claim or a deadlock is made (:meth:`Store.write`).
WRITE_ATTEMPTS = 3


class Store:
    """A database holding every tenant's data."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # SQLite has one writer at a time. Writers queue on locks that wake the next one
        # as soon as the lock is free: a thread lock within this process and an flock on
        # a file beside the database across processes (workers, CLI). SQLite's own busy
        # handler polls with sleeps, which showed in decision p99s with two workers
        # (docs/benchmarks.md); it stays as the fallback for writers that are not nextoffer.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        database = engine.url.database if self.dialect == "sqlite" else None
        self._lock_path = f"{database}-writer.lock" if database else None
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._checkpointer: Checkpointer | None = None

    @classmethod
    def open(cls, url: str, *, pool_size: int = 5) -> Store:
        store = cls(open_engine(url, pool_size=pool_size))
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def migrate(self) -> None:
        """Bring the schema to the newest revision, or refuse the database.

        An empty database is upgraded; one migrated by a newer nextoffer is refused; an
        older one is upgraded on SQLite and refused on PostgreSQL, where an operator runs
        ``nextoffer db upgrade`` once for all nodes (``storage/migrations``).
        """
        with guarded():
            migrations.prepare(self.engine, upgrade_older=self.dialect == "sqlite")

    def close(self) -> None:
        if self._checkpointer is not None and self._lock_pid == os.getpid():
            self._checkpointer.close()
        self._checkpointer = None
        self.engine.dispose()
        if self._lock_fd is not None and self._lock_pid == os.getpid():
            os.close(self._lock_fd)
        self._lock_fd = None

    def ping(self) -> None:
        """One round trip to the database; :class:`Unavailable` when it does not answer."""
        with self.session() as session:
            session.conn.execute(_PING)

    @property
    def sqlite_path(self) -> str | None:
        """The database file, for SQLite (``None`` for other databases)."""
        return self.engine.url.database if self.dialect == "sqlite" else None

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the right to write (SQLite: one writer across threads and processes).

        A no-op on PostgreSQL, whose writers meet at row locks.
        """
        if self._write_lock is None:
            yield
            return
        with self._write_lock:
            fd = self._lock_file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_file(self) -> int:
        # Per process: an flock held through a descriptor inherited across fork would be
        # shared with the parent, so a child opens its own. A process that writes also
        # runs the WAL checkpoints its connections no longer run (``checkpoints.py``).
        if self._lock_fd is None or self._lock_pid != os.getpid():
            assert self._lock_path is not None and self.sqlite_path is not None
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_pid = os.getpid()
            self._checkpointer = Checkpointer(self.sqlite_path, write_lock=self.write_lock)
        return self._lock_fd

    def write(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` in one write transaction, made again in a new one when it
        lost the claim of a new identity to a concurrent write
        (:class:`~nextoffer.errors.IdentityClaimed`, ``Runtime.add_identity_rows``: the
        next attempt reads that claim) or PostgreSQL gave it up for another's sake (a
        deadlock: ``errors.transient``). ``work`` must not keep anything of a failed one."""
        attempt = 1
        while True:
            try:
                with self.session(write=True) as session:
                    return work(session)
            except Unavailable as exc:
                if attempt == WRITE_ATTEMPTS or not (
                    isinstance(exc, IdentityClaimed) or transient(exc)
                ):
                    raise
                attempt += 1

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        lock = self.write_lock() if write else nullcontext()
        with guarded(), lock, self.engine.connect() as conn:
            if write:
                conn = conn.execution_options(nextoffer_write=True)
            with conn.begin():
                session = Session(conn)
                yield session
                session.runtime.flush()

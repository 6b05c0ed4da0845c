"""What a compiled snapshot is built from, read in one driver statement.

A snapshot refresh (``service/catalogs.py``) needs the container's library version, its
cap epochs, its tenant's segment definitions and the instances written since the version
its snapshot was read at. Read through ``Store.session`` that was five statements, each
through SQLAlchemy's execution layer, plus a transaction's begin and end: most of a
refresh's CPU at Adobe's guardrail (docs/benchmarks.md, "A cheaper refresh"). Here they
are one ``UNION ALL`` statement, run by the driver on a connection this reader keeps
(checked out of the store's pool once, for the builder thread that refreshes): one
statement is one consistent read on SQLite (WAL) and on PostgreSQL (its snapshot), so the
version and the writes up to it come from the same moment, as ``Session.changes_since``
guarantees for the changes alone.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from nextoffer.storage.errors import translated
from nextoffer.storage.store import Store

#: The rows of one read: (kind, key, schema id, instance id, number, body).
#: kind 0: the container (number: its library version); 1: a cap epoch (key: offer,
#: number: epoch); 2: a segment definition (key: its id, body: the definition);
#: 3: an instance (key: ``@id``; schema id, instance id, etag, body — all ``NULL`` when
#: the instance written since is deleted now).
_HEAD = (
    "SELECT 0, CAST(NULL AS TEXT), CAST(NULL AS TEXT), CAST(NULL AS TEXT), "
    "library_version, CAST(NULL AS TEXT) FROM containers WHERE container_id = {m} "
    "UNION ALL SELECT 1, offer_id, NULL, NULL, epoch, NULL FROM cap_epochs "
    "WHERE container_id = {m} "
    "UNION ALL SELECT 2, s.segment_id, NULL, NULL, NULL, s.body "
    "FROM segment_definitions s JOIN containers c "
    "ON s.org_id = c.org_id AND s.sandbox = c.sandbox WHERE c.container_id = {m} "
)
#: The writes after a library version (``ix_revisions_change_seq`` finds them; writes to
#: one container commit in version order: ``Session.bump_library_version``).
_CHANGES = _HEAD + (
    "UNION ALL SELECT 3, w.at_id, i.schema_id, i.instance_id, i.etag, i.body "
    "FROM (SELECT DISTINCT at_id FROM instance_revisions "
    "WHERE container_id = {m} AND change_seq > {m}) w "
    "LEFT JOIN instances i ON i.container_id = {m} AND i.at_id = w.at_id"
)
#: Every instance of the container (a first build).
_EVERYTHING = _HEAD + (
    "UNION ALL SELECT 3, at_id, schema_id, instance_id, etag, body FROM instances "
    "WHERE container_id = {m}"
)

#: (``@id``, schema id, instance id, etag, body); the last four ``None``: deleted.
Written = tuple[str, str | None, str | None, int | None, Any]


@dataclass(frozen=True, slots=True)
class LibraryState:
    """A container's library at one version, or what changed in it since another."""

    #: The library version read (0: no such container).
    version: int
    #: Offer ``@id`` → the epoch its counting restarted at.
    cap_epochs: dict[str, int]
    #: The tenant's segment definitions: id → PQL text.
    segments: dict[str, str]
    #: The instances read: all of them, or those written after the version asked for.
    written: list[Written]


class LibraryReader:
    """Reads :class:`LibraryState` on one driver connection of the store's pool, kept
    for the reader's life (meant for one thread: a cache's builder; a lock guards it
    anyway). A connection that fails is dropped and a new one taken next time."""

    def __init__(self, store: Store) -> None:
        self._store = store
        marker = "?" if store.dialect == "sqlite" else "%s"
        self._changes = _CHANGES.format(m=marker)
        self._everything = _EVERYTHING.format(m=marker)
        self._conn: Any = None
        self._reused = False
        self._lock = threading.Lock()

    def changes(self, container_id: str, since: int) -> LibraryState:
        """The version now and every instance written after version ``since``."""
        params = (container_id,) * 3 + (container_id, since, container_id)
        return self._read(self._changes, params)

    def everything(self, container_id: str) -> LibraryState:
        """The version now and every instance of the container."""
        return self._read(self._everything, (container_id,) * 4)

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The statement's rows on the kept connection (a new one when there is none); a
        connection that fails is dropped (``_reused`` says whether it was an old one)."""
        conn = self._conn
        self._reused = conn is not None
        try:
            if conn is None:
                conn = self._conn = self._store.engine.raw_connection()
                if self._store.dialect == "postgresql":
                    # One statement is its own snapshot: no transaction to end.
                    driver = conn.driver_connection
                    assert driver is not None
                    driver.autocommit = True
            cursor = conn.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except Exception:
            broken, self._conn = self._conn, None
            if broken is not None:
                broken.invalidate()
            raise

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            self._release(conn)

    def _read(self, sql: str, params: Sequence[Any]) -> LibraryState:
        with self._lock:
            try:
                rows = self._fetch(sql, params)
            except Exception as first:
                if not self._reused:
                    raise (translated(first) or first) from first
                # The kept connection may have died with the server (a restart, a
                # failover): the pool would have found out at checkout (pre-ping). A
                # read changes nothing, so it is tried once more on a new connection.
                try:
                    rows = self._fetch(sql, params)
                except Exception as exc:
                    raise (translated(exc) or exc) from exc
        version = 0
        epochs: dict[str, int] = {}
        segments: dict[str, str] = {}
        written: list[Written] = []
        loads = orjson.loads
        for kind, key, schema, instance_id, number, body in rows:
            if kind == 3:
                if schema is None:
                    written.append((key, None, None, None, None))
                else:
                    written.append((key, schema, instance_id, int(number), loads(body)))
            elif kind == 1:
                epochs[key] = int(number)
            elif kind == 2:
                segments[key] = loads(body)["expression"]["value"]
            else:
                version = int(number or 0)
        return LibraryState(version, epochs, segments, written)

    def _release(self, conn: Any) -> None:
        try:
            if self._store.dialect == "postgresql":
                conn.driver_connection.autocommit = False
            conn.close()  # back to the pool
        except Exception:
            conn.invalidate()

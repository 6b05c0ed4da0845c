"""WAL checkpoints off the write path: commits never checkpoint, the log stays bounded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nextoffer.storage.checkpoints import Checkpointer
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store


def wal_frames(path: str) -> int:
    """Frames in the WAL now (a passive checkpoint reports them, copying what it can)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _, frames, _ = Checkpointer.checkpoint(conn)
        return frames
    finally:
        conn.close()


def write_rows(store: Store, n: int, *, first: int = 0) -> None:
    for i in range(first, first + n):
        with store.session(write=True) as session:
            session.ensure_org(f"ORG{i}@AdobeOrg", now="2026-11-29T00:00:00Z")


def test_nextoffer_connections_do_not_checkpoint_inside_commits(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        path = store.sqlite_path
        assert path is not None
        stranger = sqlite3.connect(path)
        assert stranger.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # default
        stranger.close()
        pooled = store.engine.raw_connection()
        try:
            assert pooled.cursor().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        finally:
            pooled.close()
        decision_path = SqlitePath(store)
        try:
            decision_reads = decision_path._thread_conn()
            assert decision_reads.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        finally:
            decision_path.close()
        write_rows(store, 1)
        assert store._checkpointer is not None  # a writing process runs the checkpoints
    finally:
        store.close()


def test_a_long_log_is_restarted_under_the_write_lock(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        path = store.sqlite_path
        assert path is not None
        write_rows(store, 300)
        taken: list[int] = []
        original = store.write_lock

        def counting():  # type: ignore[no-untyped-def]
            taken.append(1)
            return original()

        checkpointer = Checkpointer(path, write_lock=counting, interval=3600, restart_frames=50)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            assert wal_frames(path) >= 300
            checkpointer.step(conn)
            assert taken == [1]  # past 50 frames: restarted under the lock
            write_rows(store, 1, first=300)  # the next writer starts the log from its beginning
            assert wal_frames(path) < 10
            checkpointer.step(conn)
            assert taken == [1]  # a short log is left to passive checkpoints
        finally:
            conn.close()
            checkpointer.close()
    finally:
        store.close()

"""WAL checkpoints on a thread of their own, off every writer's path.

SQLite in WAL mode appends commits to the ``-wal`` file and copies them back into the
database in a *checkpoint*. By default the connection whose commit passes 1,000 WAL pages
runs it, inside that commit, and with ``synchronous=NORMAL`` the checkpoint is where the
database file is synced: tens to hundreds of milliseconds on a busy disk, charged to one
unlucky request — while it holds the write lock every other writer (and every worker
process) waits for. nextoffer's connections turn automatic checkpoints off
(``database.py``) and each process that writes runs this thread instead: a ``PASSIVE``
checkpoint every ``interval`` seconds, which copies what it can without waiting for, or
blocking, readers and writers.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("nextoffer.storage")

#: Seconds between checkpoints: at a few thousand commits per second the WAL stays at a
#: few megabytes.
INTERVAL = 0.5


class Checkpointer:
    def __init__(self, path: str, *, interval: float = INTERVAL) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="nextoffer-checkpointer", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            while not self._stop.wait(self._interval):
                self.checkpoint(conn)
            self.checkpoint(conn)
        except sqlite3.Error as exc:  # the database went away: nothing to keep small
            log.error("WAL checkpoints stopped: %s", exc)
        finally:
            if conn is not None:
                conn.close()

    @staticmethod
    def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
        """(busy, WAL frames, frames copied) of one passive checkpoint."""
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

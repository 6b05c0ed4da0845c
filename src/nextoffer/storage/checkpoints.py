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

A passive checkpoint cannot finish while writers keep appending, and the WAL only starts
over from its beginning after a checkpoint that copied everything: under sustained writes
it would grow without end. So when it passes ``RESTART_FRAMES``, the thread takes the
store's write lock (every nextoffer writer waits on it) and restarts the log: the frames
left to copy are the few appended since the passive pass, but the database file is synced
again, so the lock is held for the length of a sync (docs/benchmarks.md, "Third round") —
rarely, as the threshold is high. The file is then cut back to ``journal_size_limit``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from nextoffer.storage.database import WAL_SIZE_LIMIT

log = logging.getLogger("nextoffer.storage")

#: Seconds between checkpoints (2 s was measured and not kept: docs/design.md).
INTERVAL = 0.5
#: WAL frames (pages) past which the log is restarted under the write lock: 128 MiB of
#: 4 KiB pages. The restart's sync holds every writer for as long as the disk takes, so
#: it should be rare: at the HTTP benchmark's rate of WAL, every several seconds at most.
RESTART_FRAMES = 32768
#: Longest a restart waits for readers, holding the write lock (milliseconds).
RESTART_WAIT_MS = 10


class Checkpointer:
    def __init__(
        self,
        path: str,
        *,
        write_lock: Callable[[], AbstractContextManager[None]],
        interval: float = INTERVAL,
        restart_frames: int = RESTART_FRAMES,
    ) -> None:
        self._path = path
        self._write_lock = write_lock
        self._interval = interval
        self._restart_frames = restart_frames
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="nextoffer-checkpointer", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self._path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            while not self._stop.wait(self._interval):
                self.step(conn)
            self.checkpoint(conn)
        except sqlite3.Error as exc:  # the database went away: nothing to keep small
            log.error("WAL checkpoints stopped: %s", exc)
        finally:
            if conn is not None:
                conn.close()

    def step(self, conn: sqlite3.Connection) -> None:
        """A passive checkpoint; a restart of the log when it has grown too long."""
        _, frames, _ = self.checkpoint(conn)
        if frames >= self._restart_frames:
            # A restart waits for readers still on the log: briefly, as writers wait
            # meanwhile; when it does not get through, the next step tries again.
            conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
            try:
                with self._write_lock():
                    self.checkpoint(conn, "RESTART")
            finally:
                conn.execute("PRAGMA busy_timeout=30000")

    @staticmethod
    def checkpoint(conn: sqlite3.Connection, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """(busy, WAL frames, frames copied) of one checkpoint."""
        busy, frames, copied = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(busy), int(frames), int(copied)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

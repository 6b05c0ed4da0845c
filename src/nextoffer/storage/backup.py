"""A consistent copy of a live SQLite database (``nextoffer db backup``).

Copying the file while a server runs can copy pages of different moments, and misses what
sits in the write-ahead log: a copy that may not open. SQLite's online backup copies the
database as one read transaction sees it instead. It does so in one step here: in WAL mode
the server's writers go on meanwhile (the copy is the database as it was when the backup
began) and the log cannot be checkpointed past that reader until it ends, so it grows for
the copy's duration. In small steps, every write of another connection would start the
copy again, and under a server's steady records it might never end. The copy is written
beside its destination in a partial file of its own (two backups to one name at once must
not write one file), checked (``PRAGMA quick_check``), then linked to its name, which
fails when a file took the name meanwhile: a backup never replaces one.

PostgreSQL has its own tools for this (``pg_dump``, docs/deploy.md).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from nextoffer.errors import BadRequest, Unavailable

#: Seconds between two progress reports while the copy is written.
PROGRESS_SECONDS = 0.2


def backup_sqlite(
    source: Path, dest: Path, *, on_progress: Callable[[int, int], None] | None = None
) -> int:
    """Copy the database ``source`` to ``dest``, which must not exist; ``on_progress``
    hears (bytes written, bytes to write). Returns the copy's size in bytes."""
    if dest.exists():
        raise _exists(dest)
    if not dest.parent.is_dir():
        raise BadRequest(f"no folder {dest.parent} to write the backup in")
    partial = _partial(dest)
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            with (
                sqlite3.connect(source, timeout=30) as src,
                sqlite3.connect(partial) as dst,
            ):
                src.backup(dst, pages=-1)
            src.close()
            dst.close()
        except BaseException as exc:  # reported by the waiting thread
            failed.append(exc)

    with sqlite3.connect(source, timeout=30) as probe:
        pages = probe.execute("PRAGMA page_count").fetchone()[0]
        size = probe.execute("PRAGMA page_size").fetchone()[0]
    probe.close()
    total = int(pages) * int(size)
    worker = threading.Thread(target=copy, name="nextoffer-backup", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(PROGRESS_SECONDS)
            if on_progress is not None and partial.exists():
                on_progress(min(partial.stat().st_size, total), total)
        if failed:
            raise Unavailable(f"the backup of {source} failed: {failed[0]}") from failed[0]
        with sqlite3.connect(f"{partial.absolute().as_uri()}?mode=rw", uri=True) as check:
            verdict = check.execute("PRAGMA quick_check").fetchone()[0]
        check.close()
        if verdict != "ok":
            raise Unavailable(f"the backup of {source} does not check out: {verdict}")
        _name(partial, dest)
    finally:
        for leftover in (partial, *(partial.with_name(partial.name + s) for s in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
    written = dest.stat().st_size
    if on_progress is not None:
        on_progress(written, written)
    return written


def _partial(dest: Path) -> Path:
    """A new, empty file beside ``dest`` for this backup's copy alone (``DEST.<random>.partial``,
    in sight: one a killed backup left behind is found by its name)."""
    try:
        handle, name = tempfile.mkstemp(prefix=f"{dest.name}.", suffix=".partial", dir=dest.parent)
    except OSError as exc:
        raise BadRequest(
            f"cannot write the backup in {dest.parent}: {exc.strerror or exc}"
        ) from None
    os.close(handle)
    return Path(name)


def _name(partial: Path, dest: Path) -> None:
    """Give the checked copy its name, unless a file took it meanwhile (another backup to
    the same name): a hard link never replaces one. On a file system without hard links,
    a rename after one more look."""
    try:
        os.link(partial, dest)
    except FileExistsError:
        raise _exists(dest) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise Unavailable(f"cannot name the backup {dest}: {exc.strerror or exc}") from None
        if dest.exists():
            raise _exists(dest) from None
        os.replace(partial, dest)


def _exists(dest: Path) -> BadRequest:
    return BadRequest(f"{dest} exists: give a new file (a backup never overwrites one)")

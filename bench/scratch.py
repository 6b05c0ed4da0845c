"""Work folders of the benchmarks: databases, server logs and copies, gone at exit.

A benchmark's folder holds a SQLite database of 100 MB or more and its servers' logs; left
in ``/tmp`` after every run they fill a shared machine's disk within a day.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str, keep: str | Path | None = None) -> Path:
    """A new folder under the system's temporary one, removed when the process exits; or
    ``keep`` (a folder the caller named, e.g. ``--workdir``), made if missing and left."""
    if keep is not None:
        folder = Path(keep)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder

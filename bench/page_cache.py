"""What another connection's commit costs a SQLite reader: its page cache starts over.

    .venv/bin/python bench/page_cache.py [--reads 5000] [--repeats 5]

SQLite keeps a page cache per connection. In WAL mode a connection that begins a read
after another connection committed finds the WAL index changed and drops its whole
cache, so the pages it reads next come from the file again (a ``pread`` and a WAL-index
lookup each). Two workers on one database commit ~150-250 batches a second each: every
commit of one empties the other's cache. This times the decision path's profile read
(``path_sql.PROFILE``, one random identity of ``http_decisions.py``'s 10,000 profiles) on
one connection: alone (its cache warm), after a one-row commit of another connection
before each read (the two-worker case at its worst), and after a commit of the same
connection (its own writes keep its cache), and after another connection's commit to a
second database file ATTACHed to the reader (what the reads would cost if the records a
decision writes lived in a file of their own: each file has its own WAL index, and a
commit to one leaves the page cache of the other valid). Interleaved per repeat; medians,
µs of the reading thread's CPU time per read (other processes' load does not count).
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import time
from collections.abc import Callable

from http_decisions import PROFILES, build
from scratch import scratch_dir

from nextoffer.storage.database import SQLITE_SYNCHRONOUS
from nextoffer.storage.path_sql import PROFILE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    workdir = scratch_dir("nextoffer-pagecache-")
    db = workdir / "bench.db"
    build(f"sqlite:///{db}")
    reader = sqlite3.connect(db, isolation_level=None)
    other = sqlite3.connect(db, isolation_level=None)
    records = workdir / "records.db"
    elsewhere = sqlite3.connect(records, isolation_level=None)
    elsewhere.execute("PRAGMA journal_mode=WAL")
    reader.execute("ATTACH DATABASE ? AS records", (str(records),))
    for conn in (reader, other, elsewhere):
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # As the server's connections (``database.py``): with SQLite's default (FULL) every
        # commit syncs the log, the committing thread sleeps in ``fdatasync``, and the read
        # after it pays for a cold CPU (~8 µs here), which no server read pays.
        conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
    for conn in (reader, other, elsewhere):
        conn.execute("CREATE TABLE IF NOT EXISTS bench_ticks (n INTEGER)")
    org, sandbox = reader.execute("SELECT org_id, sandbox FROM profile_identities").fetchone()
    rng = random.Random(1)

    def reads(before: Callable[[], object] | None) -> float:
        spent = 0
        for _ in range(args.reads):
            if before is not None:
                before()
            identity = f"user{rng.randrange(PROFILES)}@example.com"
            started = time.thread_time_ns()
            reader.execute(PROFILE, (org, sandbox, "Email", identity)).fetchone()
            spent += time.thread_time_ns() - started
        return spent / args.reads / 1000

    cases: dict[str, Callable[[], object] | None] = {
        "alone (warm cache)": None,
        "after another connection's commit": lambda: other.execute(
            "INSERT INTO bench_ticks VALUES (1)"
        ),
        "after its own connection's commit": lambda: reader.execute(
            "INSERT INTO bench_ticks VALUES (1)"
        ),
        "after another connection's commit to another file": lambda: elsewhere.execute(
            "INSERT INTO bench_ticks VALUES (1)"
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    reads(None)  # warm
    for _ in range(args.repeats):
        for name, before in cases.items():
            results[name].append(reads(before))
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        elsewhere.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"load average {os.getloadavg()}; {args.reads} reads × {args.repeats} repeats")
    print("| profile read | CPU µs (median) | min | max |\n|---|---:|---:|---:|")
    for name, values in results.items():
        print(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )


if __name__ == "__main__":
    main()

"""The SQLite record's write, statement by statement, per record of a batch.

    .venv/bin/python bench/record_write.py --db /tmp/x/bench.db [--batch 50] [--batches 120]
    PYTHONPATH=<other tree>/src .venv/bin/python bench/record_write.py --db /tmp/y/bench.db

Runs the group commit's steps (``SqlitePath._write_batch`` and the transaction around it)
one by one on a *copy* of ``--db`` (a database ``http_decisions.py``'s ``build`` made, e.g.
``asgi_decide.py``'s; its own tree's schema), timing each: ``BEGIN IMMEDIATE``, the
duplicate check (in trees that still run it on every batch), the counter read, the plan
(Python), the counters' upsert, the events' insert, the report rows' upsert (records
without an event only, since the lean record; every record before it), ``COMMIT``;
then, where the tree has one, a fold of the offers report every :data:`FOLD_EVERY`
batches (``report_fold``). Records look like the benchmark's decisions: version-7 ids, a
stored decision's body, three of ten offers, half of them reserving a global and a
per-profile counter. Prints medians in µs per record.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
from scratch import scratch_dir

from nextoffer.ids import utcnow, uuid7
from nextoffer.storage import sqlite_path as sp
from nextoffer.storage.counters import CounterKey, read_counts
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.group_commit import counter_owners, plan_batch
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store

#: Batches between two folds (about what a worker commits in the fold's 0.25 s at a few
#: thousand decisions per second, batches of 50).
FOLD_EVERY = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="a built benchmark database")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--batches", type=int, default=120)
    args = parser.parse_args()
    copy = scratch_dir("nextoffer-record-") / "copy.db"
    shutil.copy(args.db, copy)
    store = Store.open(f"sqlite:///{copy}")
    path = SqlitePath(store)
    conn = path._connect(writer=True)
    row = conn.execute("SELECT body, container_id FROM decision_events LIMIT 1").fetchone()
    body, container = orjson.loads(row[0]), row[1]
    offers = [f"xcore:personalized-offer:{n:016x}" for n in range(10)]
    rng = random.Random(1)
    events_in = getattr(sp, "EVENTS_IN_SQLITE", None) or sp.EVENTS_IN
    # A tree that writes a batch of events without looking its ids up first (the events'
    # unique key finds a stored one) runs no duplicate check: that step then reads ~0.
    looks_up_ids = not hasattr(sp, "_StoredAlready")

    def record() -> DecisionRecord:
        pid = str(uuid7(utcnow()))
        chosen = rng.sample(offers, 3)
        reserve: list[tuple[CounterKey, int]] = []
        if rng.random() < 0.5:
            scope = f"profile-{rng.randrange(10_000)}"
            reserve = [
                (CounterKey(container, chosen[0], "globalCap"), 10**9),
                (CounterKey(container, chosen[0], "profileCap", scope), 10**9),
            ]
        created = "2026-03-04T10:00:00.000000Z"
        return DecisionRecord(
            proposition_id=pid,
            container_id=container,
            created=created,
            created_us=1,
            profile_key="p",
            body={**body, "propositionId": pid},
            day=created[:10],
            proposed_offers=chosen,
            reserve=reserve,
        )

    names = ("begin", "duplicates", "counts", "plan", "counters", "events", "report", "commit")
    steps: dict[str, list[float]] = {name: [] for name in names}
    folds: list[float] = []
    for n in range(args.batches):
        records = [record() for _ in range(args.batch)]
        marks = [time.perf_counter()]
        conn.execute("BEGIN IMMEDIATE")
        marks.append(time.perf_counter())
        stored: set[str] = set()
        if looks_up_ids:
            ids = orjson.dumps([r.proposition_id for r in records]).decode()
            stored = {found[0] for found in conn.execute(sp._DUPLICATES, (ids,))}
        marks.append(time.perf_counter())
        owners = counter_owners(records)
        counts = read_counts(conn.execute, "sqlite", list(owners))
        marks.append(time.perf_counter())
        plan: Any = plan_batch(records, stored, counts, owners)
        marks.append(time.perf_counter())
        conn.executemany(sp.SET_COUNTS, plan.counters)
        marks.append(time.perf_counter())
        conn.executemany(events_in, plan.events)
        marks.append(time.perf_counter())
        if plan.daily:
            conn.executemany(sp.DAILY_IN, plan.daily)
        marks.append(time.perf_counter())
        conn.execute("COMMIT")
        marks.append(time.perf_counter())
        for name, start, end in zip(names, marks[:-1], marks[1:], strict=True):
            steps[name].append((end - start) / args.batch)
        if hasattr(path, "_fold") and n % FOLD_EVERY == FOLD_EVERY - 1:
            start = time.perf_counter()
            path._fold(conn, None)
            folds.append((time.perf_counter() - start) / (args.batch * FOLD_EVERY))
    warm = args.batches // 6
    figures = {name: statistics.median(values[warm:]) * 1e6 for name, values in steps.items()}
    if folds:
        figures["fold"] = statistics.median(folds[1:]) * 1e6
    print(f"µs per record, batches of {args.batch}, medians of {args.batches - warm}")
    print(" ".join(f"{name} {value:.2f}" for name, value in figures.items()))
    print(f"total {sum(figures.values()):.2f}")
    path.close()
    store.close()


if __name__ == "__main__":
    main()

"""What the Spark ledger (``storage.ledger.DecisionLedger``) costs a batch decision.

    .venv/bin/python bench/batch_ledger.py [--profiles 20000] [--rounds 3] [--workdir DIR]

On ``bench/batch.py``'s library and profiles (SQLite), one Spark-engine job whose engine
is this script: it decides the job's profiles with one ``ChunkDecider``, in chunks of
10,000, alternately through the decision path (the reference: what a batch decision
cost before the ledger) and through the job's ``DecisionLedger``, the counters, the
offers report and the ledger emptied before every round so each does the same work.

Prints, per round and as medians, the process's CPU per decision and the CPU the writer
spent per decision on its own thread (the path's ``SqlitePath._commit``, the ledger's
``DecisionLedger._write``: timed with ``time.thread_time`` around them), and the ledger's
rows' size on disk while they are held (``dbstat``), then the time to delete them all in
one transaction against ``forget_decisions``' bounded steps.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scratch import scratch_dir

from batch import MOMENT, prepare
from nextoffer.root import NextOffer
from nextoffer.service.batch.chunk import ChunkDecider, ChunkStats
from nextoffer.service.batch.jobs import BatchJobs
from nextoffer.settings import Settings
from nextoffer.storage import ledger as storage_ledger
from nextoffer.storage import sqlite_path
from nextoffer.storage.ledger import DecisionLedger

CHUNK = 10_000
#: Thread CPU seconds spent inside the timed writer functions, by name.
SPENT: Counter[str] = Counter()


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.thread_time() - started

    return run


def emptied(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        for table in ("cap_counters", "offer_daily", "batch_decisions"):
            conn.execute(f"DELETE FROM {table}")


class Alternating:
    """A batch engine (``name = "spark"``) that decides the job's profiles ``rounds``
    times through each writer, alternately."""

    name = "spark"

    def __init__(self, no: NextOffer, db: Path, rounds: int) -> None:
        self.no, self.db, self.rounds = no, db, rounds
        self.rounds_of: dict[str, list[tuple[float, float, int]]] = {"path": [], "ledger": []}
        self.ledger_rows: tuple[int, int] = (0, 0)
        #: A held row's offers and reservations, the shape the deletion test writes.
        self.sample: tuple[str, str] = ("[]", "[]")

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> ChunkStats:
        rows = [row for chunk in chunks(CHUNK) for row in chunk]
        for _ in range(self.rounds):
            for kind in ("path", "ledger"):
                emptied(self.db)
                ledger = None
                if kind == "ledger":
                    ledger = DecisionLedger(self.no.store, plan.job_id, plan.container_id)
                    ledger.attempt = "1"
                decider = ChunkDecider(plan, self.no.path, ledger=ledger)
                SPENT.clear()
                cpu = time.process_time()
                decided = 0
                for start in range(0, len(rows), CHUNK):
                    _, stats = decider.decide(rows[start : start + CHUNK])
                    decided += stats.members
                if ledger is not None:
                    ledger.close()
                    self.ledger_rows, self.sample = held_rows(self.db)
                writer = SPENT["path" if kind == "path" else "ledger"]
                self.rounds_of[kind].append((time.process_time() - cpu, writer, decided))
        return ChunkStats()


def held_rows(db: Path) -> tuple[tuple[int, int], tuple[str, str]]:
    """The ledger's rows and the bytes of its b-tree's pages; the offers and reservations
    of its row with the most reserved."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM batch_decisions").fetchone()[0]
        size = conn.execute(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE '%batch_decisions%'"
        ).fetchone()[0]
        sample = conn.execute(
            "SELECT offers, reserved FROM batch_decisions ORDER BY length(reserved) DESC LIMIT 1"
        ).fetchone()
    return (int(rows), int(size)), (sample[0], sample[1])


def deletes(
    no: NextOffer, db: Path, job_id: str, rows: int, sample: tuple[str, str]
) -> tuple[float, float]:
    """Seconds to delete ``rows`` ledger rows (each with ``sample``'s offers and
    reservations) in one transaction, then in ``forget_decisions``' bounded steps."""
    timings = []
    for bounded in (False, True):
        emptied(db)
        with sqlite3.connect(db) as conn:
            conn.executemany(
                "INSERT INTO batch_decisions (job_id, profile_id, attempt, day, offers, reserved)"
                " VALUES (?, ?, '1', '2026-06-01', ?, ?)",
                ((job_id, f"{n:036d}", *sample) for n in range(rows)),
            )
        started = time.perf_counter()
        if bounded:
            while True:
                with no.store.session(write=True) as session:
                    if not session.batch.forget_decisions(job_id, limit=10_000):
                        break
        else:
            with no.store.session(write=True) as session:
                session.conn.exec_driver_sql(
                    "DELETE FROM batch_decisions WHERE job_id = ?", (job_id,)
                )
        timings.append(time.perf_counter() - started)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deleted", type=int, default=1_000_000, help="rows deleted at once")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    folder = scratch_dir("nextoffer-ledger-", args.workdir)
    db = folder / "bench.db"
    settings = Settings(
        db_url=f"sqlite:///{db}", datasets_dir=str(folder / "datasets"), freeze_heap=False
    )
    principal, ids, segment_id, container_id, _ = prepare(
        settings, folder, "BENCH@AdobeOrg", "ledger", args.profiles
    )
    sqlite_path.SqlitePath._commit = timed("path", sqlite_path.SqlitePath._commit)  # type: ignore[method-assign]
    storage_ledger.DecisionLedger._write = timed("ledger", storage_ledger.DecisionLedger._write)  # type: ignore[method-assign]
    with NextOffer.open(settings, clock=lambda: MOMENT) as no:
        engine = Alternating(no, db, args.rounds)
        jobs = BatchJobs(
            no.store,
            catalogs=no.catalogs,
            repository=no.repository,
            datasets=no.datasets,
            clock=no.clock,
            ids=no.ids,
            engines={"spark": engine},
        )
        dataset = no.datasets.create(principal, {"name": "ledger"})
        body = {
            "xdm:segmentIds": [segment_id],
            "xdm:dataSetId": dataset.dataset_id,
            "xdm:propositionRequests": [
                {
                    "xdm:activityId": ids["decision"],
                    "xdm:placementId": ids["placement"],
                    "xdm:itemCount": 1,
                }
            ],
            "nextoffer:seed": 42,
        }
        job = jobs.submit(principal, body, container_id=container_id, engine="spark")
        claimed = jobs.claim(job.job_id)
        assert claimed is not None
        jobs.execute(claimed)
        jobs.close()
        at_once, bounded = deletes(no, db, job.job_id, args.deleted, engine.sample)
    print("| writer | decisions | process CPU µs a decision | writer thread CPU µs a decision |")
    print("|---|---:|---:|---:|")
    medians = {}
    for kind, rounds in engine.rounds_of.items():
        decided = rounds[0][2]
        cpu = [c / decided * 1e6 for c, _, _ in rounds]
        writer = [w / decided * 1e6 for _, w, _ in rounds]
        medians[kind] = (statistics.median(cpu), statistics.median(writer))
        each_cpu = ", ".join(f"{c:.1f}" for c in cpu)
        each_writer = ", ".join(f"{w:.1f}" for w in writer)
        print(
            f"| {kind} | {decided:,} | {medians[kind][0]:.1f} ({each_cpu})"
            f" | {medians[kind][1]:.1f} ({each_writer}) |"
        )
    print(
        f"ledger ÷ path: process {medians['ledger'][0] / medians['path'][0]:.2f}, writer"
        f" {medians['ledger'][1] / medians['path'][1]:.2f}"
    )
    rows, size = engine.ledger_rows
    print(f"ledger rows held: {rows:,}, {size:,} bytes ({size / max(rows, 1):.0f} a row)")
    print(
        f"deleting {args.deleted:,} rows: {at_once:.2f} s in one transaction, "
        f"{bounded:.2f} s in steps of 10,000"
    )


if __name__ == "__main__":
    main()

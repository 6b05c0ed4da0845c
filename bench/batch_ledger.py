"""What the Spark ledger (``storage.ledger.DecisionLedger``) costs a batch decision.

    .venv/bin/python bench/batch_ledger.py [--profiles 20000] [--rounds 3] [--workdir DIR]
        [--redis redis://HOST:PORT/N]

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

With ``--redis`` the counters are Redis's (``NEXTOFFER_REDIS_URL``), and the two writers
are today's Redis path (``CountersElsewhere``: a reservation in Redis, then the record's
own transaction, record by record) and the ledger with its part in Redis
(``storage.redis_ledger.RedisLedger``: one script run per writer batch, then one
transaction); the Redis counters and the job's hash are emptied before every round too.
Each round also reports its elapsed time per decision, and the CPU Redis's server spent
per decision (``INFO cpu``); the writer's thread CPU of the ledger then includes its
script's round trip (``DecisionLedger._write``), the path's only its transactions.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis
from scratch import scratch_dir

# The tests' batch runner (``support.batch``); appended, so that ``batch`` is this folder's.
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))

from batch import MOMENT, prepare
from nextoffer.root import NextOffer
from nextoffer.service.batch.chunk import ChunkDecider, ChunkStats
from nextoffer.settings import Settings
from nextoffer.storage import ledger as storage_ledger
from nextoffer.storage import sqlite_path
from nextoffer.storage.ledger import DecisionLedger
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.redis_ledger import RedisLedger
from support.batch import batch_runner

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


def emptied(db: Path, redis: Any = None) -> None:
    with sqlite3.connect(db) as conn:
        for table in ("cap_counters", "offer_daily", "batch_decisions"):
            conn.execute(f"DELETE FROM {table}")
    if redis is not None:  # the counters and ledgers, not the markers (a loss, else)
        names = [n for n in redis.scan_iter(match="nextoffer:cap:*", count=1000)]
        doomed = [n for n in names if b"|" in n or b":ledger:" in n]
        if doomed:
            redis.delete(*doomed)


def scripts(redis: Any) -> tuple[int, int]:
    """Redis's script runs so far (``EVALSHA`` and ``EVAL``) and the µs it spent in them:
    a script holds the server, which serves nothing else meanwhile."""
    if redis is None:
        return 0, 0
    stats = redis.info("commandstats")
    found = [stats.get(f"cmdstat_{name}", {}) for name in ("evalsha", "eval")]
    return sum(int(f.get("calls", 0)) for f in found), sum(int(f.get("usec", 0)) for f in found)


def redis_cpu(redis: Any) -> float:
    """Redis's server CPU seconds so far (0 without Redis)."""
    if redis is None:
        return 0.0
    info = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class Alternating:
    """A batch engine (``name = "spark"``) that decides the job's profiles ``rounds``
    times through each writer, alternately."""

    name = "spark"

    def __init__(self, no: NextOffer, db: Path, rounds: int, redis: Any = None) -> None:
        self.no, self.db, self.rounds, self.redis = no, db, rounds, redis
        #: Per kind, per round: script runs and the µs Redis spent in them.
        self.scripts_of: dict[str, list[tuple[int, int]]] = {"path": [], "ledger": []}
        #: Per round: process CPU, writer thread CPU, elapsed, Redis server CPU, decisions.
        self.rounds_of: dict[str, list[tuple[float, float, float, float, int]]] = {
            "path": [],
            "ledger": [],
        }
        self.ledger_rows: tuple[int, int] = (0, 0)
        #: A held row's offers and reservations, the shape the deletion test writes.
        self.sample: tuple[str, str] = ("[]", "[]")

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> ChunkStats:
        rows = [row for chunk in chunks(CHUNK) for row in chunk]
        for _ in range(self.rounds):
            for kind in ("path", "ledger"):
                emptied(self.db, self.redis)
                ledger = None
                if kind == "ledger":
                    in_redis = None
                    if self.redis is not None:
                        in_redis = RedisLedger(
                            cast(RedisCounters, self.no.counters), plan.container_id, plan.job_id
                        )
                        in_redis.open("1")
                    ledger = DecisionLedger(self.no.store, plan.job_id, plan.container_id, in_redis)
                    ledger.attempt = "1"
                decider = ChunkDecider(plan, self.no.path, ledger=ledger)
                SPENT.clear()
                server = redis_cpu(self.redis)
                runs, spent = scripts(self.redis)
                cpu, wall = time.process_time(), time.perf_counter()
                decided = 0
                for start in range(0, len(rows), CHUNK):
                    _, stats = decider.decide(rows[start : start + CHUNK])
                    decided += stats.members
                if ledger is not None:
                    ledger.close()
                    self.ledger_rows, self.sample = held_rows(self.db)
                writer = SPENT["path" if kind == "path" else "ledger"]
                now_runs, now_spent = scripts(self.redis)
                self.scripts_of[kind].append((now_runs - runs, now_spent - spent))
                self.rounds_of[kind].append(
                    (
                        time.process_time() - cpu,
                        writer,
                        time.perf_counter() - wall,
                        redis_cpu(self.redis) - server,
                        decided,
                    )
                )
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
    parser.add_argument("--redis", help="counters in this Redis (a database of its own)")
    args = parser.parse_args()
    folder = scratch_dir("nextoffer-ledger-", args.workdir)
    db = folder / "bench.db"
    settings = Settings(
        db_url=f"sqlite:///{db}",
        datasets_dir=str(folder / "datasets"),
        freeze_heap=False,
        redis_url=args.redis,
    )
    server = redis.Redis.from_url(args.redis) if args.redis else None
    principal, ids, segment_id, container_id, _ = prepare(
        settings, folder, "BENCH@AdobeOrg", "ledger", args.profiles
    )
    sqlite_path.SqlitePath._commit = timed("path", sqlite_path.SqlitePath._commit)  # type: ignore[method-assign]
    storage_ledger.DecisionLedger._write = timed("ledger", storage_ledger.DecisionLedger._write)  # type: ignore[method-assign]
    with NextOffer.open(settings, clock=lambda: MOMENT) as no:
        engine = Alternating(no, db, args.rounds, server)
        jobs = batch_runner(no, {"spark": engine})
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
    counters = f"Redis counters ({args.redis})" if args.redis else "database counters"
    print(f"{counters}; µs a decision, median (each round)")
    shown = 4 if args.redis else 3  # Redis's server CPU with Redis only
    heads = ["process CPU", "writer thread CPU", "elapsed", "Redis server CPU"][:shown]
    print(f"| writer | decisions | {' | '.join(heads)} |")
    print("|---|---:|" + "---:|" * shown)
    medians = {}
    for kind, rounds in engine.rounds_of.items():
        decided = rounds[0][4]
        columns = [[r[i] / decided * 1e6 for r in rounds] for i in range(shown)]
        medians[kind] = [statistics.median(c) for c in columns]
        cells = " | ".join(
            f"{m:.1f} ({', '.join(f'{v:.1f}' for v in c)})"
            for m, c in zip(medians[kind], columns, strict=True)
        )
        print(f"| {kind} | {decided:,} | {cells} |")
    ratios = ", ".join(
        f"{name} {medians['ledger'][i] / medians['path'][i]:.2f}"
        for i, name in enumerate(["process", "writer", "elapsed", "Redis"][:shown])
    )
    print(f"ledger ÷ path: {ratios}")
    if args.redis:
        for kind, rounds in engine.scripts_of.items():
            runs = statistics.median(r for r, _ in rounds)
            each = [u / max(r, 1) for r, u in rounds]
            print(
                f"{kind}: {runs:,.0f} script runs a round; Redis held by one run"
                f" {statistics.median(each):.1f} µs ({', '.join(f'{v:.1f}' for v in each)})"
            )
    rows, size = engine.ledger_rows
    print(f"ledger rows held: {rows:,}, {size:,} bytes ({size / max(rows, 1):.0f} a row)")
    print(
        f"deleting {args.deleted:,} rows: {at_once:.2f} s in one transaction, "
        f"{bounded:.2f} s in steps of 10,000"
    )


if __name__ == "__main__":
    main()

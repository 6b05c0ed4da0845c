"""What retention's deletes cost against the writes they undo (``service/retention.py``).

    .venv/bin/python bench/retention.py [--events 100000] [--repeats 3] [--db URL] [--plot PNG]
    .venv/bin/python bench/retention.py --beside-decisions [--backlog 200000] [--windows 4]
    .venv/bin/python bench/retention.py --erasures [--events 100000] [--repeats 3] [--db URL]
    .venv/bin/python bench/retention.py --counters [--events 1000000] [--db URL | --redis URL] \
        [--scan N]

Per repeat, on a new SQLite database (or a new database on the PostgreSQL server of
``--db postgresql://…``, which must let the user create databases): records ``--events``
decision events through the decision path (group-committed batches of 50, as the server
writes them; bodies of a stored decision's size, three offers each), made over 20 days,
folds them, then deletes the older half with ``Retention.prune`` (200 rows per
transaction, no pause). Then the same for experience events, stored 200 per transaction
and deleted by their timestamp. Prints, per kind, the process CPU (every thread) and wall
time per event written and per event deleted, and their ratio: the reference is the
write, measured in the same run. Medians over repeats.

``--beside-decisions``: what a pass does to decisions made meanwhile. The library and
profiles of ``http_decisions.py`` on SQLite; ``--backlog`` recorded decisions made 30 days
ago (a retention switched on over a full table: the longest a pass runs); then, in one
process as in a server worker, 50 tasks on an event loop decide and record without a
pause while windows of ``--seconds`` alternate: no pass, then a pass deleting that backlog
(7 days kept) in the process's thread, as ``Retention.start`` runs it. Prints per kind of
window the decisions per second and their latency (p50, p99), medians over windows, and
the rows a pass deleted per second.

``--erasures``: what walking a deleted profile's decision events costs
(``Erasures.erase_decision_events``). Per repeat, ``--events`` decision events recorded and
folded as above (10,000 profile keys), then 100 profiles' erasures queued together and
walked, ``retention.ERASE_PLACES`` places per transaction, each transaction timed. Prints
the wall time of one transaction (median, p99, max: how long SQLite's other writers wait
for it) against one group commit of 50 records in the same run (the reference), and the
places walked per second. Medians over repeats.

``--counters``: what erasing deleted profiles' cap counters costs (``CapCounterStore.erase``).
Per repeat, ``--events`` cap counters (10 offers' profile caps, each of ``--events / 10``
visitors counted under their identity, ``identity:Email:…``), then 100 of those
identities' erasures walked together, each step timed. On SQLite or PostgreSQL (``--db``)
a step reads 5,000 keys of the counters' table outside any write transaction and deletes
the matches in one (timed too: the write lock's hold); with ``--redis URL`` (a database
the bench flushes), a step is one ``SCAN`` of 1,000 and an ``UNLINK``, and the server's own
time per ``SCAN`` is read from ``INFO commandstats`` (reset first). The reference in the
same run: a group commit of 50 records (SQL), or a reservation of 20 counters (Redis).
Prints the times against it, and the counters walked per second; medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from scratch import scratch_dir
from sqlalchemy.engine import make_url

from nextoffer.service.retention import Retention
from nextoffer.storage.decision_path import DecisionPath, DecisionRecord
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store

DAYS = 20
BATCH = 50
EVENTS_PER_WRITE = 200
T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=DAYS)
#: What a stored decision event's body holds (docs/api.md): ~500 bytes as JSON.
OPTION = {"id": "xcore:personalized-offer:{n:016x}", "etag": 1, "score": 0.5}


def at_us(fraction: float) -> int:
    return int((T0 + timedelta(days=DAYS * fraction)).timestamp() * 1_000_000)


def body(proposition_id: str, n: int) -> dict[str, object]:
    return {
        "propositionId": proposition_id,
        "xdm:propositionRequestId": str(uuid.uuid4()),
        "profileKey": f"Email:user-{n % 10_000}@example.com",
        "propositions": [
            {
                "activity": "xcore:offer-activity:1a2b3c4d5e6f7081",
                "placement": "xcore:offer-placement:1a2b3c4d5e6f7082",
                "options": [
                    {**OPTION, "id": f"xcore:personalized-offer:{(n + k) % 100:016x}"}
                    for k in range(3)
                ],
            }
        ],
    }


def timed(work: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def decision_events(store: Store, path: DecisionPath, n: int) -> tuple[float, ...]:
    def write() -> None:
        record_events(path, n)

    write_cpu, write_wall = timed(write)
    path.fold()
    retention = Retention(
        store, decision_events_days=DAYS / 2, experience_events_days=0, clock=lambda: NOW, pause=0
    )
    deleted: list[int] = []
    prune_cpu, prune_wall = timed(lambda: deleted.append(retention.prune().decision_events))
    return write_cpu / n, write_wall / n, prune_cpu / deleted[0], prune_wall / deleted[0]


def experience_events(store: Store, n: int) -> tuple[float, ...]:
    def write() -> None:
        for start in range(0, n, EVENTS_PER_WRITE):

            def chunk(session, start=start):  # type: ignore[no-untyped-def]
                for i in range(start, min(n, start + EVENTS_PER_WRITE)):
                    # Sent out of order, as applications do: a timestamp from anywhere.
                    when = (i * 7919) % n / n
                    session.runtime.insert_event(
                        "O@AdobeOrg",
                        "prod",
                        f"p-{i % 10_000}",
                        event_id=str(uuid.uuid4()),
                        event_type="decisioning.propositionDisplay",
                        timestamp=(T0 + timedelta(days=DAYS * when)).isoformat(),
                        timestamp_us=at_us(when),
                        body=body(str(uuid.uuid4()), i),
                    )

            store.write(chunk)

    write_cpu, write_wall = timed(write)
    retention = Retention(
        store, decision_events_days=0, experience_events_days=DAYS / 2, clock=lambda: NOW, pause=0
    )
    deleted: list[int] = []
    prune_cpu, prune_wall = timed(lambda: deleted.append(retention.prune().experience_events))
    return write_cpu / n, write_wall / n, prune_cpu / deleted[0], prune_wall / deleted[0]


def record_events(path: DecisionPath, n: int) -> float:
    """``n`` decision events through ``path`` in group commits of :data:`BATCH`; the wall
    seconds of one commit (the median)."""
    commits = []
    for start in range(0, n, BATCH):
        began = time.perf_counter()
        futures = []
        for i in range(start, min(n, start + BATCH)):
            pid = str(uuid.uuid4())
            futures.append(
                path.record(
                    DecisionRecord(
                        proposition_id=pid,
                        container_id="c-1",
                        created=(T0 + timedelta(days=DAYS * i / n)).isoformat(),
                        created_us=at_us(i / n),
                        profile_key=f"Email:user-{i % 10_000}@example.com",
                        body=body(pid, i),
                        day=(T0 + timedelta(days=DAYS * i / n)).date().isoformat(),
                        proposed_offers=[f"o-{(i + k) % 100}" for k in range(3)],
                        reserve=[],
                    )
                )
            )
        for future in futures:
            future.result(timeout=60)
        commits.append(time.perf_counter() - began)
    return statistics.median(commits)


def erasures(store: Store, path: DecisionPath, n: int) -> tuple[float, ...]:
    from sqlalchemy import insert

    from nextoffer.service.retention import ERASE_PLACES
    from nextoffer.storage import tables as t

    commit = record_events(path, n)
    path.fold()
    store.write(
        lambda s: s.conn.execute(
            insert(t.containers).values(
                container_id="c-1",
                org_id="BENCH@AdobeOrg",
                sandbox="prod",
                container_type="decisioning",
                name="bench",
                product_contexts="[]",
                etag=1,
                created="t",
                modified="t",
                created_by="bench",
                modified_by="bench",
                created_client="bench",
                modified_client="bench",
            )
        )
    )
    keys = [f"Email:user-{k * 97}@example.com" for k in range(100)]
    requested, settled = "2026-11-01T00:00:00.000000Z", "2026-11-02T00:00:00.000000Z"
    store.write(lambda s: s.erasures.request("BENCH@AdobeOrg", "prod", keys, now=requested))
    steps: list[float] = []
    deleted = 0
    began = time.perf_counter()
    while True:
        started = time.perf_counter()
        got = store.write(
            lambda s: s.erasures.erase_decision_events(places=ERASE_PLACES, settled=settled)
        )
        if got is None:
            break
        steps.append(time.perf_counter() - started)
        deleted += got
    total = time.perf_counter() - began
    steps.sort()
    p99 = steps[min(len(steps) - 1, int(len(steps) * 0.99))]
    return commit, statistics.median(steps), p99, steps[-1], n / total, deleted


def erasures_main(args: argparse.Namespace) -> None:
    runs = []
    for repeat in range(args.repeats):
        store = Store.open(new_database(args.db, repeat), pool_size=10)
        path = decision_path(store)
        runs.append(erasures(store, path, args.events))
        path.close()
        store.close()
        print(f"repeat {repeat + 1}/{args.repeats}: {runs[-1]}", flush=True)
    commit, median, p99, worst, rate, deleted = (
        statistics.median(r[i] for r in runs) for i in range(6)
    )
    backend = "PostgreSQL" if args.db else "SQLite"
    print(f"\n{backend}, {args.events:,} decision events, 100 profiles erased together")
    print(f"({deleted:,.0f} events deleted); medians of {args.repeats} repeats\n")
    print("| row | wall ms | ÷ a group commit of 50 records |")
    print("|---|---:|---:|")
    print(f"| a group commit of 50 records (the reference) | {commit * 1e3:.2f} | 1.00 |")
    for name, value in (("median", median), ("p99", p99), ("max", worst)):
        print(f"| an erasure's transaction, {name} | {value * 1e3:.2f} | {value / commit:.2f} |")
    print(f"\nplaces walked per second: {rate:,.0f}")


def fill_counters(store: Store, counters: Any, n: int) -> list[str]:
    """``n`` counters: 10 offers' profile caps for ``n / 10`` identities (container
    ``c-1``), counted once each; the identities' scopes."""
    from nextoffer.storage.counters import CounterKey

    scopes = [f"identity:Email:user-{k}@example.com" for k in range(max(1, n // 10))]
    keys = [CounterKey("c-1", f"o-{o}", "profileCap", scope=s) for s in scopes for o in range(10)]
    for start in range(0, len(keys), 20_000):
        counters.add(keys[start : start + 20_000])
    return scopes


def counter_erasures(
    store: Store, counters: Any, n: int, redis_url: str | None, scan: int | None
) -> tuple[float, ...]:
    from nextoffer.storage.counters import CounterKey

    scopes = fill_counters(store, counters, n)
    if redis_url is None:  # the reference: a group commit of 50 records
        path = decision_path(store)
        reference = record_events(path, 5_000)
        path.close()
    else:  # a reservation of 20 counters, one round trip
        wanted = [(CounterKey("c-1", f"r-{k}", "globalCap"), 10**9) for k in range(20)]
        times = []
        for _ in range(200):
            began = time.perf_counter()
            counters.reserve(wanted)
            times.append(time.perf_counter() - began)
        reference = statistics.median(times)
    erased = {"c-1": set(scopes[:: max(1, len(scopes) // 100)][:100])}
    holds: list[float] = []  # SQL: each write transaction of the walk, lock held
    if redis_url is None:
        store.write_lock = held(store.write_lock, holds)  # type: ignore[method-assign]
    if redis_url is not None:
        import redis

        redis.Redis.from_url(redis_url).config_resetstat()  # SCAN's time on the server
    steps: list[float] = []
    deleted = 0
    walk = counters.erase(erased, **({"scan": scan} if scan else {}))
    began = time.perf_counter()
    while True:
        started = time.perf_counter()
        got = next(walk, None)
        if got is None:
            break
        steps.append(time.perf_counter() - started)
        deleted += got
    total = time.perf_counter() - began
    server = 0.0
    if redis_url is not None:
        import redis

        stats = redis.Redis.from_url(redis_url).info("commandstats")
        server = float(stats["cmdstat_scan"]["usec_per_call"]) / 1e6
    steps.sort()
    p99 = steps[min(len(steps) - 1, int(len(steps) * 0.99))]
    write = (statistics.median(holds), max(holds)) if holds else (0.0, 0.0)
    return reference, statistics.median(steps), p99, steps[-1], n / total, deleted, server, *write


def held(lock: Callable[[], Any], holds: list[float]) -> Callable[[], Any]:
    """``lock`` (``Store.write_lock``), each hold's seconds appended to ``holds``: on
    SQLite what the other writers wait for; on PostgreSQL the write transaction."""

    @contextmanager
    def timed() -> Iterator[None]:
        with lock():
            began = time.perf_counter()
            try:
                yield
            finally:
                holds.append(time.perf_counter() - began)

    return timed


def counters_main(args: argparse.Namespace) -> None:
    from nextoffer.storage.counters import SqlCounters

    runs = []
    for repeat in range(args.repeats):
        store = Store.open(new_database(args.db, repeat), pool_size=10)
        if args.redis:
            import redis

            from nextoffer.storage.redis_counters import RedisCounters

            redis.Redis.from_url(args.redis).flushdb()  # a database of the bench's own
            counters: Any = RedisCounters.from_url(args.redis, store=store)
        else:
            counters = SqlCounters(store)
        runs.append(counter_erasures(store, counters, args.events, args.redis, args.scan))
        counters.close()
        store.close()
        print(f"repeat {repeat + 1}/{args.repeats}: {runs[-1]}", flush=True)
    reference, median, p99, worst, rate, deleted, server, write, write_max = (
        statistics.median(r[i] for r in runs) for i in range(9)
    )
    backend = "Redis" if args.redis else "PostgreSQL" if args.db else "SQLite"
    ref = "a reservation of 20 counters" if args.redis else "a group commit of 50 records"
    print(f"\n{backend}, {args.events:,} cap counters, 100 identities' counters erased together")
    print(f"({deleted:,.0f} counters deleted); medians of {args.repeats} repeats\n")
    print(f"| row | wall ms | ÷ {ref} |")
    print("|---|---:|---:|")
    print(f"| {ref} (the reference) | {reference * 1e3:.3f} | 1.00 |")
    for name, value in (("median", median), ("p99", p99), ("max", worst)):
        print(f"| a step of the walk, {name} | {value * 1e3:.3f} | {value / reference:.2f} |")
    if not args.redis:
        for name, value in (("median", write), ("max", write_max)):
            print(
                f"| a step's write transaction (the write lock held), {name} "
                f"| {value * 1e3:.3f} | {value / reference:.2f} |"
            )
    if args.redis:
        print(
            f"| a step's SCAN on the server (Redis serves nothing else meanwhile) "
            f"| {server * 1e3:.3f} | {server / reference:.2f} |"
        )
    print(f"\ncounters walked per second: {rate:,.0f}")


def decision_path(store: Store) -> DecisionPath:
    """The store's decision path, as the root chooses it."""
    if store.sqlite_path:
        return SqlitePath(store)
    from nextoffer.storage.pg_path import PgPath

    return PgPath(store)


def new_database(server: str | None, repeat: int) -> str:
    if server is None:
        return f"sqlite:///{scratch_dir('nextoffer-retention-') / 'r.db'}"
    url = make_url(server)
    name = f"nextoffer_retention_{repeat}_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE 'C.UTF-8'")
    return url.set(database=name).render_as_string(hide_password=False)


def beside_decisions(args: argparse.Namespace) -> None:
    import asyncio
    import random
    import threading

    from http_decisions import PROFILES, build

    from nextoffer import DecisionCall, NextOffer, PropositionRequest, Settings

    db_url = f"sqlite:///{scratch_dir('nextoffer-retention-') / 'bench.db'}"
    print("building the library and 10,000 profiles …", flush=True)
    lib = build(db_url)
    asked = orjson.loads(lib["request"])["xdm:propositionRequests"][0]
    proposition = PropositionRequest(asked["xdm:activityId"], asked["xdm:placementId"], 3)
    rng = random.Random(5)

    def call(n: int) -> DecisionCall:
        return DecisionCall(
            propositions=(proposition,), identities=[("Email", f"user{n}@example.com")]
        )

    def month_ago() -> datetime:
        return datetime.now(UTC) - timedelta(days=30)

    settings = Settings(db_url=db_url, warm_catalogs=False)
    print(f"recording {args.backlog:,} decisions made 30 days ago …", flush=True)
    with NextOffer.open(settings, clock=month_ago) as old:
        who = old.bootstrap(org="BENCH@AdobeOrg", sandbox="prod").principal

        async def backlog() -> None:
            for start in range(0, args.backlog, 50):
                count = min(50, args.backlog - start)
                await asyncio.gather(
                    *(
                        old.decide_async(who, lib["container"], call(rng.randrange(PROFILES)))
                        for _ in range(count)
                    )
                )

        asyncio.run(backlog())
    windows: dict[str, list[tuple[float, float, float, float]]] = {"no pass": [], "a pass": []}
    with NextOffer.open(settings) as no:
        no.decide(who, lib["container"], call(0))  # the snapshot, compiled

        async def window(seconds: float) -> tuple[int, list[float]]:
            latencies: list[float] = []
            deadline = time.perf_counter() + seconds

            async def one() -> None:
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    await no.decide_async(who, lib["container"], call(rng.randrange(PROFILES)))
                    latencies.append(time.perf_counter() - start)

            await asyncio.gather(*(one() for _ in range(50)))
            return len(latencies), latencies

        for n in range(args.windows * 2):
            kind = "a pass" if n % 2 else "no pass"
            retention = Retention(
                no.store, decision_events_days=7, experience_events_days=0, clock=no.clock
            )
            pruned: list[int] = []
            thread = threading.Thread(
                target=lambda r=retention, out=pruned: out.append(r.prune().decision_events)
            )
            if kind == "a pass":
                thread.start()
            count, latencies = asyncio.run(window(args.seconds))
            if kind == "a pass":
                retention.close()  # the pass stops after its transaction
                thread.join()
            latencies.sort()
            windows[kind].append(
                (
                    count / args.seconds,
                    latencies[len(latencies) // 2] * 1e3,
                    latencies[int(len(latencies) * 0.99)] * 1e3,
                    (pruned[0] if pruned else 0) / args.seconds,
                )
            )
            print(f"window {n + 1}/{args.windows * 2} ({kind}): {windows[kind][-1]}", flush=True)
    print(f"\nSQLite, one process, 50 tasks; {args.windows} windows of {args.seconds:g} s each")
    print("| windows | decisions/s | p50 ms | p99 ms | rows deleted/s |")
    print("|---|---:|---:|---:|---:|")
    for kind, rows in windows.items():
        rate, p50, p99, deleted = (statistics.median(r[i] for r in rows) for i in range(4))
        print(f"| {kind} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {deleted:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", help="a PostgreSQL server (postgresql://…); SQLite without")
    parser.add_argument("--plot", type=Path, help="draw the medians' wall times into this PNG")
    parser.add_argument("--beside-decisions", action="store_true")
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--erasures", action="store_true")
    parser.add_argument("--counters", action="store_true")
    parser.add_argument("--redis", help="with --counters: a Redis database the bench may flush")
    parser.add_argument("--scan", type=int, help="with --counters: keys a step asks for")
    args = parser.parse_args()
    if args.counters:
        counters_main(args)
        return
    if args.erasures:
        erasures_main(args)
        return
    if args.beside_decisions:
        beside_decisions(args)
        return
    rows: dict[str, list[tuple[float, ...]]] = {"decision events": [], "experience events": []}
    for repeat in range(args.repeats):
        store = Store.open(new_database(args.db, repeat), pool_size=10)
        path = decision_path(store)
        rows["decision events"].append(decision_events(store, path, args.events))
        path.close()
        rows["experience events"].append(experience_events(store, args.events))
        store.close()
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    backend = "PostgreSQL" if args.db else "SQLite"
    print(f"\n{backend}, {args.events:,} events per kind, the older half deleted; medians of")
    print(f"{args.repeats} repeats (µs per event)\n")
    print("| kind | write CPU | write wall | delete CPU | delete wall | delete ÷ write (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind, runs in rows.items():
        w_cpu, w_wall, d_cpu, d_wall = (statistics.median(r[i] for r in runs) for i in range(4))
        print(
            f"| {kind} | {w_cpu * 1e6:.1f} | {w_wall * 1e6:.1f} | {d_cpu * 1e6:.1f}"
            f" | {d_wall * 1e6:.1f} | {d_cpu / w_cpu:.2f} |"
        )
    if args.plot:
        plot(rows, f"{backend}, {args.events:,} events per kind", args.plot)


def plot(rows: dict[str, list[tuple[float, ...]]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(rows)
    written = [statistics.median(r[1] for r in rows[k]) * 1e6 for k in kinds]
    deleted = [statistics.median(r[3] for r in rows[k]) * 1e6 for k in kinds]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(kinds))
    ax.bar([x - 0.2 for x in xs], written, 0.4, label="written (the reference)", color="0.6")
    ax.bar([x + 0.2 for x in xs], deleted, 0.4, label="deleted by retention", color="C0")
    ax.set_xticks(list(xs), kinds)
    ax.set_ylabel("wall µs per event")
    ax.set_title(f"Retention's deletes against the writes they undo\n{title}", fontsize=10)
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

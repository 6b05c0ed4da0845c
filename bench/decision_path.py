"""The decision path's reads and the garbage collector, each beside its reference.

    .venv/bin/python bench/decision_path.py [--reads 3000] [--repeats 5]

Builds the library of ``bench/http_decisions.py`` (100 offers with 5-condition rules,
10,000 profiles) in a temporary SQLite file, then measures in one process:

* the decision's profile read (identity → attributes) through a store session (the
  reference: pool checkout, ``BEGIN``, SQLAlchemy statement, ``COMMIT``) and through
  ``SqlitePath`` (a driver connection per thread), interleaved, random identities;
* a full garbage collection with the compiled snapshot alive, as it is (the reference)
  and after ``settle_heap()`` froze it;
* the write of a batch of 20 decision records (``SqlitePath._commit``: reservations,
  events, daily counts; a third of the proposed offers capped per profile and globally):
  rows sent as one JSON array per table (the reference: the earlier statements, kept
  below) and with ``executemany`` (now); and proposition ids as version-4 (reference) and
  version-7 UUIDs (now), both with ``executemany``;
* ``engine.decide`` for the benchmark's request over random stored profiles, on the
  snapshot's catalog (now) and on one built from the same instances by a compiler whose
  rules offer no parts (the reference: ``Pool.required`` stays empty, every candidate is
  walked);
* awaiting a record's future resolved on the event loop's thread (uvloop):
  ``asyncio.wrap_future`` (the reference) and ``service.offload.finished``.

Medians over ``--repeats`` interleaved repeats; ratios to the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import tempfile
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson
import uvloop
from http_decisions import PROFILES, build

from nextoffer import pql
from nextoffer.engine import CapCounters, DecisionRequest, PropositionRequest, build_catalog, decide
from nextoffer.ids import epoch_micros, format_datetime, utcnow, uuid7
from nextoffer.service.catalogs import CatalogCache, settle_heap
from nextoffer.service.offload import finished
from nextoffer.storage import sqlite_path as dp
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store

ORG, SANDBOX = "BENCH@AdobeOrg", "prod"


def reads(store: Store, path: SqlitePath, n: int, rng: random.Random) -> tuple[float, float]:
    """Median µs of one profile read: through a session, through the driver."""
    session_times, driver_times = [], []
    for _ in range(n):
        identity = f"user{rng.randrange(PROFILES)}@example.com"
        start = time.perf_counter()
        with store.session() as session:
            found = session.runtime.profile_by_identity(ORG, SANDBOX, "Email", identity)
        session_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        again = path.profile(ORG, SANDBOX, "Email", identity)
        driver_times.append(time.perf_counter() - start)
        assert found is not None and again == found
    return statistics.median(session_times) * 1e6, statistics.median(driver_times) * 1e6


#: The reference writes: each table's rows as one JSON array, unpacked by SQLite.
JSON_ROWS = {
    dp._SET_COUNTS: "INSERT INTO cap_counters (counter_key, container_id, count)"
    " SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true"
    " ON CONFLICT (counter_key) DO UPDATE SET count = excluded.count",
    dp._EVENTS_IN: "INSERT INTO decision_events"
    " (proposition_id, container_id, created, created_us, profile_key, body)"
    " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5"
    " FROM json_each(?)",
    dp._DAILY_IN: "INSERT INTO offer_daily"
    " (container_id, day, offer_id, propositions, impressions, clicks)"
    " SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, 0, 0 FROM json_each(?)"
    " WHERE true ON CONFLICT (container_id, day, offer_id)"
    " DO UPDATE SET propositions = propositions + excluded.propositions",
}


class JsonRows:
    """A connection whose ``executemany`` sends the rows as one JSON array (the reference)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        return self.conn.execute(JSON_ROWS[sql], (orjson.dumps(list(rows)).decode(),))


def records(container: str, offers: list[str], n: int, rng: random.Random, v7: bool) -> list:
    """``n`` records like the HTTP benchmark's: 3 offers proposed, caps on a third."""
    items = []
    for _ in range(n):
        now = utcnow()
        pid = uuid7(now) if v7 else str(uuid.uuid4())
        profile = f"bench-profile-{rng.randrange(PROFILES)}"
        chosen = rng.sample(offers, 3)
        reserve = []
        for offer in chosen:
            if rng.random() < 1 / 3:
                reserve.append((CounterKey(container, offer, "globalCap"), 10**9))
                reserve.append((CounterKey(container, offer, "profileCap", scope=profile), 10**6))
        stamp = format_datetime(now)
        body = {"propositionId": pid, "timestamp": stamp, "profileKey": profile, "options": chosen}
        record = DecisionRecord(
            pid,
            container,
            stamp,
            epoch_micros(now),
            profile,
            body,
            stamp[:10],
            chosen,
            reserve,
        )
        items.append((record, Future()))
    return items


def writes(path: SqlitePath, container: str, batches: int, rng: random.Random) -> list[float]:
    """µs per record: JSON rows, executemany (both v7 ids); v4 ids, v7 ids (executemany)."""
    conn = path._connect(writer=True)
    offers = [f"xcore:personalized-offer:{n:016x}" for n in range(100)]
    totals = [0.0, 0.0, 0.0, 0.0]
    variants = [(JsonRows(conn), True), (conn, True), (conn, False), (conn, True)]
    for _ in range(batches):
        for i, (target, v7) in enumerate(variants):
            items = records(container, offers, 20, rng, v7)
            start = time.perf_counter()
            path._commit(target, items)  # type: ignore[arg-type]
            totals[i] += time.perf_counter() - start
    conn.close()
    return [t / (batches * 20) * 1e6 for t in totals]


class WholeRule:
    """A compiled rule without ``conjuncts``: the catalog then finds no shared parts."""

    def __init__(self, compiled: pql.CompiledRule) -> None:
        self.evaluate = compiled.evaluate


def whole_rules(source: Any, *, format: str = "pql/text", kind: str = "rule") -> WholeRule:
    return WholeRule(pql.compile(source, format=format, kind=kind))


def decisions(
    path: SqlitePath, catalogs: list[Any], request: dict[str, Any], n: int, rng: random.Random
) -> list[float]:
    """Median µs of ``decide`` per catalog, the same random profiles for each."""
    (wanted,) = request["xdm:propositionRequests"]
    propositions = (PropositionRequest(wanted["xdm:activityId"], wanted["xdm:placementId"], 3),)
    times: list[list[float]] = [[] for _ in catalogs]
    for _ in range(n):
        found = path.profile(ORG, SANDBOX, "Email", f"user{rng.randrange(PROFILES)}@example.com")
        assert found is not None
        call = DecisionRequest(propositions=propositions, profile=found[1])
        now = utcnow()
        for catalog, sink in zip(catalogs, times, strict=True):
            start = time.perf_counter()
            decide(catalog, call, counters=CapCounters(), now=now, rng=random.Random(1))
            sink.append(time.perf_counter() - start)
    return [statistics.median(t) * 1e6 for t in times]


def waits(n: int) -> tuple[float, float]:
    """Mean µs to await a future set by a callback on the loop: wrap_future, finished."""

    async def timed(wait: Any) -> float:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for _ in range(n):
            future: Future[None] = Future()
            loop.call_soon(future.set_result, None)
            await wait(future)
        return (time.perf_counter() - start) / n * 1e6

    async def both() -> tuple[float, float]:
        return await timed(asyncio.wrap_future), await timed(finished)

    return uvloop.run(both())


def full_collection() -> float:
    start = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=100, help="write batches per repeat")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="nextoffer-bench-"))
    lib = build(f"sqlite:///{workdir / 'bench.db'}")
    store = Store.open(f"sqlite:///{workdir / 'bench.db'}")
    path = SqlitePath(store)
    snapshot = CatalogCache(store, path=path, clock=utcnow).get(lib["container"])  # kept alive
    walked = build_catalog(list(snapshot.instances.values()), compile_rule=whole_rules)
    request = orjson.loads(lib["request"])
    rng = random.Random(7)
    rows: list[tuple[float, ...]] = []
    for _ in range(args.repeats):
        session_us, driver_us = reads(store, path, args.reads, rng)
        gc.unfreeze()
        thawed_ms = full_collection()
        settle_heap()
        frozen_ms = full_collection()
        json_us, many_us, v4_us, v7_us = writes(path, lib["container"], args.batches, rng)
        walk_us, parts_us = decisions(path, [walked, snapshot.catalog], request, args.reads, rng)
        measures = (session_us, driver_us, thawed_ms, frozen_ms, json_us, many_us, v4_us, v7_us)
        rows.append((*measures, walk_us, parts_us, *waits(args.reads * 5)))
    gc.unfreeze()
    session_us, driver_us, thawed_ms, frozen_ms, json_us, many_us, v4_us, v7_us = (
        statistics.median(r[i] for r in rows) for i in range(8)
    )
    walk_us, parts_us, wrap_us, finished_us = (
        statistics.median(r[i] for r in rows) for i in (8, 9, 10, 11)
    )
    print(f"{len(snapshot.catalog.offers)} offers; {args.repeats} repeats, medians")
    print("| measure | reference | now | ratio |")
    print("|---|---:|---:|---:|")
    print(
        f"| profile read (session → driver) | {session_us:.1f} µs | {driver_us:.1f} µs "
        f"| {driver_us / session_us:.3f} |"
    )
    print(
        f"| full collection (as is → frozen) | {thawed_ms:.2f} ms | {frozen_ms:.3f} ms "
        f"| {frozen_ms / thawed_ms:.2g} |"
    )
    print(
        f"| record write, batch of 20 (JSON rows → executemany) | {json_us:.1f} µs "
        f"| {many_us:.1f} µs | {many_us / json_us:.2f} |"
    )
    print(
        f"| record write, batch of 20 (v4 → v7 proposition ids) | {v4_us:.1f} µs "
        f"| {v7_us:.1f} µs | {v7_us / v4_us:.2f} |"
    )
    print(
        f"| engine decide, random profiles (every candidate walked → shared parts first) "
        f"| {walk_us:.1f} µs | {parts_us:.1f} µs | {parts_us / walk_us:.2f} |"
    )
    print(
        f"| await a record resolved on the loop (wrap_future → finished) "
        f"| {wrap_us:.1f} µs | {finished_us:.1f} µs | {finished_us / wrap_us:.2f} |"
    )
    path.close()
    store.close()


if __name__ == "__main__":
    main()

"""The decision path's reads and the garbage collector, each beside its reference.

    .venv/bin/python bench/decision_path.py [--reads 3000] [--repeats 5]

Builds the library of ``bench/http_decisions.py`` (100 offers with 5-condition rules,
10,000 profiles) in a temporary SQLite file, then measures in one process:

* the decision's profile read (identity → attributes) through a store session (the
  reference: pool checkout, ``BEGIN``, SQLAlchemy statement, ``COMMIT``) and through
  ``SqlitePath`` (a driver connection per thread), interleaved, random identities;
* a full garbage collection with the compiled snapshot alive, as it is (the reference)
  and after ``settle_heap()`` froze it;
* ``engine.decide`` for the benchmark's request over random stored profiles, on the
  snapshot's catalog (now) and on one built from the same instances by a compiler whose
  rules offer no parts (the reference: ``Pool.required`` stays empty, every candidate is
  walked);
* awaiting a record's future resolved on the event loop's thread (uvloop):
  ``asyncio.wrap_future`` (the reference) and ``service.offload.finished``.

Medians over ``--repeats`` interleaved repeats; ratios to the reference. The record's
write, statement by statement, is ``bench/record_write.py``'s (this script compared the
record's earlier statements while they existed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time
from concurrent.futures import Future
from typing import Any

import orjson
import uvloop
from http_decisions import PROFILES, build
from scratch import scratch_dir

from nextoffer import pql
from nextoffer.engine import CapCounters, DecisionRequest, PropositionRequest, build_catalog, decide
from nextoffer.ids import utcnow
from nextoffer.service.catalogs import CatalogCache
from nextoffer.service.heap import settle_heap
from nextoffer.service.offload import finished
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
    args = parser.parse_args()
    workdir = scratch_dir("nextoffer-bench-")
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
        walk_us, parts_us = decisions(path, [walked, snapshot.catalog], request, args.reads, rng)
        measures = (session_us, driver_us, thawed_ms, frozen_ms)
        rows.append((*measures, walk_us, parts_us, *waits(args.reads * 5)))
    gc.unfreeze()
    session_us, driver_us, thawed_ms, frozen_ms, walk_us, parts_us, wrap_us, finished_us = (
        statistics.median(r[i] for r in rows) for i in range(8)
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

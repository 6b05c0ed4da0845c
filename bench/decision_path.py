"""The decision path's reads and the garbage collector, each beside its reference.

    .venv/bin/python bench/decision_path.py [--reads 3000] [--repeats 5]

Builds the library of ``bench/http_decisions.py`` (100 offers with 5-condition rules,
10,000 profiles) in a temporary SQLite file, then measures in one process:

* the decision's profile read (identity → attributes) through a store session (the
  reference: pool checkout, ``BEGIN``, SQLAlchemy statement, ``COMMIT``) and through
  ``SqlitePath`` (a driver connection per thread), interleaved, random identities;
* a full garbage collection with the compiled snapshot alive, as it is (the reference)
  and after ``settle_heap()`` froze it.

Medians over ``--repeats`` interleaved repeats; ratios to the reference.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from pathlib import Path

from http_decisions import PROFILES, build

from nextoffer.ids import utcnow
from nextoffer.service.catalogs import CatalogCache, settle_heap
from nextoffer.storage.decision_path import SqlitePath
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


def full_collection() -> float:
    start = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="nextoffer-bench-"))
    lib = build(f"sqlite:///{workdir / 'bench.db'}")
    store = Store.open(f"sqlite:///{workdir / 'bench.db'}")
    path = store.decision_path
    assert isinstance(path, SqlitePath)
    snapshot = CatalogCache(store, clock=utcnow).get(lib["container"])  # kept alive below
    rng = random.Random(7)
    rows: list[tuple[float, float, float, float]] = []
    for _ in range(args.repeats):
        session_us, driver_us = reads(store, path, args.reads, rng)
        gc.unfreeze()
        thawed_ms = full_collection()
        settle_heap()
        frozen_ms = full_collection()
        rows.append((session_us, driver_us, thawed_ms, frozen_ms))
    gc.unfreeze()
    session_us, driver_us, thawed_ms, frozen_ms = (
        statistics.median(r[i] for r in rows) for i in range(4)
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
    store.close()


if __name__ == "__main__":
    main()

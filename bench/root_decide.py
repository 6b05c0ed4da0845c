"""One in-process decision through ``NextOffer``, recorded on SQLite, beside its references.

    .venv/bin/python bench/root_decide.py [--decisions 3000] [--repeats 5] [--tasks 50]

The library and profiles of ``http_decisions.py`` (100 offers with 5-condition rules, a
third capped, 10,000 profiles) in a temporary SQLite file; one ``NextOffer`` opened on it,
as an application embedding nextoffer would. Per repeat, interleaved, each over
``--decisions`` random identities:

* ``engine.decide``: the pure engine on the container's snapshot with the profile already
  in hand (the reference: what deciding costs without any IO);
* ``decide`` dry run: the use case without the record (profile read, snapshot lookup,
  counters of capped candidates, engine);
* ``decide`` recorded, one caller: ``no.decide(…)`` in a loop; every decision reserves
  the capped offers it proposes and writes its event before it returns (one commit each);
* ``decide_async`` recorded, ``--tasks`` callers on one event loop: the decisions of one
  pass of the loop share a commit (the group commit a server worker uses);
* ``decide`` recorded, one caller, on a second ``NextOffer`` opened on the same file with
  the profile cache off (``profile_cache_mb=0``): every decision reads its profile from
  the database, as the first decision for each customer does.

Before the repeats, one dry run per profile fills the profile cache (the steady state of
an application that decides for the same customers again and again); without it the
repeats would measure the cache filling up, a different share of hits in each.

Figures are µs per decision (wall time ÷ decisions), medians over repeats, and each one's
ratio to the engine alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from http_decisions import PROFILES, build

from nextoffer import DecisionCall, NextOffer, PropositionRequest, Settings
from nextoffer.engine import CapCounters, DecisionRequest, decide
from nextoffer.ids import utcnow

ENGINE = "engine.decide (reference)"
DRY = "NextOffer.decide, dry run"
SYNC = "NextOffer.decide, recorded, 1 caller"
ASYNC = "NextOffer.decide_async, recorded, {tasks} tasks"
UNCACHED = "NextOffer.decide, recorded, 1 caller, no profile cache"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        print("building the library and 10,000 profiles …", flush=True)
        lib = build(db_url)
        rows = measure(db_url, lib, args)
    load = os.getloadavg()[0]
    engine = statistics.median(rows[ENGINE])
    print(f"\nload average {load:.2f}; µs per decision, medians of {args.repeats} repeats")
    print("| measure | µs per decision | ratio to the engine |")
    print("|---|---:|---:|")
    for name, samples in rows.items():
        value = statistics.median(samples)
        print(f"| {name} | {value:.1f} | {value / engine:.2f} |")


def measure(db_url: str, lib: dict[str, str], args: argparse.Namespace) -> dict[str, list[float]]:
    rng = random.Random(11)
    uncached_settings = Settings(db_url=db_url, warm_catalogs=False, profile_cache_mb=0)
    with (
        NextOffer.open(Settings(db_url=db_url, warm_catalogs=False)) as no,
        NextOffer.open(uncached_settings) as uncached,
    ):
        creds = no.bootstrap(org="BENCH@AdobeOrg", sandbox="prod")
        who, container = creds.principal, lib["container"]
        asked = json.loads(lib["request"])["xdm:propositionRequests"][0]
        proposition = PropositionRequest(asked["xdm:activityId"], asked["xdm:placementId"], 3)

        def call(n: int, *, dry_run: bool = False) -> DecisionCall:
            return DecisionCall(
                propositions=(proposition,),
                identities=[("Email", f"user{n}@example.com")],
                dry_run=dry_run,
            )

        # Warm the snapshot (and the compiled rules) before anything is timed.
        no.decide(who, container, call(0, dry_run=True))
        catalog = no.catalogs.get(container).catalog
        profiles = []
        for n in rng.sample(range(PROFILES), 500):
            found = no.path.profile(creds.org, creds.sandbox, "Email", f"user{n}@example.com")
            assert found is not None, n
            profiles.append(found[1])

        def engine_run(count: int) -> None:
            now, ties = utcnow(), random.Random(1)
            for i in range(count):
                request = DecisionRequest(
                    propositions=(proposition,), profile=profiles[i % len(profiles)]
                )
                decide(catalog, request, counters=CapCounters(), now=now, rng=ties)

        def dry_run(count: int) -> None:
            for _ in range(count):
                no.decide(who, container, call(rng.randrange(PROFILES), dry_run=True))

        def recorded(count: int) -> None:
            for _ in range(count):
                no.decide(who, container, call(rng.randrange(PROFILES)))

        def recorded_uncached(count: int) -> None:
            for _ in range(count):
                uncached.decide(who, container, call(rng.randrange(PROFILES)))

        def recorded_async(count: int) -> None:
            async def one(n: int) -> None:
                await no.decide_async(who, container, call(n))

            async def run() -> None:
                left = count
                while left > 0:
                    batch = min(args.tasks, left)
                    await asyncio.gather(*(one(rng.randrange(PROFILES)) for _ in range(batch)))
                    left -= batch

            asyncio.run(run())

        runs: dict[str, Callable[[int], None]] = {
            ENGINE: engine_run,
            DRY: dry_run,
            SYNC: recorded,
            ASYNC.format(tasks=args.tasks): recorded_async,
            UNCACHED: recorded_uncached,
        }
        for run in runs.values():  # one short pass each: caches, pages, the loop's first start
            run(100)
        print(f"one dry run per profile ({PROFILES:,}) to fill the profile cache …", flush=True)
        for n in range(PROFILES):
            no.decide(who, container, call(n, dry_run=True))
        rows: dict[str, list[float]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run(args.decisions)
                rows[name].append((time.perf_counter() - start) / args.decisions * 1e6)
            print(
                f"repeat {repeat + 1}/{args.repeats}:",
                {k: round(v[-1]) for k, v in rows.items()},
                flush=True,
            )
        return rows


if __name__ == "__main__":
    main()

"""Client CPU per batch of Redis reservations on the event loop (``LoopRedis.reserve``).

    scripts/services run -- .venv/bin/python bench/redis_reserve.py \
        [--tasks 20] [--batches 2000] [--repeats 5] [--compare-src OTHER/src]

On uvloop, ``--tasks`` tasks each reserve one counter (two keys of one container,
limits that never bind) in the same pass of the loop, so each round is one batch: one
round trip, one run of the reservation script. Reported per setup: the process's CPU
time per batch and per reservation (median over repeats). With ``--compare-src`` the
same rounds run on another copy of the source (an export of an earlier commit), each
repeat in a fresh process, the two setups interleaved (A, B, A, B, ...), so a
machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent / "src"


def child(url: str, tasks: int, batches: int) -> None:
    import uvloop

    from nextoffer.storage.counters import CounterKey
    from nextoffer.storage.redis_counters import RedisCounters

    # The database that lists the containers whose counters Redis holds: a file of the
    # child's own (a source from before those markers takes no store).
    options = {}
    if "store" in inspect.signature(RedisCounters.from_url).parameters:
        from nextoffer.storage.store import Store

        db = Path(tempfile.mkdtemp(prefix="redis-reserve-")) / "markers.db"
        options["store"] = Store.open(f"sqlite:///{db}")
    counters = RedisCounters.from_url(url, **options)
    loop_counters = counters.on_loop
    assert loop_counters is not None
    container = f"bench-{uuid.uuid4()}"
    wanted = [
        [
            (CounterKey(container, f"offer-{t}", "globalCap"), 10**12),
            (CounterKey(container, f"offer-{t}", "profileCap", "p"), 10**12),
        ]
        for t in range(tasks)
    ]

    async def main() -> float:
        async def round_() -> None:
            await asyncio.gather(*(loop_counters.reserve(w) for w in wanted))

        for _ in range(50):  # connect, load the script
            await round_()
        start = time.process_time()
        for _ in range(batches):
            await round_()
        spent = time.process_time() - start
        await loop_counters.aclose()
        return spent

    spent = uvloop.run(main())
    counters.close()
    print(json.dumps({"batch_us": spent / batches * 1e6}))


def run(src: Path, url: str, tasks: int, batches: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            url,
            "--tasks",
            str(tasks),
            "--batches",
            str(batches),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["batch_us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare-src", type=Path)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tasks, args.batches)
        return
    url = os.environ.get("NEXTOFFER_TEST_REDIS_URL")
    if not url:
        sys.exit("set NEXTOFFER_TEST_REDIS_URL (scripts/services run -- ...)")
    setups = {"this source": HERE}
    if args.compare_src is not None:
        setups["compare-src"] = args.compare_src.resolve()
    results: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, src in setups.items():
            results[name].append(run(src, url, args.tasks, args.batches))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.tasks} reservations per batch")
    print("| setup | CPU µs per batch | per reservation | repeats |")
    print("|---|---:|---:|---|")
    for name, values in results.items():
        median = statistics.median(values)
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {median:.0f} | {median / args.tasks:.1f} | {shown} |")


if __name__ == "__main__":
    main()

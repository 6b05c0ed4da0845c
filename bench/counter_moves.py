"""What moving cap counters between the database and Redis costs (``nextoffer admin
counters --into-redis`` / ``--out-of-redis``, ``storage/counter_moves.py``).

    scripts/services run -- .venv/bin/python bench/counter_moves.py --redis redis://…/N \
        [--counters 1000000] [--repeats 3]

Per repeat, on a new SQLite database and an emptied Redis database (``--redis``, which the
bench flushes: give it one of its own): ``--counters`` cap counters in the database (10
offers' profile caps for a tenth as many identities, as a deployment without Redis
counted them), then ``move_in`` (into Redis, ``--batch`` counters a script, by default
the command's), then ``move_out`` (back into the database). The reference in the same
repeat: a reservation of 20 counters in one round trip, as a decision makes it. Redis's
own time per script is read from ``INFO commandstats`` (reset before each part): how long
Redis serves nothing else while a move's script runs, against a reservation's. Prints the
wall time of each move, the counters moved a second, and the scripts' server time;
medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import redis
from scratch import scratch_dir

from nextoffer.storage.counter_moves import MOVE_BATCH
from nextoffer.storage.counters import CounterKey, SqlCounters
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.store import Store

CONTAINER = "c-1"


def fill(counters: SqlCounters, n: int) -> None:
    scopes = [f"identity:Email:user-{k}@example.com" for k in range(max(1, n // 10))]
    keys = [
        CounterKey(CONTAINER, f"o-{o}", "profileCap", scope=s) for s in scopes for o in range(10)
    ]
    for start in range(0, len(keys), 20_000):
        counters.add(keys[start : start + 20_000])


def server_usec(raw: redis.Redis, command: str) -> tuple[float, int]:
    """Redis's microseconds per call of ``command`` since the last reset, and the calls."""
    stats = raw.info("commandstats").get(f"cmdstat_{command}", {})
    return float(stats.get("usec_per_call", 0.0)), int(stats.get("calls", 0))


def repeat(url: str, n: int, folder: str, k: int, batch: int) -> dict[str, float]:
    raw = redis.Redis.from_url(url)
    raw.flushdb()
    store = Store.open(f"sqlite:///{folder}/moves{k}.db")
    counters = RedisCounters.from_url(url, store=store)
    try:
        fill(SqlCounters(store), n)
        wanted = [(CounterKey("c-2", f"r-{i}", "globalCap"), 10**9) for i in range(20)]
        counters.reserve(wanted)  # the reference's container marked first
        raw.config_resetstat()
        for _ in range(200):
            counters.reserve(wanted)
        reference, _ = server_usec(raw, "evalsha")
        raw.config_resetstat()
        began = time.perf_counter()
        moved_in = counters.moves.move_in(batch=batch)
        into = time.perf_counter() - began
        move_script, scripts = server_usec(raw, "evalsha")
        assert moved_in.moved.get(CONTAINER) == n, moved_in
        raw.config_resetstat()
        began = time.perf_counter()
        moved_out = counters.moves.move_out([CONTAINER], batch=batch)
        out = time.perf_counter() - began
        take_script, _ = server_usec(raw, "evalsha")
        scan, _ = server_usec(raw, "scan")
        assert moved_out.moved.get(CONTAINER) == n, moved_out
    finally:
        counters.close()
        store.close()
    return {
        "reference": reference,
        "into": into,
        "move_script": move_script,
        "scripts": scripts,
        "out": out,
        "take_script": take_script,
        "scan": scan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", required=True, help="a Redis database the bench flushes")
    parser.add_argument("--counters", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=MOVE_BATCH, help="counters a script")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    folder = str(scratch_dir("nextoffer-moves-", args.workdir))
    runs = []
    for k in range(args.repeats):
        runs.append(repeat(args.redis, args.counters, folder, k, args.batch))
        print(
            f"repeat {k + 1}: into Redis {runs[-1]['into']:.1f} s, out of it "
            f"{runs[-1]['out']:.1f} s"
        )
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    n = args.counters
    batch = args.batch
    print(f"\n{n:,} counters, medians of {args.repeats} repeats\n")
    print("| row | value | ÷ a reservation of 20 counters (Redis's time) |")
    print("|---|---:|---:|")
    print(
        f"| a reservation of 20 counters, Redis's µs (the reference) | {med['reference']:.1f} | 1 |"
    )
    for name, key in (("--into-redis", "move_script"), ("--out-of-redis", "take_script")):
        print(
            f"| `{name}`: a script of {batch:,} counters, Redis's µs | {med[key]:.1f} | "
            f"{med[key] / med['reference']:.1f} |"
        )
    print(
        f"| `--out-of-redis`: a `SCAN` of 1,000 names, Redis's µs | {med['scan']:.1f} | "
        f"{med['scan'] / med['reference']:.1f} |"
    )
    print(f"| `--into-redis`, wall s | {med['into']:.1f} | |")
    print(f"| … counters a second | {n / med['into']:,.0f} | |")
    print(f"| `--out-of-redis`, wall s | {med['out']:.1f} | |")
    print(f"| … counters a second | {n / med['out']:,.0f} | |")


if __name__ == "__main__":
    main()

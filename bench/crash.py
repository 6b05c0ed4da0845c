"""Crash test: ``--rounds`` bursts of concurrent creates, patches and events against a live
``nextoffer serve`` on one SQLite database, each ended by SIGKILL after about
``--kill-after`` seconds; after each restart every acknowledged write must be present and
``PRAGMA integrity_check`` ok. How a round works: tests/support/crashburst.py.

    python bench/crash.py --rounds 10 --clients 16 --kill-after 3      (scripts/crash-test)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scratch import scratch_dir

from support import crashburst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--kill-after", type=float, default=3.0, help="seconds, jittered by ±50%% per round"
    )
    args = parser.parse_args()
    workdir = scratch_dir("nextoffer-crash-")
    totals = {"acked_creates": 0, "acked_patches": 0, "acked_events": 0, "attempts": 0}
    failed = 0
    integrity = set()
    results = crashburst.run(
        workdir, rounds=args.rounds, clients=args.clients, kill_after=args.kill_after
    )
    for index, result in enumerate(results, 1):
        row = {"round": index, **dataclasses.asdict(result)}
        print(json.dumps(row), flush=True)
        for key in totals:
            totals[key] += row[key]
        failed += not result.ok
        integrity.add(result.integrity)
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "failed_rounds": failed,
                **totals,
                "integrity": sorted(integrity),
            }
        )
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""PQL fuzzing at scale: ``--count`` inputs (default 100,000) split across the generators of
tests/support/pqlfuzz.py, each compiled as a rule and as a formula and evaluated on
generated data. Fails on anything but PQLError or a documented value, or a compile +
evaluate over 100 ms; prints the count, the slowest input and the peak RSS.

    python bench/fuzz_pql.py --count 100000      (scripts/fuzz-pql)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import pqlfuzz


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument(
        "--chunk", type=int, default=2_500, help="inputs per generator per progress line"
    )
    args = parser.parse_args()
    names = list(pqlfuzz.SOURCES)
    counts = dict.fromkeys(names, 0)
    worst = dict.fromkeys(names, (0.0, ""))
    started = time.monotonic()
    rss_start = rss_mib()
    total = 0
    current = [names[0]]  # the generator the nested test is running
    while total < args.count:
        for name in names:
            size = min(args.chunk, args.count - total)
            if size <= 0:
                break

            @settings(
                max_examples=size,
                deadline=None,
                database=None,
                phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )
            @given(pqlfuzz.SOURCES[name], pqlfuzz.profiles, pqlfuzz.events)
            def run(source: str, profile: object, events: object) -> None:
                name = current[0]
                counts[name] += 1
                took = pqlfuzz.check_one(source, profile, events)
                if took > worst[name][0]:
                    worst[name] = (took, source)

            current[0] = name
            run()
            total = sum(counts.values())
            print(
                json.dumps(
                    {
                        "inputs": total,
                        "generator": name,
                        "seconds": round(time.monotonic() - started),
                        "slowest_ms": round(max(w[0] for w in worst.values()) * 1000, 2),
                        "rss_mib": round(rss_mib(), 1),
                    }
                ),
                flush=True,
            )
    slowest = max(worst.values())
    print(
        json.dumps(
            {
                "inputs": total,
                "by_generator": counts,
                "slowest_ms_by_generator": {k: round(v[0] * 1000, 2) for k, v in worst.items()},
                "seconds": round(time.monotonic() - started, 1),
                "slowest_ms": round(slowest[0] * 1000, 2),
                "slowest_input": slowest[1][:300],
                "rss_start_mib": round(rss_start, 1),
                "rss_end_mib": round(rss_mib(), 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

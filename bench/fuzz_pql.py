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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    per = args.count // len(pqlfuzz.SOURCES)
    report: dict[str, object] = {"inputs": 0, "generators": {}}
    slowest = (0.0, "")
    started = time.monotonic()
    rss_start = rss_mib()
    for name, strategy in pqlfuzz.SOURCES.items():
        seen = 0
        worst = (0.0, "")

        @settings(
            max_examples=per,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
            derandomize=False,
        )
        @given(strategy, pqlfuzz.profiles, pqlfuzz.events)
        def run(source: str, profile: object, events: object) -> None:
            nonlocal seen, worst
            seen += 1
            took = pqlfuzz.check_one(source, profile, events)
            if took > worst[0]:
                worst = (took, source)

        t0 = time.monotonic()
        run()
        report["generators"][name] = {
            "inputs": seen,
            "seconds": round(time.monotonic() - t0, 1),  # type: ignore[index]
            "slowest_ms": round(worst[0] * 1000, 2),
            "slowest_input": worst[1][:200],
        }
        report["inputs"] = int(report["inputs"]) + seen  # type: ignore[call-overload]
        if worst[0] > slowest[0]:
            slowest = worst
        print(json.dumps({name: report["generators"][name]}), flush=True)  # type: ignore[index]
    report.update(
        {
            "seconds": round(time.monotonic() - started, 1),
            "slowest_ms": round(slowest[0] * 1000, 2),
            "slowest_input": slowest[1][:300],
            "rss_start_mib": round(rss_start, 1),
            "rss_end_mib": round(rss_mib(), 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

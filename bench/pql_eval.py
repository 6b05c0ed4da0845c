"""PQL evaluation speed, measured against references in the same run.

    python bench/pql_eval.py            # prints a Markdown table (docs/benchmarks.md)

The flat rule is evaluated by nextoffer's ``CompiledRule.evaluate``, by a hand-written
Python lambda doing the same work (the floor), and — when installed — by zen-engine's
compiled expression and GrowthBook's ``evalCondition``. Figures are evaluations per second,
the median of several repeats; the ratio column is relative to the lambda.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nextoffer import pql

FLAT_RULE = (
    'age >= 18 and country in ["US", "CA", "GB"] and tier = "gold" and '
    "loyaltyPoints > 1000 and optIn = true"
)
FLAT_PROFILE = {
    "age": 34,
    "country": "CA",
    "tier": "gold",
    "loyaltyPoints": 2500,
    "optIn": True,
    "email": "a@example.com",
}
NESTED_RULE = (
    'person.address.country = "US" and person.loyalty.points > 1000 and person.tier.name = "gold"'
)
NESTED_PROFILE = {
    "person": {"address": {"country": "US"}, "loyalty": {"points": 2500}, "tier": {"name": "gold"}}
}
EVENT_RULE = (
    'xEvent[eventType = "commerce.purchases" and timestamp occurs <= 30 days '
    "before now].count() >= 3"
)
NOW = "2024-06-15T12:00:00Z"
EVENTS = [
    {
        "eventType": "commerce.purchases" if i % 4 == 0 else "web.pageView",
        "timestamp": f"2024-{(i % 6) + 1:02d}-{(i % 27) + 1:02d}T10:00:00Z",
    }
    for i in range(100)
]
REPEATS = 7


def rate(fn: Callable[[], Any], number: int) -> float:
    """Median evaluations per second of ``fn`` over REPEATS runs of ``number`` calls."""
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rates.append(number / (time.perf_counter() - start))
    return statistics.median(rates)


def flat_contenders() -> dict[str, Callable[[], Any]]:
    rule = pql.compile(FLAT_RULE)
    evaluate = rule.evaluate
    profile = FLAT_PROFILE

    def floor(p: dict[str, Any]) -> bool:
        return (
            p.get("age", 0) >= 18
            and p.get("country") in ("US", "CA", "GB")
            and p.get("tier") == "gold"
            and p.get("loyaltyPoints", 0) > 1000
            and p.get("optIn") is True
        )

    contenders: dict[str, Callable[[], Any]] = {
        "hand-written lambda (floor)": lambda: floor(profile),
        "nextoffer CompiledRule.evaluate": lambda: evaluate(profile=profile),
    }
    assert floor(profile) is True and evaluate(profile=profile) is True
    try:
        import zen

        expression = zen.compile_expression(
            'age >= 18 and country in ["US", "CA", "GB"] and tier == "gold" and '
            "loyaltyPoints > 1000 and optIn == true"
        )
        assert expression.evaluate(profile) is True
        contenders["zen-engine compiled expression"] = lambda: expression.evaluate(profile)
    except ImportError:
        print("zen-engine not installed: skipped", file=sys.stderr)
    try:
        from growthbook.core import evalCondition

        condition = {
            "age": {"$gte": 18},
            "country": {"$in": ["US", "CA", "GB"]},
            "tier": "gold",
            "loyaltyPoints": {"$gt": 1000},
            "optIn": True,
        }
        assert evalCondition(profile, condition) is True
        contenders["GrowthBook evalCondition"] = lambda: evalCondition(profile, condition)
    except ImportError:
        print("growthbook not installed: skipped", file=sys.stderr)
    return contenders


def compile_time(source: str) -> float:
    """Median milliseconds to parse, check and compile ``source``."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        for _ in range(20):
            pql.compile(source)
        times.append((time.perf_counter() - start) / 20 * 1000)
    return statistics.median(times)


def main() -> None:
    print(
        f"machine: nproc={os.cpu_count()}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.machine()}"
    )
    print(f"command: {Path(sys.executable).name} bench/pql_eval.py\n")
    results = {name: rate(fn, 100_000) for name, fn in flat_contenders().items()}
    floor_rate = results["hand-written lambda (floor)"]
    print("Flat rule: `" + FLAT_RULE + "`\n")
    print("| evaluator | evaluations/s (median) | ratio to lambda |")
    print("| --- | ---: | ---: |")
    for name, value in results.items():
        print(f"| {name} | {value:,.0f} | {value / floor_rate:.2f}× |")

    nested = pql.compile(NESTED_RULE)
    events = pql.compile(EVENT_RULE)
    assert nested.evaluate(profile=NESTED_PROFILE) is True
    assert events.evaluate(profile={}, events=EVENTS, now=NOW) is True
    print("\n| other rules (nextoffer) | evaluations/s (median) |")
    print("| --- | ---: |")
    print(
        f"| nested paths: `{NESTED_RULE}` | "
        f"{rate(lambda: nested.evaluate(profile=NESTED_PROFILE), 50_000):,.0f} |"
    )
    print(
        f"| xEvent lookback over 100 events: `{EVENT_RULE}` | "
        f"{rate(lambda: events.evaluate(profile={}, events=EVENTS, now=NOW), 300):,.0f} |"
    )
    print("\n| compile (parse + check + compile) | ms per rule (median) |")
    print("| --- | ---: |")
    for label, source in (
        ("flat rule", FLAT_RULE),
        ("nested rule", NESTED_RULE),
        ("xEvent rule", EVENT_RULE),
    ):
        print(f"| {label} | {compile_time(source):.3f} |")


if __name__ == "__main__":
    main()

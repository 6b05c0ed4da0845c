"""In-process cost of ``nextoffer.engine.decide``, next to a reference measured in the same run.

    .venv/bin/python bench/decide.py [--quick] [--plot docs/img/decide-scaling.png]
    .venv/bin/python bench/decide.py --strategies [--quick] [--cpu] [--strategies-plot PATH]

``--strategies``: the same library and request ranked by priority, by an auto-optimization
strategy and by a personalized-optimization strategy (5 features), each strategy with
feedback learned for every offer, at N = 10, 100 and 1,000; figures are the median over
repeats of the mean time per decision in a sample of 1,000, and the ratio to priority
ranking in the same run.

Library: one placement, one live decision over one collection of N offers (N = 10, 100,
1,000, 10,000), each offer with its own 5-condition PQL rule (varied constants, about half
eligible for the benchmark profile) and a priority in 0..100 (ties happen); request: one
proposition, top 3, priority ranking. "Sparse": the same N, but only 20 offers have a
representation for the requested placement (the rest are for another placement).

Reference: evaluating all N compiled rules of the library in a bare Python loop (what a
naive engine without pre-indexing and lazy ranking would at least pay).
Figures are the median over repeats of the mean time per call in a batch; repeats are
interleaved across libraries so that the machine's other load hits every figure alike.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nextoffer import pql
from nextoffer.engine import (
    CapCounters,
    CatalogInstance,
    DecisionRequest,
    PropositionRequest,
    build_catalog,
    decide,
)
from nextoffer.engine import catalog as schemas
from nextoffer.engine.strategy import Learned, StrategyType, increments, learn, slots

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
PROFILE = {"age": 35, "country": "US", "tier": "gold", "loyaltyPoints": 5000, "optIn": True}
COUNTRIES = ["US", "CA", "GB", "FR", "DE", "MX"]


def rule_source(rng: random.Random) -> str:
    countries = ", ".join(f'"{c}"' for c in rng.sample(COUNTRIES, 3))
    return (
        f"age >= {rng.randint(18, 40)} and country in [{countries}] "
        f'and tier = "{rng.choice(["gold", "gold", "gold", "silver"])}" '
        f"and loyaltyPoints > {rng.randint(0, 6000)} and optIn = true"
    )


STRATEGY = "xcore:ranking-strategy:0000000000000001"
STRATEGIES = {
    "auto": {"xdm:name": "auto", "xdm:strategyType": "auto-optimization"},
    "personalized": {
        "xdm:name": "personalized",
        "xdm:strategyType": "personalized-optimization",
        "xdm:features": ["tier", "country", "optIn", "@{ctx}.device", 'inSegment("s1")'],
        "xdm:explorationRate": 0.1,
    },
}


def library(
    size: int, *, sparse: bool, seed: int = 7, strategy: str | None = None
) -> list[CatalogInstance]:
    rng = random.Random(seed)

    def inst(schema: str, at_id: str, body: dict[str, Any]) -> CatalogInstance:
        return CatalogInstance(schema, at_id, f"instance-{at_id}", 1, body)

    def rep(placement: str) -> dict[str, Any]:
        return {
            "xdm:placement": placement,
            "xdm:components": [{"@type": "html", "dc:format": "text/html", "xdm:content": "<p/>"}],
        }

    out = [
        inst(schemas.PLACEMENT, "P1", {"xdm:name": "web"}),
        inst(schemas.PLACEMENT, "P2", {"xdm:name": "email"}),
        inst(
            schemas.FALLBACK_OFFER,
            "F",
            {"xdm:status": "approved", "xdm:representations": [rep("P1"), rep("P2")]},
        ),
    ]
    ids = []
    for i in range(size):
        offer_id, rule_id = f"xcore:personalized-offer:{i:016x}", f"xcore:eligibility-rule:{i:016x}"
        condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": rule_source(rng)}
        out.append(inst(schemas.ELIGIBILITY_RULE, rule_id, {"xdm:condition": condition}))
        placement = "P1" if not sparse or i < 20 else "P2"
        body = {
            "xdm:name": f"offer {i}",
            "xdm:status": "approved",
            "xdm:representations": [rep(placement)],
            "xdm:selectionConstraint": {
                "xdm:startDate": "2024-01-01T00:00:00Z",
                "xdm:endDate": "2024-12-31T00:00:00Z",
                "xdm:eligibilityRule": rule_id,
            },
            "xdm:rank": {"xdm:priority": rng.randint(0, 100)},
        }
        out.append(inst(schemas.PERSONALIZED_OFFER, offer_id, body))
        ids.append(offer_id)
    out.append(inst(schemas.COLLECTION, "C", {"xdm:filterType": "offers", "xdm:ids": ids}))
    criteria: list[dict[str, Any]] = [
        {"xdm:placements": ["P1", "P2"], "xdm:optionSelection": {"xdm:filter": "C"}}
    ]
    if strategy is not None:
        out.append(inst(schemas.RANKING_STRATEGY, STRATEGY, STRATEGIES[strategy]))
        criteria[0]["xdm:ranking"] = {
            "xdm:order": {
                "xdm:orderEvaluationType": "rankingStrategy",
                "xdm:rankingStrategy": STRATEGY,
            }
        }
    out.append(
        inst(
            schemas.DECISION,
            "D",
            {"xdm:status": "live", "xdm:criteria": criteria, "xdm:fallback": "F"},
        )
    )
    return out


def _batch_us(
    call: Callable[[], object], batch: int, clock: Callable[[], int] = time.perf_counter_ns
) -> float:
    start = clock()
    for _ in range(batch):
        call()
    return (clock() - start) / batch / 1000


def _touched(catalog: Any, *, need: int) -> list[Any]:
    """The compiled rules ``decide`` evaluates: whole priority tiers until ``need`` pass."""
    touched, found, position = [], 0, 0
    candidates = catalog.candidates("D", "P1")
    while position < len(candidates) and found < need:
        priority = candidates[position].priority
        while position < len(candidates) and candidates[position].priority == priority:
            compiled = candidates[position].rule.compiled
            touched.append(compiled)
            found += bool(compiled.evaluate(profile=PROFILE, now=NOW))
            position += 1
    return touched


def prepare(size: int, *, sparse: bool) -> dict[str, Any]:
    """Build one library's catalog and the three timed calls."""
    instances = library(size, sparse=sparse)
    started = time.perf_counter()
    catalog = build_catalog(instances, compile_rule=pql.compile)
    build_ms = (time.perf_counter() - started) * 1000
    assert catalog.errors == (), catalog.errors[:3]
    request = DecisionRequest(propositions=(PropositionRequest("D", "P1", 3),), profile=PROFILE)
    counters = CapCounters()
    rng = random.Random(1)
    result = decide(catalog, request, counters=counters, now=NOW, rng=rng)
    assert len(result.propositions[0].options) == 3

    def one() -> object:
        return decide(catalog, request, counters=counters, now=NOW, rng=rng)

    rules = [offer.rule.compiled for offer in catalog.offers.values() if offer.rule]
    touched = _touched(catalog, need=3)

    def reference() -> object:
        for compiled in rules:
            compiled.evaluate(profile=PROFILE, events=(), now=NOW, context={}, variables=None)
        return None

    def touched_reference() -> object:
        for compiled in touched:
            compiled.evaluate(profile=PROFILE, events=(), now=NOW, context={}, variables=None)
        return None

    return {
        "size": size,
        "sparse": sparse,
        "build_ms": build_ms,
        "touched": len(touched),
        "calls": {"decide_us": one, "reference_us": reference, "touched_us": touched_reference},
        "samples": {"decide_us": [], "reference_us": [], "touched_us": []},
    }


def measure(rows: list[dict[str, Any]], *, quick: bool) -> None:
    """Interleaved: each repeat times every library once, so machine load hits all alike.

    The cyclic GC is collected, then paused while timing: a 10,000-offer catalog is a big
    heap, and a full collection landing in one batch would measure the collector, not us.
    """
    batch = 20 if quick else 100
    repeats = 5 if quick else 31
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for row in rows:
                ref_batch = max(1, batch * 10 // max(row["size"], 10))
                for key, call in row["calls"].items():
                    row["samples"][key].append(
                        _batch_us(call, ref_batch if key == "reference_us" else batch)
                    )
    finally:
        gc.enable()
    for row in rows:
        for key, samples in row.pop("samples").items():
            row[key] = statistics.median(samples)
        del row["calls"]


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = [r["size"] for r in rows if not r["sparse"]]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for sparse, label in (
        (False, "decide, all offers for the placement"),
        (True, "decide, sparse (20 for the placement)"),
    ):
        axes.plot(sizes, [r["decide_us"] for r in rows if r["sparse"] is sparse], "o-", label=label)
    axes.plot(
        sizes,
        [r["reference_us"] for r in rows if not r["sparse"]],
        "s--",
        label="reference: evaluate all N rules in a loop",
    )
    axes.plot(
        sizes,
        [r["touched_us"] for r in rows if not r["sparse"]],
        "^--",
        label="reference: the rules decide evaluates, bare loop",
    )
    axes.axhline(50, color="grey", linestyle=":", label="goal: 50 µs at 100 offers")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offers in the library (N)")
    axes.set_ylabel("µs per call (median)")
    axes.set_title("nextoffer.engine.decide — top 3 by priority, 5-condition PQL rules")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def plot_strategies(rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Each strategy's cost as a multiple of priority ranking's, per N, and the goal."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6, 4))
    width = 0.35
    for shift, kind, label in (
        (-0.5, "auto", "auto-optimization"),
        (0.5, "personalized", "personalized"),
    ):
        xs = [i + shift * width for i in range(len(rows))]
        axes.bar(xs, [r[kind] / r["priority"] for r in rows], width, label=label)
    axes.axhline(1.5, color="black", linestyle="--", linewidth=1, label="goal: 1.5× priority")
    axes.set_xticks(range(len(rows)), [f"{r['size']:,} offers" for r in rows])
    axes.set_ylabel("time per decision ÷ priority ranking's")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def learned_for(catalog: Any, kind: str, seed: int = 11) -> dict[str, Learned]:
    """Feedback for every offer: 200 impressions each, a click rate of 1-10 %, over
    requests with varied feature values (personalized)."""
    rng = random.Random(seed)
    strategy = catalog.strategies[STRATEGY]
    cells: dict[str, dict[tuple[int, int], float]] = {}
    for offer_id in catalog.offers:
        rate = rng.uniform(0.01, 0.1)
        mine = cells.setdefault(offer_id, {})
        for _ in range(200):
            profile = {
                "tier": rng.choice(["gold", "silver", "bronze"]),
                "country": rng.choice(COUNTRIES),
                "optIn": rng.random() < 0.5,
            }
            context = {"ctx": {"device": rng.choice(["phone", "desktop", "tablet"])}}
            active = slots(strategy, profile, context)
            clicked = rng.random() < rate
            for key, value in increments(active, impression=True, reward=clicked).items():
                mine[key] = mine.get(key, 0.0) + value
    return {STRATEGY: learn(StrategyType(STRATEGIES[kind]["xdm:strategyType"]), cells)}


def measure_strategies(*, quick: bool, cpu: bool = False) -> list[dict[str, Any]]:
    """Priority, auto and personalized ranking on one library per size, interleaved.

    A sample is 1,000 decisions (200 quick): a strategy draws its posteriors in blocks of
    up to 256 decisions, so a sample must hold several blocks to carry their cost."""
    batch = 200 if quick else 1_000
    repeats = 5 if quick else 15
    # --cpu: this process's CPU time, not wall time (on a shared machine, time spent
    # waiting for a core is not the decision's cost).
    clock = time.process_time_ns if cpu else time.perf_counter_ns
    rows = []
    for size in (10, 100, 1_000):
        row: dict[str, Any] = {"size": size, "samples": {}, "calls": {}}
        for kind in ("priority", "auto", "personalized"):
            instances = library(size, sparse=False, strategy=None if kind == "priority" else kind)
            catalog = build_catalog(instances, compile_rule=pql.compile)
            assert catalog.errors == (), catalog.errors[:3]
            learned = learned_for(catalog, kind) if kind != "priority" else {}
            request = DecisionRequest(
                propositions=(PropositionRequest("D", "P1", 3),),
                profile={**PROFILE, "segmentMembership": {"ups": {"s1": {"status": "realized"}}}},
                context={"ctx": {"device": "phone"}},
            )
            rng = random.Random(1)
            generator = np.random.default_rng(1)

            def one(
                catalog: Any = catalog,
                request: Any = request,
                learned: Any = learned,
                rng: random.Random = rng,
                generator: np.random.Generator = generator,
            ) -> object:
                return decide(
                    catalog,
                    request,
                    counters=CapCounters(),
                    now=NOW,
                    rng=rng,
                    learned=learned,
                    generator=generator,
                )

            assert len(one().propositions[0].options) == 3  # type: ignore[attr-defined]
            row["calls"][kind] = one
            row["samples"][kind] = []
        rows.append(row)
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for row in rows:
                for kind, call in row["calls"].items():
                    row["samples"][kind].append(_batch_us(call, batch, clock))
    finally:
        gc.enable()
    for row in rows:
        for kind, samples in row.pop("samples").items():
            row[kind] = statistics.median(samples)
        del row["calls"]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/decide-scaling.png"))
    parser.add_argument(
        "--strategies", action="store_true", help="ranking strategies against priority"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="--strategies: time by process CPU time, not wall"
    )
    parser.add_argument(
        "--strategies-plot", type=Path, help="--strategies: a bar chart of the ratios"
    )
    args = parser.parse_args()
    if args.strategies:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        found = measure_strategies(quick=args.quick, cpu=args.cpu)
        after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"python {platform.python_version()}, {'CPU' if args.cpu else 'wall'} time, "
            f"1-min load average {load:.2f} at the start, {after:.2f} at the end"
        )
        print(
            "| N | priority µs | auto-optimization µs (× priority) | personalized µs (× priority) |"
        )
        print("|---:|---:|---:|---:|")
        for row in found:
            p = row["priority"]
            print(
                f"| {row['size']:,} | {p:.1f} | {row['auto']:.1f} ({row['auto'] / p:.2f}×) | "
                f"{row['personalized']:.1f} ({row['personalized'] / p:.2f}×) |"
            )
        if args.strategies_plot is not None:
            title = (
                f"decision with a ranking strategy ÷ by priority ({'CPU' if args.cpu else 'wall'}"
                f" time, medians, load {load:.1f})"
            )
            if plot_strategies(found, args.strategies_plot, title):
                print(f"plot: {args.strategies_plot}")
        return 0
    rows = [
        prepare(size, sparse=sparse)
        for sparse in (False, True)
        for size in (10, 100, 1_000, 10_000)
    ]
    measure(rows, quick=args.quick)
    machine = platform.processor() or platform.platform()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {platform.python_version()} on {platform.machine()} / {machine}, "
        f"{os.cpu_count()} CPUs, 1-min load average at the end: {load:.2f}"
    )
    print(
        "| library | N | decide µs | reference: the K rules decide evaluates, bare loop µs (K) "
        "| reference: all N rules, bare loop µs | build ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        kind = "sparse (20 for P1)" if row["sparse"] else "all for P1"
        print(
            f"| {kind} | {row['size']:,} | {row['decide_us']:.1f} | "
            f"{row['touched_us']:.1f} ({row['touched']}) | "
            f"{row['reference_us']:.1f} | {row['build_ms']:.0f} |"
        )
    if plot(rows, args.plot):
        print(f"plot: {args.plot}")
    else:
        print("matplotlib not installed: no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

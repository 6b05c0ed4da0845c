"""PQL compile cost per rule, stage by stage, against references measured in the same run.

    python bench/pql_compile.py                          # this checkout, Markdown table
    python bench/pql_compile.py --baseline /tmp/pqlbase/src   # old vs new, interleaved

The corpus is 2,000 distinct rules in the shapes the catalog compiles: 5-condition profile
rules, nested paths, segment membership, context data ``@{…}``, ``xEvent``/``occurs``/``chain``
rules and ranking formulas (``kind="formula"``), with varied constants.

Figures are µs per rule, the median over repeats of (stage time over the corpus / rules):

* ``pql.compile`` — the public path, end to end (what the catalog pays per rule);
* the stages of ``pql.compile``: the package's own functions are wrapped with a timer
  that charges each call's *exclusive* time to its stage (lex+parse, limits, check,
  codegen, Python's ``compile()``, function creation, location fixing); ``other`` is the
  rest of ``CompiledRule.__init__``. Wrapping costs ~1 µs a call, so the staged total is a
  little above the unwrapped one;
* the reference: Python's own ``compile()`` of a hand-written 5-condition lambda source
  (``lambda p: p.get("age", 0) >= 23 and p.get("country") in (…) and …``) with the same
  varied constants — what compiling one small rule costs CPython, without PQL.

``--baseline SRC`` runs this script alternately on ``SRC`` (e.g. a worktree of an older
commit) and on this checkout, one child process per round, so the machine's load hits both
alike; each child also measures the reference, and the ratios divide by it.
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

COUNTRIES = ["US", "CA", "GB", "FR", "DE", "MX", "JP", "AU"]
TIERS = ["gold", "silver", "bronze", "platinum"]
EVENTS = ["commerce.purchases", "commerce.productViews", "web.webpagedetails.pageViews"]
CHANNELS = ["web", "mobile", "email"]


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def corpus(size: int, seed: int = 22) -> list[tuple[str, str]]:
    """``size`` distinct (source, kind) pairs in the catalog's rule shapes."""
    rng = random.Random(seed)

    def flat() -> str:
        countries = ", ".join(f'"{c}"' for c in rng.sample(COUNTRIES, 3))
        return (
            f"age >= {rng.randint(18, 40)} and country in [{countries}] "
            f'and tier = "{rng.choice(TIERS)}" '
            f"and loyaltyPoints > {rng.randint(0, 6000)} and optIn = true"
        )

    def nested() -> str:
        return (
            f'homeAddress.countryISO = "{rng.choice(COUNTRIES)}" and '
            f"person.birthYear > {rng.randint(1950, 2005)} and "
            f"person.loyalty.points >= {rng.randint(0, 9000)} and "
            f'person.tier.name != "{rng.choice(TIERS)}"'
        )

    def segment() -> str:
        first = f'inSegment("{_uuid(rng)}")'
        if rng.random() < 0.5:
            return f'{first} and billingAddress.city.equals("{rng.choice(CHANNELS)}", false)'
        return (
            f'{first} and segmentMembership.get("ups").get("{_uuid(rng)}").status '
            f'in ["realized", "existing"]'
        )

    def context() -> str:
        return (
            f"@{{_xdm.context.additionalParameters;version=1}}.channel = "
            f'"{rng.choice(CHANNELS)}" and @{{_xdm.context.device;version=1}}.type in '
            f'["phone", "tablet"] and age > {rng.randint(18, 60)} and '
            f"loyaltyPoints > {rng.randint(0, 6000)}"
        )

    def events() -> str:
        choice = rng.randrange(3)
        event = rng.choice(EVENTS)
        if choice == 0:
            return (
                f'xEvent[eventType = "{event}" and timestamp occurs <= '
                f"{rng.randint(1, 90)} days before now].count() >= {rng.randint(1, 5)}"
            )
        if choice == 1:
            return (
                f'homeAddress.countryISO = "{rng.choice(COUNTRIES)}" and chain(xEvent, '
                f'timestamp, [A: WHAT(eventType = "{event}") WHEN(< '
                f"{rng.randint(1, 48)} hours before now)])"
            )
        return (
            f'exists E from xEvent where E.eventType = "{event}" and '
            f"E.commerce.order.priceTotal > {rng.randint(10, 500)}"
        )

    def formula() -> str:
        choice = rng.randrange(3)
        if choice == 0:
            return (
                f"if( offer.characteristics.points > {rng.randint(1, 500)}, "
                f"offer.rank.priority * {rng.randint(2, 5)}, offer.rank.priority)"
            )
        if choice == 1:
            return (
                f'if( segmentMembership.get("ups").get("{_uuid(rng)}").status in '
                f'(["realized", "existing"]), offer.rank.priority + {rng.randint(1, 20)}, '
                f"offer.rank.priority)"
            )
        return (
            f"if( offer.selectionConstraint.endDate occurs <= {rng.randint(1, 72)} hours "
            f"after now, offer.rank.priority * 3, offer.rank.priority)"
        )

    shapes: list[tuple[Callable[[], str], str, int]] = [
        (flat, "rule", 40),
        (nested, "rule", 15),
        (segment, "rule", 15),
        (context, "rule", 10),
        (events, "rule", 10),
        (formula, "formula", 10),
    ]
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for make, kind, weight in shapes:
        made = 0
        while made < size * weight // 100:
            text = make()
            if text not in seen:
                seen.add(text)
                out.append((text, kind))
                made += 1
    rng.shuffle(out)
    return out


def reference_source(rng: random.Random) -> str:
    countries = ", ".join(f'"{c}"' for c in rng.sample(COUNTRIES, 3))
    return (
        f'lambda p: p.get("age", 0) >= {rng.randint(18, 40)} and p.get("country") in '
        f'({countries}) and p.get("tier") == "{rng.choice(TIERS)}" and '
        f'p.get("loyaltyPoints", 0) > {rng.randint(0, 6000)} and p.get("optIn") is True'
    )


class StageClock:
    """Charges the exclusive time of wrapped calls to named stages."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list[Any]] = []

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.perf_counter
        stack = self.stack
        totals = self.totals

        def timed(*args: Any, **kwargs: Any) -> Any:
            now = clock()
            if stack:
                parent = stack[-1]
                totals[parent[0]] += now - parent[1]
            frame: list[Any] = [stage, now]
            stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                end = clock()
                stack.pop()
                totals[stage] += end - frame[1]
                if stack:
                    stack[-1][1] = end

        return timed


# (module, attribute, stage): wrapped when present, so old and new code both report.
HOOKS = [
    ("nextoffer.pql", "CompiledRule.__init__", "other"),
    ("nextoffer.pql", "parse_source", "lex+parse"),
    ("nextoffer.pql", "tokenize", "lex+parse"),
    ("nextoffer.pql", "parse_tokens", "lex+parse"),
    ("nextoffer.pql", "check_size", "limits"),
    ("nextoffer.pql", "check_nesting", "limits"),
    ("nextoffer.pql", "check_reads", "limits"),
    ("nextoffer.pql", "check", "check"),
    ("nextoffer.pql", "compile_tree", "codegen"),
    ("nextoffer.pql.compiler", "compile", "compile()"),
    ("nextoffer.pql.compiler", "fix_missing_locations", "locations"),
    ("ast", "fix_missing_locations", "locations"),
    ("nextoffer.pql.compiler", "FunctionType", "function"),
    ("types", "FunctionType", "function"),
]
STAGES = [
    "lex+parse",
    "limits",
    "check",
    "codegen",
    "locations",
    "compile()",
    "function",
    "other",
]


def install_hooks(clock: StageClock) -> None:
    import importlib

    for module_name, attr, stage in HOOKS:
        module: Any = importlib.import_module(module_name)
        owner_name, _, name = attr.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        if name == "compile" and module_name.endswith("compiler"):
            setattr(owner, name, clock.wrap(stage, compile))  # shadows the builtin
        elif name in vars(owner):
            setattr(owner, name, clock.wrap(stage, getattr(owner, name)))


def measure(repeats: int, size: int) -> dict[str, Any]:
    from nextoffer import pql

    rules = corpus(size)
    rng = random.Random(5)
    refs = [reference_source(rng) for _ in rules]
    n = len(rules)
    rows: dict[str, list[float]] = defaultdict(list)

    def per_rule(seconds: float) -> float:
        return seconds / n * 1e6

    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            for text in refs:
                compile(text, "<ref>", "eval")
            rows["reference: compile() of a 5-condition lambda source"].append(
                per_rule(time.perf_counter() - start)
            )
            start = time.perf_counter()
            for text in refs:
                ast.parse(text, mode="eval")
            rows["reference: ast.parse of the same source"].append(
                per_rule(time.perf_counter() - start)
            )
            start = time.perf_counter()
            for text, kind in rules:
                pql.compile(text, kind=kind)
            rows["pql.compile (end to end)"].append(per_rule(time.perf_counter() - start))
            gc.collect()
        clock = StageClock()
        install_hooks(clock)
        for _ in range(repeats):
            clock.totals.clear()
            for text, kind in rules:
                pql.compile(text, kind=kind)
            for stage in STAGES:
                rows["stage: " + stage].append(per_rule(clock.totals.get(stage, 0.0)))
            rows["stage total (wrapped)"].append(per_rule(sum(clock.totals.values())))
            gc.collect()
    finally:
        gc.enable()
    return {
        "rules": n,
        "medians": {k: statistics.median(v) for k, v in rows.items()},
        "loadavg": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


def child(src: str, repeats: int, size: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            f"--src={src}",
            "--json",
            f"--repeats={repeats}",
            f"--rules={size}",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="with --baseline")
    parser.add_argument("--baseline", help="src/ directory of the code to compare against")
    parser.add_argument("--src", default=str(ROOT / "src"), help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, args.src)

    if args.json:
        print(json.dumps(measure(args.repeats, args.rules)))
        return
    if args.baseline is None:
        result = measure(args.repeats, args.rules)
        print_table({"this checkout": [result]})
        return
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        runs["before"].append(child(args.baseline, args.repeats, args.rules))
        runs["after"].append(child(str(ROOT / "src"), args.repeats, args.rules))
    print_table(runs)


def print_table(runs: dict[str, list[dict[str, Any]]]) -> None:
    ref = "reference: compile() of a 5-condition lambda source"
    labels = list(runs)
    rows: list[str] = []
    for results in runs.values():
        for r in results:
            rows.extend(k for k in r["medians"] if k not in rows)
    order = [k for k in rows if not k.startswith("stage")] + [
        "stage: " + s for s in STAGES if "stage: " + s in rows
    ]
    order.append("stage total (wrapped)")

    def med(label: str, key: str) -> float | None:
        values = [r["medians"][key] for r in runs[label] if key in r["medians"]]
        return statistics.median(values) if values else None

    def ratio(label: str, key: str) -> float | None:
        values = [r["medians"][key] / r["medians"][ref] for r in runs[label] if key in r["medians"]]
        return statistics.median(values) if values else None

    first = runs[labels[0]][0]
    print(
        f"{first['rules']} rules; python {platform.python_version()}, {platform.machine()}, "
        f"nproc {os.cpu_count()}; 1-min load per run: "
        + ", ".join(f"{label} " + "/".join(r["loadavg"] for r in runs[label]) for label in labels)
    )
    head = "| µs per rule (median) | " + " | ".join(
        f"{label} µs | {label} ratio to ref" for label in labels
    )
    if len(labels) == 2:
        head += " | after / before"
    print(head + " |")
    print("|---" + "|---:" * (2 * len(labels) + (len(labels) == 2)) + "|")
    for key in order:
        cells = []
        for label in labels:
            m, q = med(label, key), ratio(label, key)
            cells.append("–" if m is None else f"{m:,.1f}")
            cells.append("–" if q is None else f"{q:.2f}×")
        if len(labels) == 2:
            a, b = ratio(labels[0], key), ratio(labels[1], key)
            cells.append(f"{b / a:.2f}×" if a and b else "–")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

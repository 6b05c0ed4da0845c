"""Ranking strategies against known truth, through the HTTP API; and on the Open Bandit Dataset.

    .venv/bin/python bench/ranking.py [--decisions 10000] [--seeds 5] [--batch 100]
        [--workers 2] [--plot docs/img/ranking-regret.png] [--skip-obd] [--quick]

**Simulator.** A site with known click rates: a real server (``uvicorn``, ``--workers``
processes on one SQLite database) is asked for one decision per visitor over HTTP (8 in
flight); every ``--batch`` decisions the site sends what it showed
(``decisioning.propositionDisplay``) and what was clicked (a Bernoulli draw of the true
rate, ``decisioning.propositionInteract``) in one ``POST /data/core/nextoffer/events``.

* *Non-contextual*: 10 offers, click rates with mean 4 % and the best at 10 % (2.5× the
  mean), shuffled per seed. nextoffer's auto-optimization is compared with a textbook
  Beta(1,1) Thompson sampler run in this script on the same truth with the same feedback
  delay (its posteriors updated once per batch) and with random serving.
* *Contextual*: 5 offers; visitors are gold or silver members (a profile attribute
  ``tier``, half each); the best offer is A (10 %) for gold and B (10 %) for silver, every
  other offer 2 %. Personalized optimization (feature ``tier``, exploration 0.1) against
  auto-optimization; "converged" is the second half of the decisions.

Clicks are realised draws; regret is expected regret (the best rate for the visitor minus
the served offer's rate, summed). Several seeds; medians and means over seeds.

**Open Bandit Dataset** (the small sample shipped in the ``obp`` wheel: ZOZOTOWN, "all"
campaign, 10,000 rounds logged by uniform random serving and 10,000 by Bernoulli Thompson
sampling, 80 items, 3 positions). ``obp`` 0.4.1 does not install on Python 3.11 here (its
pinned PyYAML has to be built from source and fails), so the sample is read straight from
the wheel: ``pip download obp==0.4.1 --no-deps`` into a cache folder, then the CSV files
inside it. Each strategy learns from the first half of the random logs (every logged
impression and click fed to the same code the server uses, ``engine/strategy.py``); its
CTR on the second half is then estimated by inverse propensity weighting
(``V = mean(r · π(a|x) / p)`` with ``p = 1/80``, ``π`` the probability that the frozen
strategy shows item ``a`` at the logged position, by Monte Carlo over its posterior), with
a bootstrap 95 % interval. Beside it, the real CTR of the logged Thompson policy and of
random serving (their own logs' mean click, with binomial intervals).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from httpbench import Server
from scratch import scratch_dir

from nextoffer.engine.strategy import (
    Strategy,
    StrategyType,
    increments,
    learn,
    score,
    slots,
)
from nextoffer.ids import utcnow
from nextoffer.pql import feature
from nextoffer.service.tenants import bootstrap
from nextoffer.storage.store import Store

OM = "https://ns.adobe.com/experience/offer-management/"
NEXTOFFER_OM = "https://ns.nextoffer.dev/offer-management/"
HTML = OM + "content-component-html"
RECEIPT = "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1"
DECIDE = (
    'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/'
    'offer-management/decision-request;version=1.0"'
)
#: Non-contextual truth: mean 4 %, best 10 % (2.5× the mean).
RATES = [0.10, 0.05, 0.045, 0.04, 0.035, 0.03, 0.03, 0.025, 0.025, 0.02]
#: Contextual truth: tier → rate per offer (A best for gold, B for silver).
CONTEXT_RATES = {
    "gold": [0.10, 0.02, 0.02, 0.02, 0.02],
    "silver": [0.02, 0.10, 0.02, 0.02, 0.02],
}
IN_FLIGHT = 8


# -- the site, over HTTP ------------------------------------------------------------------


class Site:
    """One tenant on a running server: a library whose decision ranks with a strategy."""

    def __init__(self, server: Server, creds: Any, strategy: dict[str, Any], offers: int) -> None:
        self.base = server.base
        self.container = creds.container_id
        self.headers = {
            "Authorization": f"Bearer {creds.access_token}",
            "x-api-key": creds.api_key,
            "x-gw-ims-org-id": creds.org,
            "x-sandbox-name": creds.sandbox,
        }
        self.http = httpx.Client(base_url=self.base, headers=self.headers, timeout=60)
        self.placement = self.create(
            "offer-placement",
            {"xdm:name": "banner", "xdm:channel": "web", "xdm:componentType": HTML},
        )
        reps = [
            {
                "xdm:placement": self.placement,
                "xdm:components": [{"@type": HTML, "dc:format": "text/html"}],
            }
        ]
        self.offers = [
            self.create(
                "personalized-offer",
                {"xdm:name": f"offer {i}", "xdm:status": "approved", "xdm:representations": reps},
            )
            for i in range(offers)
        ]
        fallback = self.create(
            "fallback-offer",
            {"xdm:name": "fallback", "xdm:status": "approved", "xdm:representations": reps},
        )
        collection = self.create(
            "offer-filter", {"xdm:name": "all", "xdm:filterType": "offers", "xdm:ids": self.offers}
        )
        self.strategy = self.create("ranking-strategy", strategy)
        self.decision = self.create(
            "offer-activity",
            {
                "xdm:name": "home",
                "xdm:status": "live",
                "xdm:fallback": fallback,
                "xdm:criteria": [
                    {
                        "xdm:placements": [self.placement],
                        "xdm:optionSelection": {"xdm:filter": collection},
                        "xdm:ranking": {
                            "xdm:order": {
                                "xdm:orderEvaluationType": "rankingStrategy",
                                "xdm:rankingStrategy": self.strategy,
                            }
                        },
                    }
                ],
            },
        )

    def create(self, kind: str, body: dict[str, Any]) -> str:
        namespace = NEXTOFFER_OM if kind == "ranking-strategy" else OM
        response = self.http.post(
            f"/data/core/xcore/{self.container}/instances",
            json=body,
            headers={
                "Accept": RECEIPT,
                "Content-Type": f'application/schema-instance+json; schema="{namespace}{kind}"',
            },
        )
        response.raise_for_status()
        return str(response.json()["@id"])

    def profile(self, visitor: str, attributes: dict[str, Any]) -> None:
        response = self.http.post(
            "/data/core/nextoffer/profiles",
            json={"identityMap": {"Email": [{"id": visitor}]}, "profile": attributes},
        )
        response.raise_for_status()

    async def decide_all(self, visitors: Sequence[str]) -> list[tuple[str, str]]:
        """One decision per visitor, ``IN_FLIGHT`` at a time: (proposition id, offer)."""
        limit = asyncio.Semaphore(IN_FLIGHT)
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers, timeout=60) as c:

            async def one(visitor: str) -> tuple[str, str]:
                body = {
                    "xdm:propositionRequests": [
                        {"xdm:placementId": self.placement, "xdm:activityId": self.decision}
                    ],
                    "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": visitor}]}}],
                }
                async with limit:
                    response = await c.post(
                        f"/data/core/ode/{self.container}/decisions",
                        json=body,
                        headers={"Content-Type": DECIDE},
                    )
                response.raise_for_status()
                answer = response.json()
                option = answer["xdm:propositions"][0]["xdm:options"][0]["xdm:id"]
                return str(answer["xdm:propositionId"]), str(option)

            return list(await asyncio.gather(*(one(v) for v in visitors)))

    def feedback(self, shown: Sequence[tuple[str, str, bool]]) -> None:
        """(proposition id, offer, clicked): a display for each, an interact per click."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        events = []
        for proposition, offer, clicked in shown:
            for kind in ("display", "interact") if clicked else ("display",):
                events.append(
                    {
                        "_id": str(uuid.uuid4()),
                        "timestamp": now,
                        "eventType": f"decisioning.proposition{kind.capitalize()}",
                        "https://ns.adobe.com/experience/decisioning/propositions": [
                            {"xdm:id": proposition, "xdm:items": [{"xdm:id": offer}]}
                        ],
                    }
                )
        for start in range(0, len(events), 1000):
            response = self.http.post(
                "/data/core/nextoffer/events", json={"events": events[start : start + 1000]}
            )
            response.raise_for_status()

    def close(self) -> None:
        self.http.close()


@dataclass
class Run:
    """One policy on one seed: clicks and expected regret after each decision."""

    name: str
    clicks: list[int] = field(default_factory=list)
    regret: list[float] = field(default_factory=list)

    def add(self, clicked: bool, regret: float) -> None:
        self.clicks.append((self.clicks[-1] if self.clicks else 0) + int(clicked))
        self.regret.append((self.regret[-1] if self.regret else 0.0) + regret)


def served(
    site: Site,
    truth: dict[str, list[float]],
    visitors: list[tuple[str, str]],
    *,
    batch: int,
    rng: np.random.Generator,
    name: str,
) -> Run:
    """nextoffer over HTTP: decide a batch, then send its feedback."""
    run = Run(name)
    position = {offer: i for i, offer in enumerate(site.offers)}
    for start in range(0, len(visitors), batch):
        chunk = visitors[start : start + batch]
        answers = asyncio.run(site.decide_all([v for v, _ in chunk]))
        shown = []
        for (_, segment), (proposition, offer) in zip(chunk, answers, strict=True):
            rates = truth[segment]
            rate = rates[position[offer]]
            clicked = bool(rng.random() < rate)
            shown.append((proposition, offer, clicked))
            run.add(clicked, max(rates) - rate)
        site.feedback(shown)
    return run


def textbook(
    truth: dict[str, list[float]],
    visitors: list[tuple[str, str]],
    *,
    batch: int,
    rng: np.random.Generator,
) -> Run:
    """Beta(1,1) Thompson sampling, posteriors updated once per batch (the same delay)."""
    run = Run("textbook Thompson")
    k = len(next(iter(truth.values())))
    wins, losses = np.zeros(k), np.zeros(k)
    pending: list[tuple[int, bool]] = []
    for n, (_, segment) in enumerate(visitors):
        if n % batch == 0:
            for arm, clicked in pending:
                wins[arm] += clicked
                losses[arm] += not clicked
            pending = []
        arm = int(np.argmax(rng.beta(1 + wins, 1 + losses)))
        rates = truth[segment]
        clicked = bool(rng.random() < rates[arm])
        pending.append((arm, clicked))
        run.add(clicked, max(rates) - rates[arm])
    return run


def uniform(truth: dict[str, list[float]], visitors: list[tuple[str, str]], rng: Any) -> Run:
    run = Run("random")
    k = len(next(iter(truth.values())))
    for _, segment in visitors:
        arm = int(rng.integers(k))
        rates = truth[segment]
        run.add(bool(rng.random() < rates[arm]), max(rates) - rates[arm])
    return run


def scenario(
    name: str,
    strategies: dict[str, dict[str, Any]],
    truth_for: Any,
    *,
    seeds: int,
    decisions: int,
    batch: int,
    workers: int,
    baselines: bool,
) -> list[dict[str, Run]]:
    """Every seed: a fresh database and server per strategy, the same visitors and truth."""
    results = []
    for seed in range(seeds):
        truth, segments = truth_for(seed)
        visitor_rng = random.Random(seed)
        visitors = [
            (f"v{visitor_rng.randrange(2000)}", "") for _ in range(decisions)
        ]  # 2,000 distinct visitors
        profile_segment = {f"v{i}": segments[i % len(segments)] for i in range(2000)}
        visitors = [(v, profile_segment[v]) for v, _ in visitors]
        runs: dict[str, Run] = {}
        for label, body in strategies.items():
            folder = scratch_dir("nextoffer-ranking-")
            db_url = f"sqlite:///{folder / 'bench.db'}"
            store = Store.open(db_url)  # an empty database is migrated on open
            try:
                creds = bootstrap(store, org="BENCH@AdobeOrg", sandbox="prod", now=utcnow())
            finally:
                store.close()
            server = Server(db_url, workers=workers, env={"NEXTOFFER_METRICS": "0"})
            try:
                site = Site(server, creds, body, len(next(iter(truth.values()))))
                if len(segments) > 1:
                    for visitor, segment in profile_segment.items():
                        site.profile(visitor, {"tier": segment})
                started = time.monotonic()
                runs[label] = served(
                    site,
                    {s: truth[s] for s in truth},
                    visitors,
                    batch=batch,
                    rng=np.random.default_rng([seed, 1]),
                    name=label,
                )
                elapsed = time.monotonic() - started
                site.close()
            finally:
                server.stop()
            print(
                f"  {name} seed {seed} {label}: {runs[label].clicks[-1]} clicks, "
                f"regret {runs[label].regret[-1]:.1f} ({elapsed:.0f} s)",
                flush=True,
            )
        if baselines:
            runs["textbook Thompson"] = textbook(
                truth, visitors, batch=batch, rng=np.random.default_rng([seed, 2])
            )
            runs["random"] = uniform(truth, visitors, np.random.default_rng([seed, 3]))
        results.append(runs)
    return results


def flat_truth(seed: int) -> tuple[dict[str, list[float]], list[str]]:
    rates = list(RATES)
    random.Random(seed).shuffle(rates)
    return {"": rates}, [""]


def context_truth(seed: int) -> tuple[dict[str, list[float]], list[str]]:
    return {k: list(v) for k, v in CONTEXT_RATES.items()}, ["gold", "silver"]


# -- choosing the personalized model ------------------------------------------------------


def linear_thompson(visitors: list[tuple[str, str]], *, batch: int, seed: int) -> Run:
    """nextoffer's personalized model in process (``engine/strategy.py``: Bayesian linear
    regression, Thompson sampling, exploration 0.1), refreshed once per batch."""
    strategy = Strategy(
        "S", "", 1, {}, StrategyType.PERSONALIZED, "clicks", (feature("tier"),), 0.1
    )
    generator = np.random.default_rng([seed, 4])
    rng = np.random.default_rng([seed, 5])
    run = Run("Bayesian linear Thompson (numpy)")
    candidates = tuple(_Arm(str(i)) for i in range(len(CONTEXT_RATES["gold"])))
    cells: dict[str, dict[tuple[int, int], float]] = {}
    learned = learn(strategy.type, cells)
    for n, (_, tier) in enumerate(visitors):
        if n and n % batch == 0:
            learned = learn(strategy.type, cells)
        active = slots(strategy, {"tier": tier}, {})
        arm = next(score(strategy, learned, candidates, active, generator).order)
        rates = CONTEXT_RATES[tier]
        clicked = bool(rng.random() < rates[arm])
        mine = cells.setdefault(str(arm), {})
        for key, value in increments(active, impression=True, reward=clicked).items():
            mine[key] = mine.get(key, 0.0) + value
        run.add(clicked, max(rates) - rates[arm])
    return run


@dataclass(frozen=True)
class _Arm:
    at_id: str


def vowpal(
    visitors: list[tuple[str, str]], *, batch: int, seed: int, options: str, name: str
) -> Run | None:
    """Vowpal Wabbit's contextual bandit (``cb_explore_adf``), learning once per batch."""
    try:
        import vowpalwabbit
    except ImportError:
        return None
    workspace = vowpalwabbit.Workspace(
        f"--cb_explore_adf {options} --quiet -q UA --random_seed {seed}"
    )
    rng = np.random.default_rng([seed, 5])
    k = len(CONTEXT_RATES["gold"])
    run = Run(name)
    pending: list[tuple[str, int, float, bool]] = []

    def example(tier: str, label: tuple[int, float, float] | None = None) -> list[str]:
        lines = [f"shared |U tier={tier}"]
        for arm in range(k):
            prefix = f"0:{label[1]}:{label[2]} " if label is not None and label[0] == arm else ""
            lines.append(f"{prefix}|A offer={arm}")
        return lines

    for n, (_, tier) in enumerate(visitors):
        if n and n % batch == 0:
            for seen, arm, probability, clicked in pending:
                workspace.learn(example(seen, (arm, -1.0 if clicked else 0.0, probability)))
            pending = []
        pmf = np.asarray(workspace.predict(example(tier)), dtype=float)
        pmf = pmf / pmf.sum()
        arm = int(rng.choice(k, p=pmf))
        rates = CONTEXT_RATES[tier]
        clicked = bool(rng.random() < rates[arm])
        pending.append((tier, arm, float(pmf[arm]), clicked))
        run.add(clicked, max(rates) - rates[arm])
    workspace.finish()
    return run


def models(*, seeds: int, decisions: int, batch: int) -> list[dict[str, Run]]:
    """The candidates for personalized optimization on the contextual truth, in process."""
    results = []
    for seed in range(seeds):
        visitor_rng = random.Random(seed)
        visitors = [("", visitor_rng.choice(["gold", "silver"])) for _ in range(decisions)]
        runs = {
            "Bayesian linear Thompson (numpy)": linear_thompson(visitors, batch=batch, seed=seed)
        }
        for options, name in (
            ("--epsilon 0.1", "Vowpal Wabbit cb_explore_adf, epsilon 0.1"),
            ("--squarecb", "Vowpal Wabbit cb_explore_adf, SquareCB"),
        ):
            found = vowpal(visitors, batch=batch, seed=seed, options=options, name=name)
            if found is not None:
                runs[name] = found
        results.append(runs)
    return results


# -- the Open Bandit Dataset --------------------------------------------------------------

OBP_WHEEL = "obp==0.4.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nextoffer-bench"


def obd_rows(policy: str) -> list[dict[str, str]]:
    """The "all" campaign's logs of one policy (``random`` or ``bts``) from the wheel."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("obp-0.4.1-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(CACHE),
                OBP_WHEEL,
            ],
            check=True,
        )
        wheels = sorted(CACHE.glob("obp-0.4.1-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        text = wheel.read(f"obp/dataset/obd/{policy}/all/all.csv").decode()
    return list(csv.DictReader(io.StringIO(text)))


def _binomial(clicks: int, n: int) -> tuple[float, float, float]:
    p = clicks / n
    half = 1.96 * (p * (1 - p) / n) ** 0.5
    return p, p - half, p + half


def obd(seed: int = 0, draws: int = 300) -> list[tuple[str, float, float, float]]:
    random_logs = sorted(obd_rows("random"), key=lambda r: r["timestamp"])
    bts_logs = obd_rows("bts")
    items = sorted({int(r["item_id"]) for r in random_logs})
    n_items = len(items)
    half = len(random_logs) // 2
    train, test = random_logs[:half], random_logs[half:]
    features = ["user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3"]
    auto = Strategy("auto", "", 1, {}, StrategyType.AUTO, "clicks")
    personalized = Strategy(
        "personalized",
        "",
        1,
        {},
        StrategyType.PERSONALIZED,
        "clicks",
        tuple(feature(f"@{{user}}.{name}") for name in features),
        0.1,
    )
    out = []
    for label, strategy in (
        ("auto-optimization", auto),
        ("personalized (exploration 0.1)", personalized),
    ):
        cells: dict[str, dict[tuple[int, int], float]] = {}
        for row in train:
            context = {"user": {name: row[name] for name in features}}
            active = slots(strategy, {}, context)
            mine = cells.setdefault(row["item_id"], {})
            for key, value in increments(
                active, impression=True, reward=row["click"] == "1"
            ).items():
                mine[key] = mine.get(key, 0.0) + value
        learned = learn(strategy.type, cells)

        @dataclass(frozen=True)
        class Item:
            at_id: str

        candidates = tuple(Item(str(i)) for i in items)
        generator = np.random.default_rng(seed)
        weights = []
        cache: dict[tuple[int, ...], np.ndarray] = {}
        for row in test:
            context = {"user": {name: row[name] for name in features}}
            active = slots(strategy, {}, context)
            ranks = cache.get(active)
            if ranks is None:
                # P(item at rank r) for r = 1..3, by Monte Carlo over the posterior.
                counts = np.zeros((3, n_items))
                for _ in range(draws):
                    order = score(strategy, learned, candidates, active, generator).order
                    for rank, position in zip(range(3), order, strict=False):
                        counts[rank, position] += 1
                ranks = cache[active] = counts / draws
            position = int(row["position"]) - 1
            item = items.index(int(row["item_id"]))
            weights.append(ranks[position, item] / float(row["propensity_score"]))
        rewards = np.array([float(r["click"]) for r in test])
        values = rewards * np.array(weights)
        estimate = float(values.mean())
        boot = np.random.default_rng(seed + 1)
        means = [
            float(values[boot.integers(len(values), size=len(values))].mean()) for _ in range(2000)
        ]
        out.append(
            (label, estimate, float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)))
        )
    clicks = sum(int(r["click"]) for r in bts_logs)
    out.append(("logged Bernoulli Thompson (real CTR)", *_binomial(clicks, len(bts_logs))))
    clicks = sum(int(r["click"]) for r in test)
    out.append(("logged random, second half (real CTR)", *_binomial(clicks, len(test))))
    return out


# -- report -------------------------------------------------------------------------------


def summarise(results: list[dict[str, Run]], *, tail_from: int = 0) -> dict[str, list[float]]:
    """Clicks per policy per seed (from decision ``tail_from`` on)."""
    found: dict[str, list[float]] = {}
    for runs in results:
        for name, run in runs.items():
            before = run.clicks[tail_from - 1] if tail_from else 0
            found.setdefault(name, []).append(run.clicks[-1] - before)
    return found


def plot(flat: list[dict[str, Run]], contextual: list[dict[str, Run]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, results, title in (
        (axes[0], flat, "10 offers, best 2.5× the mean rate"),
        (axes[1], contextual, "best offer depends on the profile's tier"),
    ):
        for name in results[0]:
            curves = np.array([runs[name].regret for runs in results])
            x = np.arange(1, curves.shape[1] + 1)
            line = ax.plot(x, np.median(curves, axis=0), label=name)[0]
            ax.fill_between(
                x, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.15
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("decisions")
        ax.set_ylabel("cumulative expected regret (clicks)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(f"Regret over time: median and range over {len(flat)} seeds", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def table(title: str, clicks: dict[str, list[float]], reference: str) -> None:
    print(f"\n{title}")
    print(f"| policy | clicks, mean of seeds | per seed | × {reference} |")
    print("|---|---:|---|---:|")
    ref = statistics.mean(clicks[reference])
    for name, values in clicks.items():
        mean = statistics.mean(values)
        per_seed = ", ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {mean:.1f} | {per_seed} | {mean / ref:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=Path("docs/img/ranking-regret.png"))
    parser.add_argument("--skip-obd", action="store_true")
    parser.add_argument(
        "--models-only",
        action="store_true",
        help="only the in-process comparison of personalized models (no server)",
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds of 2,000 decisions")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.decisions = 2, 2_000
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.workers} workers, "
        f"{args.decisions} decisions × {args.seeds} seeds, feedback every {args.batch}"
    )
    compared = models(seeds=args.seeds, decisions=args.decisions, batch=args.batch)
    table(
        "Personalized models on the contextual truth, in process, all decisions:",
        summarise(compared),
        "Bayesian linear Thompson (numpy)",
    )
    table(
        "Personalized models, converged (second half):",
        summarise(compared, tail_from=args.decisions // 2),
        "Bayesian linear Thompson (numpy)",
    )
    if args.models_only:
        return 0
    auto = {"xdm:name": "auto", "xdm:strategyType": "auto-optimization"}
    personalized = {
        "xdm:name": "by tier",
        "xdm:strategyType": "personalized-optimization",
        "xdm:features": ["tier"],
        "xdm:explorationRate": 0.1,
    }
    common = {
        "seeds": args.seeds,
        "decisions": args.decisions,
        "batch": args.batch,
        "workers": args.workers,
    }
    flat = scenario(
        "flat", {"nextoffer auto-optimization": auto}, flat_truth, baselines=True, **common
    )
    table(
        "Non-contextual (10 offers, best at 2.5× the mean):",
        summarise(flat),
        "textbook Thompson",
    )
    contextual = scenario(
        "contextual",
        {"nextoffer personalized": personalized, "nextoffer auto-optimization": auto},
        context_truth,
        baselines=False,
        **common,
    )
    table("Contextual, all decisions:", summarise(contextual), "nextoffer auto-optimization")
    table(
        "Contextual, converged (second half):",
        summarise(contextual, tail_from=args.decisions // 2),
        "nextoffer auto-optimization",
    )
    if plot(flat, contextual, args.plot):
        print(f"\nplot: {args.plot}")
    if not args.skip_obd:
        print("\nOpen Bandit Dataset sample (all campaign): CTR with 95 % intervals")
        print("| policy | CTR | 95 % interval |")
        print("|---|---:|---|")
        for label, value, low, high in obd():
            print(f"| {label} | {value:.4f} | {low:.4f} – {high:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

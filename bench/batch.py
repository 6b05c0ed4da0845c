"""Batch decisioning: profiles per second and peak memory, per engine and audience size.

    .venv/bin/python bench/batch.py [--sizes 100000 1000000] [--engines local spark]
        [--workers 0] [--plot docs/img/batch.png] [--json batch.json]
        [--db-url postgresql://…] [--redis redis://…] [--compare-src OTHER/src] [--repeat 1]

Per size, in one SQLite database (a sandbox per size): N profiles written as JSON lines
and loaded with ``nextoffer import profiles`` (timed too); one audience, ``age >= 49``
(about half of ages 18–80); one live decision over a 100-offer collection (5-condition
PQL rules; every third offer capped: a global cap of N/200 that runs out mid-batch and one
per profile), item count 1. Each engine runs the same job (``submit``, ``claim``,
``execute`` on a root with no server), with the cap counters and the offers report
emptied before each run so every run does the same work. Reported per run: wall seconds,
profiles per second (whole audience scanned ÷ wall time) and per core, decisions, peak
RSS of the whole process tree (runner, worker processes, Spark's JVM) sampled every
0.1 s, the stages' seconds summed over the workers, and the machine's load average.

The reference, measured in the same run: the engine alone (``engine.decide`` in a loop,
one process, no IO, on the same library and the audience's profiles) in µs per decision;
the batch's CPU per decision ÷ that is how close the whole job comes to the engine floor.

``--db-url`` puts the profiles, library and records in that database instead (PostgreSQL:
an empty database the bench migrates), ``--redis`` the cap counters in that Redis (their
keys of the tenant's container emptied before each run, its marker kept). With
``--compare-src``, every job runs in a process of its own, once with this checkout's
``src`` and once with the other's (``base``: e.g. ``git worktree add /tmp/base HEAD`` and
``/tmp/base/src``), alternating, ``--repeat`` times each: a before/after in one run, on the
same data and the same servers; the medians of wall time and profiles per second are
printed per variant at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
import sqlalchemy
from scratch import scratch_dir

from nextoffer.engine import CapCounters, DecisionRequest, PropositionRequest, decide
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
    SchemaRef,
)
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.service.catalogs import build_snapshot
from nextoffer.settings import Settings

HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
COUNTRIES = ["US", "CA", "GB", "FR", "DE", "MX"]
SEGMENT = "age >= 49"
MOMENT = datetime(2026, 6, 1, 12, tzinfo=UTC)


def rule_source(rng: random.Random) -> str:
    countries = ", ".join(f'"{c}"' for c in rng.sample(COUNTRIES, 3))
    return (
        f"age >= {rng.randint(18, 40)} and country in [{countries}] "
        f'and tier = "{rng.choice(["gold", "gold", "gold", "silver"])}" '
        f"and loyaltyPoints > {rng.randint(0, 6000)} and optIn = true"
    )


def write_profiles(path: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("wb") as out:
        for n in range(count):
            body = {
                "identityMap": {"Email": [{"id": f"user{n}@example.com"}]},
                "profile": {
                    "age": rng.randint(18, 80),
                    "country": rng.choice(COUNTRIES),
                    "tier": rng.choice(["gold", "silver", "bronze"]),
                    "loyaltyPoints": rng.randint(0, 10_000),
                    "optIn": rng.random() < 0.8,
                },
            }
            out.write(orjson.dumps(body) + b"\n")


def library(no: NextOffer, principal: Principal, container: str, audience: int) -> dict[str, str]:
    def make(object_type: Any, body: dict[str, Any]) -> str:
        ref = SchemaRef(object_type, None, "")
        return no.repository.create(principal, container, ref, body).at_id

    rng = random.Random(7)
    placement = make(PLACEMENT, {"xdm:name": "p", "xdm:channel": "web", "xdm:componentType": HTML})
    reps = [
        {"xdm:placement": placement, "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
    ]
    offers = []
    for n in range(100):
        rule = make(RULE, {"xdm:name": f"r{n}", "xdm:condition": {"xdm:value": rule_source(rng)}})
        body: dict[str, Any] = {
            "xdm:name": f"o{n}",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:rank": {"xdm:priority": rng.randint(0, 100)},
            "xdm:selectionConstraint": {"xdm:eligibilityRule": rule},
        }
        if n % 3 == 0:
            body["xdm:frequencyCappingConstraints"] = [
                {"xdm:limit": max(1, audience // 200), "xdm:scope": "global"},
                {"xdm:limit": 1, "xdm:scope": "profile"},
            ]
        offers.append(make(PERSONALIZED_OFFER, body))
    fallback = make(
        FALLBACK_OFFER, {"xdm:name": "f", "xdm:status": "approved", "xdm:representations": reps}
    )
    collection = make(COLLECTION, {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": offers})
    decision = make(
        DECISION,
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [{"xdm:optionSelection": {"xdm:filter": collection}}],
        },
    )
    return {"placement": placement, "decision": decision}


class PeakRss:
    """The peak summed RSS of this process and all its descendants, sampled."""

    def __init__(self, interval: float = 0.1) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        # Processes alive before the job (Spark's gateway JVM outlives its session) are
        # not the job's.
        before = {p.pid for p in me.children(recursive=True)}
        while not self._stop.is_set():
            total = 0
            mine = [p for p in me.children(recursive=True) if p.pid not in before]
            for proc in [me, *mine]:
                with contextlib.suppress(psutil.Error):  # a worker that just exited
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def engine_reference(
    no: NextOffer, container: str, ids: dict[str, str], db_url: str, org: str, sandbox: str
) -> float:
    """CPU µs per decision of the engine alone, on 20,000 profiles of the audience."""
    snapshot = build_snapshot(no.catalogs.image(container), built="bench")
    proposition = (PropositionRequest(ids["decision"], ids["placement"], 1),)
    engine = sqlalchemy.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT attributes FROM profiles WHERE org_id = :o AND sandbox = :s LIMIT 40000"
            ),
            {"o": org, "s": sandbox},
        ).fetchall()
    engine.dispose()
    loaded = (r[0] if isinstance(r[0], dict) else orjson.loads(r[0]) for r in rows)
    profiles = [p for p in loaded if p["age"] >= 49][:20_000]
    rng = random.Random(1)
    counters = CapCounters(counts={})
    started = time.thread_time()  # CPU, as the job's stages are measured
    for profile in profiles:
        decide(
            snapshot.catalog,
            DecisionRequest(proposition, profile=profile),
            counters=counters,
            now=MOMENT,
            rng=rng,
        )
    return (time.thread_time() - started) / len(profiles) * 1e6


def reset_counters(db_url: str, redis_url: str | None, container: str) -> None:
    """Counters and the offers report emptied (in Redis: the container's counters, its
    marker kept, as ``admin`` would find them after a first count)."""
    engine = sqlalchemy.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM cap_counters"))
        conn.execute(sqlalchemy.text("DELETE FROM offer_daily"))
    engine.dispose()
    if redis_url is not None:
        import redis

        client = redis.Redis.from_url(redis_url)
        names = [n for n in client.scan_iter(f"nextoffer:cap:{{{container}}}:*") if b"|" in n]
        for first in range(0, len(names), 1000):
            client.delete(*names[first : first + 1000])
        client.close()


def run_elsewhere(
    src: Path, settings: Settings, principal: Principal, body: dict[str, Any], engine: str
) -> dict[str, Any]:
    """:func:`run_job` in a process of its own whose ``nextoffer`` is ``src``'s (its
    worker processes too: they inherit ``PYTHONPATH``)."""
    job = {
        "settings": {
            "db_url": settings.db_url,
            "redis_url": settings.redis_url,
            "datasets_dir": settings.datasets_dir,
            "batch_workers": settings.batch_workers,
        },
        "principal": [principal.org, principal.sandbox, "bench", "bench"],
        "body": body,
        "engine": engine,
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src.resolve()), str(Path(__file__).parent)]),
    }
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(job)],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def one(job_text: str) -> int:
    """``--one``: a job of :func:`run_elsewhere`, its row printed as the last line."""
    import nextoffer

    job = json.loads(job_text)
    settings = Settings(**job["settings"], freeze_heap=False)
    row = run_job(settings, Principal(*job["principal"]), job["body"], job["engine"])
    row["src"] = str(Path(nextoffer.__file__).parent.parent)
    print(json.dumps(row), flush=True)
    return 0


def run_job(
    settings: Settings, principal: Principal, body: dict[str, Any], engine: str
) -> dict[str, Any]:
    with NextOffer.open(settings, clock=lambda: MOMENT) as no:
        dataset = no.datasets.create(principal, {"name": f"bench-{engine}"})
        job = no.batch.submit(
            principal,
            {**body, "xdm:dataSetId": dataset.dataset_id},
            container_id=None,
            engine=engine,
        )
        claimed = no.batch.claim(job.job_id)
        assert claimed is not None
        load = os.getloadavg()
        with PeakRss() as peak:
            started = time.perf_counter()
            cpu_self = time.process_time()
            cpu_children = _children_cpu()
            final = no.batch.execute(claimed)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_self + _children_cpu() - cpu_children
        if final.status != "COMPLETED":
            raise SystemExit(f"{engine}: {final.status} {final.detail}")
    detail = final.detail
    total = detail["profilesTotal"]
    return {
        "engine": engine,
        "profiles": total,
        "decisions": detail["decisions"],
        "refused": detail.get("refusedReservations", 0),
        "wall_s": round(wall, 2),
        "profiles_per_s": round(total / wall),
        # CPU of the runner and every process it started and waited for (local workers;
        # Spark's JVM and its Python workers): what the job cost whatever the neighbours.
        "cpu_s": round(cpu, 2),
        "profiles_per_cpu_s": round(total / cpu),
        "worker_cpu_s": detail.get("workerCpuSeconds"),
        "peak_rss_mb": round(peak.peak / 2**20),
        "stages_cpu_s": detail.get("cpuSeconds", {}),
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def add_figures(row: dict[str, Any], imported: float, reference_us: float, cores: int) -> None:
    """The figures derived from a run's own."""
    row["import_s"] = round(imported, 1)
    row["reference_engine_us"] = round(reference_us, 1)
    stages = row["stages_cpu_s"]
    row["cpu_us_per_profile_by_stage"] = {
        k: round(v / row["profiles"] * 1e6, 1) for k, v in stages.items()
    }
    if row["decisions"] and "decide" in stages:
        per = stages["decide"] / row["decisions"] * 1e6
        row["decide_cpu_us_per_decision"] = round(per, 1)
        row["decide_ratio_to_engine"] = round(per / reference_us, 2)
    row["profiles_per_s_per_core"] = round(row["profiles_per_s"] / cores)
    # What an otherwise idle machine of this many cores would take, from CPU spent.
    row["idle_machine_estimate_s"] = round(row["cpu_s"] / cores, 1)


def print_medians(rows: list[dict[str, Any]]) -> None:
    """Per size, engine and variant: the median wall seconds, profiles per second and CPU
    seconds of its runs."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["profiles"], row["engine"], row["variant"]), []).append(row)
    print("profiles  engine  variant  runs  median wall s  median profiles/s  median cpu s")
    for (size, engine, variant), runs in sorted(groups.items()):
        print(
            f"{size:>8,}  {engine:<6}  {variant:<7}  {len(runs):>4}"
            f"  {statistics.median(r['wall_s'] for r in runs):>13.2f}"
            f"  {statistics.median(r['profiles_per_s'] for r in runs):>17,.0f}"
            f"  {statistics.median(r['cpu_s'] for r in runs):>12.2f}",
            flush=True,
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r['engine']}\n{r['profiles']:,}" for r in rows]
    left.bar(
        labels,
        [r["wall_s"] for r in rows],
        color=["C0" if r["engine"] == "local" else "C1" for r in rows],
    )
    left.axhline(60, color="grey", linestyle="--", label="goal: 1M in 60 s")
    left.set_ylabel("wall seconds")
    left.set_title("Batch job time")
    left.legend()
    right.bar(
        labels,
        [r["peak_rss_mb"] for r in rows],
        color=["C0" if r["engine"] == "local" else "C1" for r in rows],
    )
    right.set_ylabel("peak RSS of the process tree, MB")
    right.set_title("Memory")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=["local", "spark"])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--dir", type=Path, default=None, help="Working folder (default: a temporary one)."
    )
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Reuse the profiles and library a previous run left in --dir (no import); merge"
        " the figures into --json.",
    )
    parser.add_argument("--db-url", default=None, help="a database (default: SQLite in --dir)")
    parser.add_argument("--redis", default=None, help="cap counters in this Redis")
    parser.add_argument(
        "--compare-src", type=Path, default=None, help="another checkout's src: its jobs too"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each job (medians)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        return one(args.one)
    folder = scratch_dir("nextoffer-batch-", keep=args.dir)
    db_url = args.db_url or f"sqlite:///{folder / 'bench.db'}"
    if args.db_url and not args.reuse:
        from nextoffer.storage.store import Store

        store = Store.open(db_url)
        store.migrate()
        store.close()
    settings = Settings(
        db_url=db_url,
        redis_url=args.redis,
        datasets_dir=str(folder / "datasets"),
        batch_workers=args.workers,
        freeze_heap=False,
    )
    variants: list[tuple[str, Path | None]] = [("this", None)]
    if args.compare_src is not None:
        variants = [
            ("this", Path(__file__).resolve().parent.parent / "src"),
            ("base", args.compare_src),
        ]
    cores = args.workers or os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    print(f"cores {os.cpu_count()}, workers {cores}, load {os.getloadavg()}", flush=True)
    for size in args.sizes:
        sandbox = f"s{size}"
        org = "BENCH@AdobeOrg"
        saved = folder / f"setup-{size}.json"
        if args.reuse and saved.exists():
            setup_ = json.loads(saved.read_text())
            principal = Principal(org, sandbox, "bench", "bench")
            ids, segment_id, imported = setup_["ids"], setup_["segment"], setup_["import_s"]
            container_id = setup_["container"]
            print(f"{size:,} profiles: reusing {saved}", flush=True)
        else:
            principal, ids, segment_id, container_id, imported = prepare(
                settings, folder, org, sandbox, size
            )
            saved.write_text(
                json.dumps(
                    {
                        "ids": ids,
                        "segment": segment_id,
                        "container": container_id,
                        "import_s": imported,
                    }
                )
            )
        with NextOffer.open(settings) as no:
            reference_us = engine_reference(no, container_id, ids, db_url, org, sandbox)
        print(f"reference: engine alone {reference_us:.1f} µs per decision", flush=True)
        body = {
            "xdm:segmentIds": [segment_id],
            "xdm:propositionRequests": [
                {
                    "xdm:activityId": ids["decision"],
                    "xdm:placementId": ids["placement"],
                    "xdm:itemCount": 1,
                }
            ],
            "nextoffer:seed": 42,
        }
        for engine in args.engines:
            for turn in range(args.repeat):
                # Each repeat starts one variant further on: neither always runs first.
                for name, src in (
                    variants[turn % len(variants) :] + variants[: turn % len(variants)]
                ):
                    reset_counters(db_url, args.redis, container_id)
                    if src is None:
                        row = run_job(settings, principal, body, engine)
                    else:
                        row = run_elsewhere(src, settings, principal, body, engine)
                    row["variant"] = name
                    add_figures(row, imported, reference_us, cores)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if len(variants) > 1 or args.repeat > 1:
        print_medians(rows)
    if args.json:
        previous = json.loads(args.json.read_text()) if args.reuse and args.json.exists() else []
        keep = [
            r
            for r in previous
            if (r["engine"], r["profiles"]) not in {(r2["engine"], r2["profiles"]) for r2 in rows}
        ]
        rows = sorted(keep + rows, key=lambda r: (r["profiles"], r["engine"]))
        args.json.write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot(rows, args.plot)
    return 0


def prepare(
    settings: Settings, folder: Path, org: str, sandbox: str, size: int
) -> tuple[Principal, dict[str, str], str, str, float]:
    """A tenant with the library, the audience and ``size`` imported profiles."""
    with NextOffer.open(settings) as no:
        creds = no.bootstrap(org=org, sandbox=sandbox)
        principal = creds.principal
        ids = library(no, principal, creds.container_id, size // 2)
        segment = no.segments.create(
            principal,
            {
                "name": "half",
                "expression": {"type": "PQL", "format": "pql/text", "value": SEGMENT},
            },
        )
    lines = folder / f"profiles-{size}.jsonl"
    write_profiles(lines, size, seed=size)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from nextoffer.cli import main; main()",
            "import",
            "profiles",
            str(lines),
            "--db",
            settings.db_url,
            "--org",
            org,
            "--sandbox",
            sandbox,
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    imported = time.perf_counter() - started
    print(f"{size:,} profiles imported in {imported:.1f} s ({size / imported:,.0f}/s)", flush=True)
    return principal, ids, segment.segment_id, creds.container_id, imported


if __name__ == "__main__":
    raise SystemExit(main())

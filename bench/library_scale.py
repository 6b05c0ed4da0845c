"""Libraries of 1k, 10k and 20k offers, each offer with its own rule: start, change, memory.

    .venv/bin/python bench/library_scale.py [--sizes 1000,10000,20000] [--repeats 3] \
        [--dir /tmp/libscale] [--plot docs/img/library-scale.png] [--json rows.json]
    .venv/bin/python bench/library_scale.py --compare /tmp/base/src ...   # before/after
    .venv/bin/python bench/library_scale.py --latency --sizes 10000 [--rounds 5] \
        [--seconds 10] [--period 0.25]                # decisions while the library changes
    .venv/bin/python bench/library_scale.py --refresh [--changes 20] [--fresh] \
        [--sizes 1000,10000,20000]                    # one refresh's CPU, by library size
    .venv/bin/python bench/library_scale.py --latency --control --gap [--pin] \
        [--build-step S] [--switch-interval S] [--writer-idle]  # designs compared (issue 22)
    .venv/bin/python bench/library_scale.py --plot out.png --plot-gap LABEL=FILE[,FILE] ...
    .venv/bin/python bench/library_scale.py --plot out.png --plot-ratios LABEL=FILE[,FILE] ...
    .venv/bin/python bench/library_scale.py --plot out.png --plot-write LABEL=FILE[,FILE] ...
    .venv/bin/python bench/library_scale.py --pooled LABEL=FILE[,FILE] ...  # runs pooled

``--compare OLD_SRC`` runs every size once on the checkout at ``OLD_SRC`` and once on this
one, alternately, ``--repeats`` times (each a child process), and prints both with ratios:
on a shared machine the load moves, so each before/after pair runs back to back.

The library of each size: one placement, N eligibility rules (a distinct 5-condition rule
each), N approved offers (each referencing its own rule, priorities 0-99, one tag), one
fallback, one ``anyTags`` collection of that tag and one live decision over it; one
profile every rule accepts. The rows are written with the store's own write
(``Session.insert_instance``) in batches: beyond 10,000 offers (Adobe's guardrail, which
the API enforces) as below.

Per size, with the database file kept in ``--dir`` for the next run:

* **start → first decision** (wall clock, and the worker's CPU time then, which a loaded
  machine disturbs less; the reference is the worker's CPU when ``/healthz`` first
  answers — interpreter and app start): a uvicorn worker (nextoffer's app, 1 worker) is started and
  ``POST …/decisions`` is sent every 20 ms from the moment the process is spawned; the
  figure is the time until the first answer that proposes a library offer. *Cold*: the
  compiled-rule cache directory (``NEXTOFFER_RULE_CACHE``) is emptied first; *warm*: it
  holds what the previous start wrote (that worker is left running until it is idle, so
  its background compiling is done). Reported with the process's peak RSS (``VmHWM``)
  and its RSS then. Before the starts, the checkout's modules are compiled to bytecode
  (``compileall``), as ``pip install`` leaves an installed package: a worker of an
  editable install run with ``PYTHONDONTWRITEBYTECODE`` (as this machine's environment
  sets it) would otherwise compile every nextoffer module at each start.
* **write → visible in every worker**: two such workers on the same database (two
  processes, as ``--workers 2`` forks); the bench raises one offer's priority above all
  others through the repository and polls both workers until each proposes it.
* **rebuild CPU per change**: in this process, the CPU time (``time.process_time``) of the
  snapshot rebuild that follows one offer update, against the CPU of a full build.
* **decision p99 during rebuilds**: wrk (1 connection, dry-run decisions) against one
  worker for ``--seconds`` while nothing changes, then while an offer changes every
  0.25 s; ratio of the two p99s.

``--refresh`` measures only the rebuild CPU per change, more carefully: in this process,
with its builder thread idle (deferred rules compiled), ``--changes`` times an offer is
updated through the repository and the refresh that follows is run on the builder thread;
the figure is that thread's CPU time (``time.thread_time``), so neither the write nor
anything else the process does is counted. Then, with the refreshed snapshot frozen out
of the collector's sight (``gc.freeze``, as workers do), the time of one full collection,
and of one with the heap thawed (what an automatic full collection would cost a decision
without the freeze). ``--fresh`` first stamps every instance as modified now (a library
just imported: code that reads recent writes by the clock reads them all). The changes
alternate with as many refreshed by an unpaced builder (``catalogs.BUILD_STEP`` out of
reach): the paced ones' wall time, pauses and longest step between two pause points
(``catalogs.Pace``) are reported beside the unpaced ones' CPU and wall time. The write
itself (``raise_offer``: what the ``--latency`` writing child does per change) is timed
apart: this process's CPU time for it, median; then ``--changes`` more writes, each after
a sleep of ``--period`` as the ``--latency`` child makes them (its caches gone cold), their
thread's CPU time, median.

``--latency`` measures only the last one, more carefully (the library and one worker as
above): ``--rounds`` rounds, each a quiet pair of windows of ``--seconds`` and a busy pair
while a child process (another node, as far as the worker knows) changes an offer every
``--period`` seconds. The first window of a pair is wrk against the worker (1
connection); the second, dry-run decisions one after another on a root in this process,
which refreshes its own snapshot on its builder thread the same way: its figures leave
out HTTP and the scheduling of a second process, which on a shared machine dominate a
p99 over HTTP. Per window p50, p99 and p99.9; the worker's CPU; after each round the time
from one more change to the worker proposing it. The summary is the median over rounds
of each figure and of each round's busy/quiet p99 ratio, then each kind's p99 over all its
windows' requests pooled (``httpbench.pooled_percentile``, from the latency each window
keeps at fine percentiles: eight windows' p99 rests on ~2,000 slow requests where one's
rests on ~250), with the quiet windows of the even rounds against the odd ones' as the
ratio two quiet samples of that size give (its noise). ``--control`` adds a third pair
of windows per round: the child spends, every period, the CPU a change costs it (measured
on five changes made before the window, each after a sleep of ``--period`` as in the busy
window: a change right after another costs a third of one whose caches went cold) without
writing anything — the same competition for the machine's cores with no refresh in the
worker, so busy against control separates what the worker's refresh costs a decision from
what another busy process costs it. The writing child's CPU in each HTTP window is
reported, so the control's can be checked against the changing one's. The windows of a
round take turns at going first (round 1 quiet, busy, control; round 2 busy, control,
quiet; …), so no kind always follows the same one.
``--pin`` puts the worker on core 0 and wrk and the writing child on core 1 (a
deployment's writer is another machine); ``--writer-idle`` runs the writing child (both
the changing and the control one) at the lowest CPU priority the kernel has
(``SCHED_IDLE``, nice 19): it runs only when neither the worker nor wrk wants a core, the
closest this one machine comes to a writer on another machine (its writes still go
through the same disk and page cache); ``--build-step`` and ``--switch-interval`` set
``catalogs.BUILD_STEP`` and ``BUILD_SWITCH_INTERVAL`` in the worker and this process (the
designs compared). ``--gap`` adds two in-process windows per pair in which each decision
follows a ``time.sleep(0)`` (the interpreter released between decisions, as an event
loop waiting for the next request releases it), this process's builder unpaced and then
paced: the decisions that overlapped one of its refreshes are counted apart from the
others of the same window.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpbench import SERVER, free_port, machine, pooled_percentile, tail_of, wrk

import nextoffer
from nextoffer import DecisionCall, PropositionRequest
from nextoffer.ids import IdFactory, epoch_micros, format_datetime, utcnow
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
    TAG,
    SchemaRef,
)
from nextoffer.repository.records import Audit, InstanceRecord
from nextoffer.root import NextOffer
from nextoffer.service import catalogs
from nextoffer.settings import Settings

OM = "https://ns.adobe.com/experience/offer-management/"
HTML = OM + "content-component-html"
DECIDE_TYPE = f'application/vnd.adobe.xdm+json; schema="{OM}decision-request;version=1.0"'
ORG, SANDBOX = "SCALE@AdobeOrg", "prod"
#: The build constants a ``--latency`` run may set in the worker and in this process (the
#: designs compared in docs/benchmarks.md): option name -> ``service/catalogs.py`` name.
BUILD_KNOBS = {"build_step": "BUILD_STEP", "switch_interval": "BUILD_SWITCH_INTERVAL"}
#: The worker's server: httpbench's, with those constants taken from its environment.
WORKER_SERVER = (
    SERVER
    + """
import nextoffer.service.catalogs as _catalogs
for _name in ("BUILD_STEP", "BUILD_SWITCH_INTERVAL"):
    if os.environ.get("LIBSCALE_" + _name):
        setattr(_catalogs, _name, float(os.environ["LIBSCALE_" + _name]))
"""
)


def _record(ids: IdFactory, container: str, kind: Any, body: dict[str, Any]) -> InstanceRecord:
    now = utcnow()
    stamp = format_datetime(now)
    at_id = ids.at_id(kind.name, now)
    return InstanceRecord(
        instance_id=ids.instance_id(now),
        container_id=container,
        schema_id=kind.schema_id,
        at_id=at_id,
        etag=1,
        audit=Audit(stamp, stamp, "bench", "bench", "bench", "bench"),
        body={**body, "@id": at_id},
        created_us=epoch_micros(now),
        modified_us=epoch_micros(now),
    )


def build(db_url: str, size: int) -> dict[str, Any]:
    """Write the library of ``size`` offers (see the module docstring); its handles."""
    no = NextOffer.open(Settings(db_url=db_url))
    creds = no.bootstrap(org=ORG, sandbox=SANDBOX)
    container = creds.container_id
    ids = IdFactory(worker=3)
    rng = random.Random(size)
    rows: list[tuple[InstanceRecord, list[str]]] = []
    placement = _record(
        ids,
        container,
        PLACEMENT,
        {
            "xdm:name": "Banner",
            "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
            "xdm:componentType": HTML,
        },
    )
    rows.append((placement, []))
    reps = [
        {
            "xdm:placement": placement.at_id,
            "xdm:components": [
                {"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>offer</p>"}
            ],
        }
    ]
    tag = _record(ids, container, TAG, {"xdm:name": "scale"})
    rows.append((tag, []))
    offers = []
    for n in range(size):
        rule = _record(
            ids,
            container,
            RULE,
            {
                "xdm:name": f"rule {n}",
                "xdm:condition": {
                    "xdm:type": "PQL",
                    "xdm:format": "pql/text",
                    "xdm:value": (
                        f'age >= {n % 40} and country in ["US", "CA", "C{n}"] '
                        f'and tier = "gold" and loyaltyPoints > {rng.randint(0, 6000)} '
                        "and optIn = true"
                    ),
                },
            },
        )
        offer = _record(
            ids,
            container,
            PERSONALIZED_OFFER,
            {
                "xdm:name": f"Offer {n}",
                "xdm:status": "approved",
                "xdm:representations": reps,
                "xdm:rank": {"xdm:priority": n % 100},
                "xdm:selectionConstraint": {"xdm:eligibilityRule": rule.at_id},
                "xdm:tags": [tag.at_id],
            },
        )
        rows += [(rule, []), (offer, [placement.at_id, rule.at_id, tag.at_id])]
        offers.append(offer)
    fallback = _record(
        ids,
        container,
        FALLBACK_OFFER,
        {"xdm:name": "Welcome", "xdm:status": "approved", "xdm:representations": reps},
    )
    collection = _record(
        ids,
        container,
        COLLECTION,
        {"xdm:name": "All", "xdm:filterType": "anyTags", "xdm:ids": [tag.at_id]},
    )
    decision = _record(
        ids,
        container,
        DECISION,
        {
            "xdm:name": "Home",
            "xdm:status": "live",
            "xdm:fallback": fallback.at_id,
            "xdm:criteria": [
                {
                    "xdm:placements": [placement.at_id],
                    "xdm:optionSelection": {"xdm:filter": collection.at_id},
                }
            ],
        },
    )
    rows += [
        (fallback, [placement.at_id]),
        (collection, [tag.at_id]),
        (decision, [placement.at_id, fallback.at_id, collection.at_id]),
    ]
    for start in range(0, len(rows), 2000):
        with no.store.session(write=True) as session:
            for record, refs in rows[start : start + 2000]:
                session.insert_instance(record, refs)
    with no.store.session(write=True) as session:
        session.runtime.insert_profile(
            ORG,
            SANDBOX,
            "scale-profile",
            {"age": 70, "country": "US", "tier": "gold", "loyaltyPoints": 9000, "optIn": True},
            now=utcnow().isoformat(),
        )
        session.runtime.add_identities(
            ORG, SANDBOX, "scale-profile", [("Email", "scale@example.com")]
        )
    no.close()
    return {
        "container": container,
        "headers": {
            "Authorization": f"Bearer {creds.access_token}",
            "x-api-key": creds.api_key,
            "x-gw-ims-org-id": creds.org,
            "x-sandbox-name": creds.sandbox,
        },
        "placement": placement.at_id,
        "decision": decision.at_id,
        "offers": [o.instance_id for o in offers],
        "offer_ids": [o.at_id for o in offers],
    }


def request_body(lib: dict[str, Any], *, dry_run: bool = True) -> bytes:
    return json.dumps(
        {
            "xdm:propositionRequests": [
                {
                    "xdm:placementId": lib["placement"],
                    "xdm:activityId": lib["decision"],
                    "xdm:itemCount": 1,
                }
            ],
            "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "scale@example.com"}]}}],
            "xdm:dryRun": dry_run,
        }
    ).encode()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    """One uvicorn worker of nextoffer's app, spawned now (not waited for); it inherits
    this process's environment (``--src`` puts a checkout first on ``PYTHONPATH``)."""

    def __init__(self, db_url: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        appdir = self._appdir = Path(tempfile.mkdtemp(prefix="nextoffer-libscale-"))
        (appdir / "benchserver.py").write_text(WORKER_SERVER)
        self.spawned = time.perf_counter()
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "benchserver:factory", "--factory"),
                *("--no-access-log", "--log-level", "warning", "--app-dir", str(appdir)),
                *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
            ],
            env={
                **os.environ,
                "NEXTOFFER_DB": db_url,
                "NEXTOFFER_METRICS": "0",
                "NEXTOFFER_ACCESS_LOG": "0",
                **env,
            },
        )
        self.client = httpx.Client(base_url=self.base, timeout=60)
        #: The worker's CPU seconds when ``/healthz`` first answered (the server is up).
        self.up_cpu: float | None = None

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the worker process has used so far."""
        return process_cpu_s(self.process.pid)

    def decide(self, lib: dict[str, Any]) -> str | None:
        """The @id of the first proposed item, or None when not answered (yet)."""
        try:
            response = self.client.post(
                f"/data/core/ode/{lib['container']}/decisions",
                content=request_body(lib),
                headers={**lib["headers"], "Content-Type": DECIDE_TYPE},
            )
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        items = response.json()["xdm:propositions"][0].get("xdm:options") or []
        return items[0]["xdm:id"] if items else None

    def first_decision(self, lib: dict[str, Any], timeout: float = 180) -> float:
        """Seconds from spawn to the first decision proposing a library offer (the
        worker's CPU when ``/healthz`` first answers is kept as ``up_cpu``)."""
        while time.perf_counter() - self.spawned < timeout and self.up_cpu is None:
            try:
                if self.client.get("/healthz", timeout=5).status_code == 200:
                    self.up_cpu = self.cpu_s()
            except httpx.TransportError:
                time.sleep(0.02)
        while time.perf_counter() - self.spawned < timeout:
            if self.decide(lib) is not None:
                return time.perf_counter() - self.spawned
            time.sleep(0.02)
        raise RuntimeError("no decision within the timeout")

    def wait_idle(self, timeout: float = 900) -> None:
        """Until the worker uses no CPU for 2 s (background compiling done)."""
        deadline = time.monotonic() + timeout
        last = self.cpu_s()
        while time.monotonic() < deadline:
            time.sleep(2)
            now = self.cpu_s()
            if now - last < 0.05:
                return
            last = now

    def rss_mb(self) -> tuple[float, float]:
        """(peak, current) resident set of the worker, MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return (
            int(fields["VmHWM"].split()[0]) / 1024,
            int(fields["VmRSS"].split()[0]) / 1024,
        )

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self._appdir, ignore_errors=True)


_RAISED = [0]


def raise_offer(no: NextOffer, lib: dict[str, Any], index: int) -> str:
    """Give offer ``index`` the highest priority (a real ``PUT`` through the repository):
    one above any given before, by this process, another one (``--churn``) or an earlier
    run on the same database (the clock in milliseconds, and always one more)."""
    _RAISED[0] = max(_RAISED[0] + 1, int(time.time() * 1000))
    priority = _RAISED[0]
    instance_id = lib["offers"][index]
    record = no.repository.get(lib["principal"], lib["container"], instance_id)
    body = {k: v for k, v in record.body.items() if not k.startswith("repo:")}
    body["xdm:rank"] = {"xdm:priority": priority}
    no.repository.replace(
        lib["principal"],
        lib["container"],
        instance_id,
        SchemaRef(PERSONALIZED_OFFER, None, ""),
        body,
        if_match=None,
    )
    return str(record.at_id)


def visibility(no: NextOffer, lib: dict[str, Any], workers: list[Worker], round_: int) -> float:
    index = (round_ * 7919) % len(lib["offers"])
    began = time.perf_counter()
    at_id = raise_offer(no, lib, index)
    pending = list(workers)
    while pending:
        pending = [w for w in pending if w.decide(lib) != at_id]
        if time.perf_counter() - began > 60:
            raise RuntimeError("change not visible within 60 s")
    return time.perf_counter() - began


def rebuild_cpu(no: NextOffer, lib: dict[str, Any], repeats: int) -> tuple[float, float]:
    """(full build CPU s, median CPU s of the rebuild after one offer update)."""
    catalogs = no.catalogs
    cpu = time.process_time()
    catalogs.get(lib["container"])
    full = time.process_time() - cpu
    changes = []
    for r in range(repeats):
        raise_offer(no, lib, (r * 104729 + 11) % len(lib["offers"]))
        cpu = time.process_time()
        catalogs.get(lib["container"])
        changes.append(time.process_time() - cpu)
    return full, statistics.median(changes)


def refresh(args: argparse.Namespace) -> None:
    """``--refresh``: the builder thread's CPU per refresh after one offer update, and a
    full collection frozen / thawed, per size (see the module docstring)."""
    import gc

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        db_url, lib = library(size, args.dir)
        env = {"NEXTOFFER_DB": db_url, "NEXTOFFER_RULE_CACHE": str(args.dir / f"rules{size}")}
        no = NextOffer.open(Settings.from_env({**env, "NEXTOFFER_SNAPSHOT_WAIT_SECONDS": "600"}))
        try:
            if args.fresh:
                with no.store.session(write=True) as session:
                    session.conn.exec_driver_sql(
                        "UPDATE instances SET modified_us = ?", (epoch_micros(utcnow()),)
                    )
            lib["principal"] = bench_principal(no, lib)
            cache, container = no.catalogs, lib["container"]
            cache.get(container)
            idle_builder(cache)
            cpu, paced, writes = [], [], []
            unpaced: list[tuple[float, float]] = []
            step = catalogs.BUILD_STEP
            for r in range(args.changes * 2):  # paced (as workers run) and not, in turn
                began_cpu = time.process_time()  # the write's CPU (the churn child's work)
                raise_offer(no, lib, (r * 104729 + 11) % len(lib["offers"]))
                writes.append(time.process_time() - began_cpu)
                version = no.path.library_version(container)
                catalogs.BUILD_STEP = step if r % 2 == 0 else 1e9
                began = time.perf_counter()
                used = cache._builder.submit(thread_cpu, cache, container, version).result()
                wall = time.perf_counter() - began
                if r % 2 == 0:
                    cpu.append(used)
                    pace = cache.last_pace
                    assert pace is not None
                    paced.append((wall, pace.pauses, pace.longest))
                else:
                    unpaced.append((used, wall))
            catalogs.BUILD_STEP = step
            paced_writes = []  # the write as the --latency child makes it: after a sleep
            for r in range(args.changes):
                time.sleep(args.period)
                began_cpu = time.thread_time()
                raise_offer(no, lib, (r * 7919 + 3) % len(lib["offers"]))
                paced_writes.append(time.thread_time() - began_cpu)
            idle_builder(cache)
            began = time.perf_counter()
            gc.collect()
            frozen = time.perf_counter() - began
            gc.unfreeze()
            began = time.perf_counter()
            gc.collect()
            thawed = time.perf_counter() - began
            gc.freeze()
            row = {
                "size": size,
                "load": os.getloadavg()[0],
                "refresh_cpu_ms": statistics.median(cpu) * 1000,
                "refresh_cpu_min_ms": min(cpu) * 1000,
                "refresh_cpu_max_ms": max(cpu) * 1000,
                "refresh_wall_ms": statistics.median(w for w, _, _ in paced) * 1000,
                "pauses": statistics.median(p for _, p, _ in paced),
                "longest_step_ms": statistics.median(longest for _, _, longest in paced) * 1000,
                "unpaced_cpu_ms": statistics.median(c for c, _ in unpaced) * 1000,
                "unpaced_wall_ms": statistics.median(w for _, w in unpaced) * 1000,
                "write_cpu_ms": statistics.median(writes) * 1000,
                "write_paced_cpu_ms": statistics.median(paced_writes) * 1000,
                "collect_frozen_ms": frozen * 1000,
                "collect_thawed_ms": thawed * 1000,
                "objects": len(gc.get_objects()) + gc.get_freeze_count(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        finally:
            no.close()
    print()
    print(f"{machine()}; {args.changes} changes per size{' (library fresh)' if args.fresh else ''}")
    print()
    print(
        "| offers | refresh thread CPU, median (min-max) ms | full collection, frozen / thawed "
        "ms | load | wall ms | pauses | longest step ms | unpaced: CPU / wall ms "
        "| the write's CPU ms | the same, one every --period s |"
    )
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['size']:,} | {r['refresh_cpu_ms']:.2f} ({r['refresh_cpu_min_ms']:.2f}-"
            f"{r['refresh_cpu_max_ms']:.2f}) | {r['collect_frozen_ms']:.1f} / "
            f"{r['collect_thawed_ms']:.1f} | {r['load']:.1f} | {r['refresh_wall_ms']:.2f} "
            f"| {r['pauses']:.0f} | {r['longest_step_ms']:.3f} "
            f"| {r['unpaced_cpu_ms']:.2f} / {r['unpaced_wall_ms']:.2f} "
            f"| {r['write_cpu_ms']:.2f} | {r['write_paced_cpu_ms']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def plot_refresh(runs: list[str], path: Path) -> None:
    """Refresh CPU against library size, one line per ``LABEL=FILE`` (``--refresh
    --json`` output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        label, _, file = run.partition("=")
        rows = json.loads(Path(file).read_text())
        sizes = [r["size"] for r in rows]
        axis.plot(sizes, [r["refresh_cpu_ms"] for r in rows], marker="o", label=label)
    axis.set_xlabel("offers in the library (each with its own rule)")
    axis.set_ylabel("builder thread CPU per refresh, ms (median)")
    axis.set_yscale("log")
    axis.legend(fontsize=8)
    axis.set_title("bench/library_scale.py --refresh: one offer updated")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_write(runs: list[str], path: Path) -> None:
    """The write's CPU (back to back, and one every ``--period`` s) and the refresh's, by
    ``LABEL=FILE[,FILE…]`` (``--refresh --json`` files of one size): a bar at the median
    of the files, a dot per file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = {
        "the write, back to back": "write_cpu_ms",
        "the write, one every 0.25 s": "write_paced_cpu_ms",
        "the worker's refresh (paced)": "refresh_cpu_ms",
    }
    fig, axis = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(runs)
    for n, run in enumerate(runs):
        label, files = run.split("=", 1)
        rows = [json.loads(Path(f).read_text())[0] for f in files.split(",")]
        xs = [m + n * width for m in range(len(measures))]
        medians = [statistics.median(r[key] for r in rows) for key in measures.values()]
        axis.bar(xs, medians, width, label=label)
        for x, key in zip(xs, measures.values(), strict=True):
            axis.plot([x] * len(rows), [r[key] for r in rows], "k.", markersize=4)
    axis.set_xticks([m + 0.4 - width / 2 for m in range(len(measures))], list(measures))
    axis.set_ylabel("CPU ms per change at 10,000 offers (median)")
    axis.legend(fontsize=8)
    axis.set_title("bench/library_scale.py --refresh --sizes 10000: one offer's priority")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def labelled_rounds(run: str) -> tuple[str, list[dict[str, Any]]]:
    """``LABEL=FILE[,FILE…]`` (``--latency --json`` files) → the label and every round."""
    label, files = run.split("=", 1)
    return label, [r for name in files.split(",") for r in json.loads(Path(name).read_text())[0]]


def plot_gap(runs: list[str], path: Path) -> None:
    """The busy windows of ``--latency --gap`` runs: p90 and p99 of the in-process
    decisions that met a refresh, builder unpaced against paced, and the p90 of the
    others of the same windows; one group per ``LABEL=FILE[,FILE…]`` (medians of the
    rounds that count them apart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = {
        "unpaced: during a refresh, p90": ("unpaced", "during_p90_ms"),
        "paced: during a refresh, p90": ("paced", "during_p90_ms"),
        "unpaced: during a refresh, p99": ("unpaced", "during_p99_ms"),
        "paced: during a refresh, p99": ("paced", "during_p99_ms"),
        "the others, p90 (paced windows)": ("paced", "outside_p90_ms"),
    }
    fig, axis = plt.subplots(figsize=(10, 5))
    labels = []
    for n, run in enumerate(runs):
        label, rounds = labelled_rounds(run)
        labels.append(label)
        rounds = [r for r in rounds if "busy_paced_during_n" in r]
        for b, (variant, key) in enumerate(bars.values()):
            value = statistics.median(r[f"busy_{variant}_{key}"] for r in rounds)
            axis.bar(n + (b - 2) * 0.16, value, 0.16, color=f"C{b}")
    for b, name in enumerate(bars):
        axis.bar(0, 0, 0, color=f"C{b}", label=name)
    axis.set_xticks(range(len(labels)), labels, fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("ms, in process (median of rounds)")
    axis.set_title("decisions at 10,000 offers while an offer changes every 0.25 s")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    fig.suptitle("bench/library_scale.py --latency --gap")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_ratios(runs: list[str], path: Path) -> None:
    """The p99 ratios of ``--latency --control`` runs, busy ÷ quiet and busy ÷ control,
    over HTTP and in process: one group per ``LABEL=FILE[,FILE…]``, a bar for the median
    of the rounds, a dot per round and, where the windows kept their tails, a diamond for
    the ratio of the pooled p99s (:func:`pooled_p99`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = {
        "HTTP: busy ÷ quiet": ("busy_p99_ms", "quiet_p99_ms"),
        "HTTP: busy ÷ control": ("busy_p99_ms", "control_p99_ms"),
        "in process: busy ÷ quiet": ("busy_local_p99_ms", "quiet_local_p99_ms"),
        "in process: busy ÷ control": ("busy_local_p99_ms", "control_local_p99_ms"),
    }
    fig, axis = plt.subplots(figsize=(11, 5))
    labels = []
    for n, run in enumerate(runs):
        label, rounds = labelled_rounds(run)
        labels.append(label)
        pooled = (
            {prefix: pooled_p99(rounds, prefix) for prefix in ("", "local_")}
            if "quiet_tail_ms" in rounds[0]
            else {}
        )
        for b, (top, bottom) in enumerate(ratios.values()):
            values = [r[top] / r[bottom] for r in rounds]
            x = n + (b - 1.5) * 0.2
            axis.bar(x, statistics.median(values), 0.2, color=f"C{b}")
            axis.plot([x] * len(values), values, ".", color="black", markersize=3)
            if pooled:
                p99s = pooled["local_" if "local" in top else ""]
                ratio = p99s[top.split("_")[0]] / p99s[bottom.split("_")[0]]
                axis.plot(x, ratio, "D", color="red", markersize=5)
    for b, name in enumerate(ratios):
        axis.bar(0, 0, 0, color=f"C{b}", label=name)
    axis.plot([], [], "D", color="red", markersize=5, label="pooled p99s' ratio")
    axis.axhline(1.2, color="grey", linestyle="--", linewidth=1, label="the goal: 1.2×")
    axis.set_xticks(range(len(labels)), labels, fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("p99 ratio (bar: median of rounds; dots: rounds; ◆ pooled)")
    axis.set_title("decisions at 10,000 offers while an offer changes every 0.25 s")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5)
    fig.suptitle("bench/library_scale.py --latency --control [--writer-idle]")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def thread_cpu(cache: Any, container: str, version: int) -> float:
    """The CPU time of one refresh towards ``version``, on the thread that runs it."""
    began = time.thread_time()
    cache._rebuild(container, version)
    return time.thread_time() - began


def idle_builder(cache: Any, timeout: float = 600) -> None:
    """Wait until the cache's builder thread has had nothing queued for a second (a first
    build's deferred rules compiled, the complete build done)."""
    idle, deadline = 0, time.monotonic() + timeout
    while idle < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
        idle = idle + 1 if cache._builder._work_queue.qsize() == 0 else 0
    cache._builder.submit(lambda: None).result()


def p99_during_rebuilds(
    no: NextOffer, lib: dict[str, Any], worker: Worker, seconds: int
) -> tuple[float, float]:
    def drive() -> float:
        return float(http_window(lib, worker, seconds).p99_ms)

    quiet = drive()
    stop = threading.Event()

    def churn() -> None:
        r = 0
        while not stop.wait(0.25):
            raise_offer(no, lib, (r * 31 + 5) % len(lib["offers"]))
            r += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        busy = drive()
    finally:
        stop.set()
        thread.join()
    return quiet, busy


def library(size: int, folder: Path) -> tuple[str, dict[str, Any]]:
    """(database URL, handles) of the ``size``-offer library in ``folder``, written the
    first time."""
    db = folder / f"tags{size}.db"
    meta = folder / f"tags{size}.json"
    db_url = f"sqlite:///{db}"
    if not (db.exists() and meta.exists()):
        for stale in folder.glob(f"tags{size}.db*"):
            stale.unlink()
        print(f"  building the {size:,}-offer library ...", flush=True)
        began = time.perf_counter()
        lib = build(db_url, size)
        print(f"  built in {time.perf_counter() - began:.1f} s", flush=True)
        meta.write_text(json.dumps(lib))
    return db_url, json.loads(meta.read_text())


def measure(size: int, folder: Path, repeats: int, seconds: int) -> dict[str, Any]:
    db_url, lib = library(size, folder)
    # The workers' modules as an installed package has them (see the module docstring).
    compileall.compile_dir(Path(nextoffer.__file__).parent, quiet=1)
    cache = folder / f"rules{size}"
    env = {"NEXTOFFER_RULE_CACHE": str(cache)}
    row: dict[str, Any] = {"size": size, "load_before": os.getloadavg()[0]}
    cold, warm, peaks, steady = [], [], [], []
    cpu: dict[str, list[float]] = {"cold": [], "warm": [], "up": []}
    for _ in range(repeats):
        shutil.rmtree(cache, ignore_errors=True)
        for kind in ("cold", "warm"):
            worker = Worker(db_url, env)
            try:
                (cold if kind == "cold" else warm).append(worker.first_decision(lib))
                cpu[kind].append(worker.cpu_s())
                cpu["up"].append(worker.up_cpu or 0.0)
                if kind == "cold":
                    worker.wait_idle()  # it finishes compiling (and saving) the library
                peak, now = worker.rss_mb()
                peaks.append(peak)
                steady.append(now)
            finally:
                worker.stop()
    row["start_cold_s"] = statistics.median(cold)
    row["start_warm_s"] = statistics.median(warm)
    row["start_cold_cpu_s"] = statistics.median(cpu["cold"])
    row["start_warm_cpu_s"] = statistics.median(cpu["warm"])
    row["up_cpu_s"] = statistics.median(cpu["up"])
    row["rss_peak_mb"] = max(peaks)
    row["rss_after_start_mb"] = statistics.median(steady)
    # The bench's own writes and in-process rebuilds; the workers' compiled rules (warm),
    # and no bound on the first build's wait (a checkout without these settings ignores them).
    no = NextOffer.open(
        Settings.from_env(
            {
                "NEXTOFFER_DB": db_url,
                "NEXTOFFER_RULE_CACHE": str(cache),
                "NEXTOFFER_SNAPSHOT_WAIT_SECONDS": "600",
            }
        )
    )
    try:
        lib["principal"] = bench_principal(no, lib)
        workers = [Worker(db_url, env), Worker(db_url, env)]
        try:
            for worker in workers:
                worker.first_decision(lib)
                worker.wait_idle()
            visible = [visibility(no, lib, workers, r + size) for r in range(repeats * 3)]
            row["visible_s"] = statistics.median(visible)
            row["visible_max_s"] = max(visible)
            quiet, busy = p99_during_rebuilds(no, lib, workers[0], seconds)
            row["p99_quiet_ms"], row["p99_rebuilding_ms"] = quiet, busy
            peak, now = workers[0].rss_mb()
            row["rss_peak_after_changes_mb"] = peak
            row["rss_steady_mb"] = now
        finally:
            for worker in workers:
                worker.stop()
        row["full_build_cpu_s"], row["change_cpu_s"] = rebuild_cpu(no, lib, repeats * 3)
    finally:
        no.close()
    row["load_after"] = os.getloadavg()[0]
    return row


def latency(args: argparse.Namespace) -> None:
    """``--latency``: decisions while the library changes against quiet windows of the
    same run, over HTTP and in process (see the module docstring)."""
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"{size:,} offers", flush=True)
        db_url, lib = library(size, args.dir)
        env = {"NEXTOFFER_RULE_CACHE": str(args.dir / f"rules{size}")}
        paced_step = catalogs.BUILD_STEP  # the default, for --gap's paced variant
        for option, name in BUILD_KNOBS.items():
            if getattr(args, option) is not None:
                env[f"LIBSCALE_{name}"] = str(getattr(args, option))
                setattr(catalogs, name, getattr(args, option))  # this process's root too
        settings = {"NEXTOFFER_DB": db_url, "NEXTOFFER_SNAPSHOT_WAIT_SECONDS": "600", **env}
        no = NextOffer.open(Settings.from_env(settings))  # its first build waited for
        worker = Worker(db_url, env)
        if args.pin:
            os.sched_setaffinity(worker.process.pid, {0})
        try:
            lib["principal"] = bench_principal(no, lib)
            worker.first_decision(lib)
            worker.wait_idle()
            in_process(no, lib, 1.0)  # its snapshot built, and a first round of decisions
            rounds = []
            for round_ in range(args.rounds):
                row: dict[str, Any] = {"size": size, "load": os.getloadavg()[0]}
                kinds = ["quiet", "busy", "control"] if args.control else ["quiet", "busy"]
                shift = round_ % len(kinds)  # each kind first, second, … in turn
                for kind in kinds[shift:] + kinds[:shift]:
                    on, spin = kind != "quiet", kind == "control"
                    with churning(args, size, on=on, spin=spin) as writer:
                        version = no.path.library_version(lib["container"])
                        cpu = worker.cpu_s()
                        writer_cpu = process_cpu_s(writer) if writer else 0.0
                        with pinned({1} if args.pin else None):  # wrk on the other core
                            result = http_window(lib, worker, args.seconds)
                        row[f"{kind}_cpu_s"] = worker.cpu_s() - cpu
                        # The writing child's CPU in the HTTP window (the control's spin
                        # should match the changing one's).
                        row[f"{kind}_writer_cpu_s"] = (
                            process_cpu_s(writer) - writer_cpu if writer else 0.0
                        )
                        local = in_process(no, lib, args.seconds)
                        if args.gap:  # this process's builder unpaced, then paced
                            step_before = catalogs.BUILD_STEP
                            for variant, step in (("unpaced", 1e9), ("paced", paced_step)):
                                catalogs.BUILD_STEP = step
                                gapped = in_process(no, lib, args.seconds, gap=True)
                                for name, figure in gapped.items():
                                    row[f"{kind}_{variant}_{name}"] = figure
                            catalogs.BUILD_STEP = step_before
                        changes = no.path.library_version(lib["container"]) - version
                    row[f"{kind}_p50_ms"] = result.p50_ms
                    row[f"{kind}_p99_ms"] = result.p99_ms
                    row[f"{kind}_p999_ms"] = result.p999_ms
                    row[f"{kind}_requests"] = result.requests
                    row[f"{kind}_tail_ms"] = list(result.tail_ms)
                    row[f"{kind}_changes"] = changes
                    for name, figure in local.items():
                        row[f"{kind}_local_{name}"] = figure
                row["visible_s"] = visibility(no, lib, [worker], round_ + size)
                print(json.dumps({k: v for k, v in row.items() if "tail" not in k}), flush=True)
                rounds.append(row)
            rows.append(rounds)
        finally:
            worker.stop()
            no.close()
    print()
    knobs = [f"{o}={getattr(args, o)}" for o in BUILD_KNOBS if getattr(args, o) is not None]
    print(
        f"{machine()}; median of {args.rounds} interleaved rounds of two {args.seconds} s "
        f"windows (HTTP, then in process), an offer changed every {args.period} s"
        + ("; worker on core 0, wrk and the writer on core 1" if args.pin else "")
        + ("; the writing child at SCHED_IDLE, nice 19" if args.writer_idle else "")
        + (f"; {', '.join(knobs)}" if knobs else "")
    )
    print()
    print(
        "| offers | where | p50 quiet / busy ms | p99 quiet / busy ms | **p99 ratio** "
        "| p99.9 quiet / busy ms | decisions per window | changes per window | load |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for rounds in rows:

        def med(key: str, rounds: list[dict[str, Any]] = rounds) -> float:
            return statistics.median(r[key] for r in rounds)

        loads = [r["load"] for r in rounds]
        pooled: list[tuple[str, dict[str, float]]] = []
        windows = 4 if "busy_paced_p99_ms" in rounds[0] else 2  # per kind, changes counted over all
        for where, prefix in WHERE:
            if "control_p99_ms" in rounds[0]:
                control = statistics.median(
                    r[f"busy_{prefix}p99_ms"] / r[f"control_{prefix}p99_ms"] for r in rounds
                )
                print(
                    f"| {rounds[0]['size']:,} | {where}, control (CPU, no change) "
                    f"| {med(f'control_{prefix}p50_ms'):.2f} "
                    f"| {med(f'control_{prefix}p99_ms'):.2f} "
                    f"| busy ÷ control {control:.2f}× | {med(f'control_{prefix}p999_ms'):.2f} "
                    f"| | {med('control_changes'):.0f} | |"
                )
            ratio = statistics.median(
                r[f"busy_{prefix}p99_ms"] / r[f"quiet_{prefix}p99_ms"] for r in rounds
            )
            pooled.append((where, pooled_p99(rounds, prefix)))
            count = "requests" if not prefix else "local_decisions"
            print(
                f"| {rounds[0]['size']:,} | {where} "
                f"| {med(f'quiet_{prefix}p50_ms'):.2f} / {med(f'busy_{prefix}p50_ms'):.2f} "
                f"| {med(f'quiet_{prefix}p99_ms'):.2f} / {med(f'busy_{prefix}p99_ms'):.2f} "
                f"| {ratio:.2f}× "
                f"| {med(f'quiet_{prefix}p999_ms'):.2f} / {med(f'busy_{prefix}p999_ms'):.2f} "
                f"| {med(f'quiet_{count}'):,.0f} / {med(f'busy_{count}'):,.0f} "
                f"| {med('busy_changes') / windows:.0f} | {min(loads):.1f}-{max(loads):.1f} |"
            )
        if "busy_paced_p99_ms" in rounds[0]:
            for variant in ("unpaced", "paced"):
                gap_ratio = statistics.median(
                    r[f"busy_{variant}_p99_ms"] / r[f"quiet_{variant}_p99_ms"] for r in rounds
                )
                print(
                    f"| {rounds[0]['size']:,} | in process, a gap between decisions, "
                    f"builder {variant} "
                    f"| {med(f'quiet_{variant}_p50_ms'):.3f} / {med(f'busy_{variant}_p50_ms'):.3f} "
                    f"| {med(f'quiet_{variant}_p99_ms'):.3f} / {med(f'busy_{variant}_p99_ms'):.3f} "
                    f"| {gap_ratio:.2f}× "
                    f"| {med(f'quiet_{variant}_p999_ms'):.2f} / "
                    f"{med(f'busy_{variant}_p999_ms'):.2f} "
                    f"| {med(f'quiet_{variant}_decisions'):,.0f} / "
                    f"{med(f'busy_{variant}_decisions'):,.0f} "
                    f"| {med('busy_changes') / windows:.0f} | |"
                )
        print(
            f"in process, the slowest decision of a window, quiet / busy: "
            f"{med('quiet_local_max_ms'):.1f} / {med('busy_local_max_ms'):.1f} ms; "
            f"decisions over 10 ms per window: {med('quiet_local_over_10ms'):.0f} / "
            f"{med('busy_local_over_10ms'):.0f}"
        )
        print(
            f"worker CPU per HTTP window, quiet / busy: {med('quiet_cpu_s'):.2f} / "
            f"{med('busy_cpu_s'):.2f} s; a change visible to the worker after "
            f"{med('visible_s'):.2f} s (median)"
        )
        print_pooled(rounds[0]["size"], pooled)
        spent = [f"busy {med('busy_writer_cpu_s'):.3f}"]
        spent += [f"control {med('control_writer_cpu_s'):.3f}"] if args.control else []
        print(f"the writing child's CPU per HTTP window: {' / '.join(spent)} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot_latency({"this run": rows[0]}, args.plot)


#: The two places a --latency window measures decisions, and their keys' prefix.
WHERE = (("HTTP (wrk, 1 connection)", ""), ("in process", "local_"))


def pooled_p99(rounds: list[dict[str, Any]], prefix: str) -> dict[str, float]:
    """Each kind's p99 over the requests of all its windows taken together
    (``httpbench.pooled_percentile``), and the quiet windows' of the even rounds against
    the odd ones': what two quiet samples of the same size differ by, the ratio's noise."""
    count = "requests" if not prefix else "local_decisions"

    def p99(kind: str, rows: list[dict[str, Any]]) -> float:
        found = [(r[f"{kind}_{count}"], r.get(f"{kind}_{prefix}tail_ms", [])) for r in rows]
        return pooled_percentile(found, 99)

    kinds = [k for k in ("quiet", "busy", "control") if f"{k}_{prefix}p99_ms" in rounds[0]]
    figures = {kind: p99(kind, rounds) for kind in kinds}
    figures["quiet_even"] = p99("quiet", rounds[0::2])
    figures["quiet_odd"] = p99("quiet", rounds[1::2])
    return figures


def print_pooled(size: int, pooled: list[tuple[str, dict[str, float]]]) -> None:
    print()
    print(
        "| offers | where, all rounds' requests pooled | p99 quiet / busy / control ms "
        "| **busy ÷ quiet** | busy ÷ control | quiet ÷ quiet (even ÷ odd rounds) |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for where, f in pooled:
        control = f.get("control", float("nan"))
        print(
            f"| {size:,} | {where} | {f['quiet']:.3f} / {f['busy']:.3f} / {control:.3f} "
            f"| **{f['busy'] / f['quiet']:.2f}×** | {f['busy'] / control:.2f}× "
            f"| {f['quiet_even'] / f['quiet_odd']:.2f}× |"
        )
    print()


def plot_latency(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """p50/p99/p99.9, quiet against busy, over HTTP and in process, of each of ``runs``
    (label -> the rounds of one size, as ``--json`` writes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for axis, (where, prefix) in zip(axes, (("HTTP", ""), ("in process", "local_")), strict=True):
        labels, quiet, busy = [], [], []
        for run, rounds in runs.items():
            for q in ("p50", "p99", "p999"):
                labels.append(f"{run}: {q.replace('p999', 'p99.9')}")
                quiet.append(statistics.median(r[f"quiet_{prefix}{q}_ms"] for r in rounds))
                busy.append(statistics.median(r[f"busy_{prefix}{q}_ms"] for r in rounds))
        xs = range(len(labels))
        axis.bar([x - 0.2 for x in xs], quiet, 0.4, label="quiet")
        axis.bar([x + 0.2 for x in xs], busy, 0.4, label="an offer changing every 0.25 s")
        axis.set_xticks(list(xs), labels, fontsize=7, rotation=60, ha="right")
        axis.set_yscale("log")
        axis.set_ylabel("ms (median over rounds)")
        axis.set_title(f"decisions at 10,000 offers, {where}")
        axis.legend(fontsize=7)
    fig.suptitle("bench/library_scale.py --latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@contextlib.contextmanager
def churning(
    args: argparse.Namespace, size: int, *, on: bool, spin: bool = False
) -> Iterator[int | None]:
    """With ``on``: a child process (another node, as far as the worker and this process's
    root know) changes an offer every ``args.period`` seconds until the block ends. The
    block starts once the child has started (imports, its root opened) and says so on its
    stdout: the window measures the changes, not a process starting. Yields the child's
    pid (``None`` without one), so its CPU in a window can be read."""
    if not on:
        yield None
        return
    command = [sys.executable, __file__, "--churn", str(size), "--dir", str(args.dir)]
    command += ["--period", str(args.period), *(["--spin"] if spin else [])]
    command += ["--writer-idle"] if args.writer_idle else []
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    if args.pin:
        os.sched_setaffinity(child.pid, {1})
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"ready":
            raise RuntimeError("the --churn child did not start")
        yield child.pid
    finally:
        child.terminate()
        child.wait(timeout=30)


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """This process (and what it starts meanwhile) on ``cpus`` for the block; nothing
    when ``None``."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def churn(args: argparse.Namespace) -> None:
    """``--churn SIZE``: change an offer of that library every ``--period`` s until killed
    (``--writer-idle``: at the lowest CPU priority, from the start)."""
    if args.writer_idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        os.nice(19)
    db_url, lib = library(args.churn, args.dir)
    env = {"NEXTOFFER_DB": db_url, "NEXTOFFER_RULE_CACHE": str(args.dir / f"rules{args.churn}")}
    no = NextOffer.open(Settings.from_env(env))
    lib["principal"] = bench_principal(no, lib)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    made = 0
    if args.spin:  # the control: a change's CPU, spent without a change
        costs = []
        for made in range(5):  # at the window's pace: a change after a sleep costs more
            time.sleep(args.period)  # than one right after another (caches gone cold)
            started = time.process_time()
            raise_offer(no, lib, (made * 31 + 5) % len(lib["offers"]))
            costs.append(time.process_time() - started)
        cost = statistics.median(costs)
        time.sleep(1.0)  # the worker's refreshes of those, before the window
        print("ready", flush=True)
        while True:
            time.sleep(args.period)
            until = time.process_time() + cost
            while time.process_time() < until:
                pass
    print("ready", flush=True)
    while True:
        time.sleep(args.period)
        raise_offer(no, lib, (made * 31 + 5) % len(lib["offers"]))
        made += 1


def http_window(lib: dict[str, Any], worker: Worker, seconds: int) -> Any:
    """wrk for ``seconds``: dry-run decisions on one connection."""
    result = wrk(
        "decisions",
        f"{worker.base}/data/core/ode/{lib['container']}/decisions",
        method="POST",
        headers={**lib["headers"], "Content-Type": DECIDE_TYPE},
        body=request_body(lib).decode(),
        seconds=seconds,
        connections=1,
    )
    if result.errors:
        raise RuntimeError(f"{result.errors} failed decisions under wrk")
    return result


def in_process(
    no: NextOffer, lib: dict[str, Any], seconds: float, *, gap: bool = False
) -> dict[str, Any]:
    """Dry-run decisions one after another on this process's root for ``seconds`` (its
    snapshot refreshes on its builder thread, as a worker's does), without HTTP or the
    scheduler of a second process in the figure: p50, p99, p99.9 and the slowest (ms), how
    many, and how many took over 10 ms (a decision that waited for a refresh does).

    ``gap``: each decision follows a ``time.sleep(0)`` and is timed from before it — the
    interpreter released between decisions, as a worker's event loop releases it while
    it waits for the next request, so the builder runs in those gaps and a decision may
    find it holding the interpreter (what a decision over HTTP meets), without wrk,
    sockets or another process in the figure. The decisions during which this process's
    builder was running a refresh are also counted apart (``during_*``), beside the
    others of the same window (``outside_*``): the same scheduler and load for both."""
    builds = no.catalogs._builds  # the bench looks at whether a build is running
    container = lib["container"]

    def building() -> bool:
        running = builds.get(container)
        return running is not None and not running.done()

    call = DecisionCall(
        propositions=(PropositionRequest(lib["decision"], lib["placement"]),),
        identities=[("Email", "scale@example.com")],
        dry_run=True,
    )
    times, during, outside = [], [], []
    end = time.perf_counter() + seconds
    while (began := time.perf_counter()) < end:
        refreshing = gap and building()
        if gap:
            time.sleep(0)
        no.decide(lib["principal"], lib["container"], call)
        took = time.perf_counter() - began
        times.append(took)
        if gap:
            (during if refreshing or building() else outside).append(took)

    def at(found: list[float], q: float) -> float:
        found.sort()
        return found[min(len(found) - 1, int(q * len(found)))] * 1000 if found else 0.0

    figures: dict[str, Any] = {
        "p50_ms": at(times, 0.5),
        "p99_ms": at(times, 0.99),
        "p999_ms": at(times, 0.999),
        "max_ms": times[-1] * 1000,
        "decisions": len(times),
        "over_10ms": sum(1 for t in times if t > 0.010),
        "tail_ms": list(tail_of([t * 1000 for t in times])),  # sorted by ``at`` above
    }
    if gap:
        for name, found in (("during", during), ("outside", outside)):
            figures[f"{name}_n"] = len(found)
            figures[f"{name}_p50_ms"] = at(found, 0.5)
            figures[f"{name}_p90_ms"] = at(found, 0.9)
            figures[f"{name}_p99_ms"] = at(found, 0.99)
    return figures


def bench_principal(no: NextOffer, lib: dict[str, Any]) -> Any:
    """The principal of the bench's tenant (what the token in ``headers`` authenticates)."""
    return no.auth.authenticate({k.lower(): v for k, v in lib["headers"].items()})


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["size"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, [r["start_cold_s"] for r in rows], "o-", label="start → decision, cold")
    left.plot(sizes, [r["start_warm_s"] for r in rows], "o-", label="start → decision, warm")
    left.plot(sizes, [r["visible_s"] for r in rows], "o-", label="write → visible, 2 workers")
    left.axhline(2, color="grey", linestyle=":", linewidth=1)
    left.axhline(1, color="grey", linestyle=":", linewidth=1)
    left.set_xlabel("offers (each with its own rule)")
    left.set_ylabel("seconds")
    left.legend(fontsize=8)
    right.plot(sizes, [r["rss_peak_mb"] for r in rows], "o-", label="peak RSS")
    right.plot(sizes, [r["rss_steady_mb"] for r in rows], "o-", label="steady RSS")
    right.set_xlabel("offers")
    right.set_ylabel("MB per worker")
    right.legend(fontsize=8)
    fig.suptitle("bench/library_scale.py")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def use_source(src: Path) -> None:
    """Run this bench (and its workers) on the checkout at ``src`` (its ``src`` folder):
    re-executed with it first on ``PYTHONPATH``."""
    if os.environ.get("LIBSCALE_SRC") == str(src):
        return
    path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
    os.environ.update(PYTHONPATH=path, LIBSCALE_SRC=str(src))
    os.execv(sys.executable, [sys.executable, *sys.argv])


def compare(args: argparse.Namespace) -> None:
    """Each size, each repeat: a child run on the old code, then one on this one."""
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        for size in (int(s) for s in args.sizes.split(",")):
            for which in ("before", "after"):
                out = args.dir / f"compare-{which}-{size}-{repeat}.json"
                command = [sys.executable, __file__, "--sizes", str(size), "--repeats", "1"]
                command += ["--seconds", str(args.seconds), "--dir", str(args.dir)]
                command += ["--json", str(out)]
                if which == "before":
                    command += ["--src", str(args.compare)]
                print(f"repeat {repeat + 1}: {size:,} offers, {which}", flush=True)
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                rows.setdefault((which, size), []).extend(json.loads(out.read_text()))
    fields = [
        ("start_cold_s", "start → first decision, cold cache (s)"),
        ("start_warm_s", "start → first decision, warm cache (s)"),
        ("start_cold_cpu_s", "worker CPU until its first decision, cold cache (s)"),
        ("start_warm_cpu_s", "worker CPU until its first decision, warm cache (s)"),
        ("up_cpu_s", "reference: worker CPU until /healthz answers (s)"),
        ("visible_s", "write → visible in both workers (s)"),
        ("full_build_cpu_s", "full build CPU (s)"),
        ("change_cpu_s", "rebuild CPU per change (s)"),
        ("p99_quiet_ms", "decision p99, quiet (ms)"),
        ("p99_rebuilding_ms", "decision p99, a change every 0.25 s (ms)"),
        ("rss_peak_mb", "RSS peak (MB)"),
        ("rss_steady_mb", "RSS after the changes (MB)"),
    ]
    sizes = sorted({size for _, size in rows})
    print()
    print(f"{machine()}; median of {args.repeats} interleaved child runs per cell")
    loads = [r["load_before"] for values in rows.values() for r in values]
    print(f"1-minute load average at the start of each run: {min(loads):.1f}-{max(loads):.1f}")
    print()
    print("| measure | " + " | ".join(f"{n:,}: before | after | ratio" for n in sizes) + " |")
    print("|---|" + "---:|---:|---:|" * len(sizes))
    summary: dict[str, Any] = {}
    for key, label in fields:
        cells = []
        for size in sizes:
            before = statistics.median(r[key] for r in rows[("before", size)])
            after = statistics.median(r[key] for r in rows[("after", size)])
            summary.setdefault(key, {})[size] = (before, after)
            cells.append(f"{before:.3g} | {after:.3g} | {after / before:.2f}×")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({f"{w}-{n}": v for (w, n), v in rows.items()}, indent=1))
    if args.plot:
        plot_compare(summary, sizes, args.plot)


def plot_compare(summary: dict[str, Any], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [
        (axes[0], ["start_cold_s", "start_warm_s", "visible_s"], "seconds"),
        (axes[1], ["full_build_cpu_s", "change_cpu_s"], "CPU seconds"),
        (axes[2], ["rss_peak_mb", "rss_steady_mb"], "MB per worker"),
    ]
    for axis, keys, unit in panels:
        for key in keys:
            for index, which in enumerate(("before", "after")):
                axis.plot(
                    sizes,
                    [summary[key][n][index] for n in sizes],
                    "o-" if which == "after" else "o--",
                    label=f"{key} ({which})",
                )
        axis.set_xlabel("offers (each with its own rule)")
        axis.set_ylabel(unit)
        axis.set_yscale("log" if unit != "MB per worker" else "linear")
        axis.legend(fontsize=7)
    axes[0].axhline(2, color="grey", linestyle=":", linewidth=1)
    axes[0].axhline(1, color="grey", linestyle=":", linewidth=1)
    fig.suptitle("bench/library_scale.py --compare: before (dashed) and after (solid)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,10000,20000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "libscale")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--src", type=Path, help="run on the checkout whose src/ this is")
    parser.add_argument(
        "--compare", type=Path, help="a baseline's src/: interleaved runs before and after"
    )
    parser.add_argument(
        "--latency", action="store_true", help="only decision latency while offers change"
    )
    parser.add_argument("--rounds", type=int, default=5, help="--latency: window pairs")
    parser.add_argument(
        "--period", type=float, default=0.25, help="--latency: seconds between changes"
    )
    parser.add_argument(
        "--refresh", action="store_true", help="only the CPU of one refresh, by size"
    )
    parser.add_argument("--changes", type=int, default=20, help="--refresh: changes per size")
    parser.add_argument(
        "--fresh", action="store_true", help="--refresh: every instance modified just now"
    )
    parser.add_argument(
        "--plot-refresh",
        nargs="+",
        metavar="LABEL=FILE",
        help="plot --refresh --json files against size into --plot, and stop",
    )
    parser.add_argument(
        "--plot-write",
        nargs="+",
        metavar="LABEL=FILE[,FILE]",
        help="plot the write's and the refresh's CPU of --refresh --json files into --plot",
    )
    parser.add_argument(
        "--plot-gap",
        nargs="+",
        metavar="LABEL=FILE[,FILE]",
        help="plot --latency --gap --json files (decisions during a refresh) into --plot",
    )
    parser.add_argument(
        "--plot-ratios",
        nargs="+",
        metavar="LABEL=FILE[,FILE]",
        help="plot the p99 ratios of --latency --control --json files into --plot",
    )
    parser.add_argument(
        "--pooled",
        nargs="+",
        metavar="LABEL=FILE[,FILE]",
        help="print the pooled p99 table of --latency --control --json files, each "
        "LABEL's files' rounds taken together (several runs as one)",
    )
    parser.add_argument(
        "--control", action="store_true", help="--latency: a CPU-only window pair too"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="--latency: the worker on core 0, wrk and the writing child on core 1",
    )
    parser.add_argument(
        "--writer-idle",
        action="store_true",
        help="--latency: the writing child at the lowest CPU priority (SCHED_IDLE, nice 19): "
        "as close to a writer on another machine as one machine allows",
    )
    parser.add_argument(
        "--gap",
        action="store_true",
        help="--latency: two more in-process windows, a gap between decisions, this "
        "process's builder unpaced then paced",
    )
    parser.add_argument(
        "--build-step", type=float, help="--latency: catalogs.BUILD_STEP (s) in both roots"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="--latency: catalogs.BUILD_SWITCH_INTERVAL (s) in both roots",
    )
    parser.add_argument("--churn", type=int, help=argparse.SUPPRESS)  # latency's child
    parser.add_argument("--spin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.plot_refresh:
        plot_refresh(args.plot_refresh, args.plot or Path("library-refresh.png"))
        return
    if args.plot_write:
        plot_write(args.plot_write, args.plot or Path("library-write.png"))
        return
    if args.plot_gap:
        plot_gap(args.plot_gap, args.plot or Path("library-gap.png"))
        return
    if args.plot_ratios:
        plot_ratios(args.plot_ratios, args.plot or Path("library-ratios.png"))
        return
    if args.pooled:
        for run in args.pooled:
            label, rounds = labelled_rounds(run)
            print(f"{label}: {len(rounds)} rounds")
            print_pooled(rounds[0]["size"], [(w, pooled_p99(rounds, p)) for w, p in WHERE])
        return
    if args.src is not None:
        use_source(args.src)
    if args.churn is not None:
        churn(args)
        return
    if args.latency:
        latency(args)
        return
    if args.refresh:
        refresh(args)
        return
    if args.compare is not None:
        compare(args)
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"{size:,} offers", flush=True)
        rows.append(measure(size, args.dir, args.repeats, args.seconds))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{machine()}; median of {args.repeats} starts, {args.repeats * 3} changes")
    print()
    print(
        "| offers | start → decision, cold s | warm s | write → visible s (max) "
        "| full build CPU s | rebuild CPU per change s | p99 quiet ms | p99 rebuilding ms "
        "| ratio | RSS peak MB | RSS steady MB | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['size']:,} | {r['start_cold_s']:.2f} | {r['start_warm_s']:.2f} "
            f"| {r['visible_s']:.2f} ({r['visible_max_s']:.2f}) | {r['full_build_cpu_s']:.2f} "
            f"| {r['change_cpu_s']:.3f} | {r['p99_quiet_ms']:.1f} | {r['p99_rebuilding_ms']:.1f} "
            f"| {r['p99_rebuilding_ms'] / r['p99_quiet_ms']:.2f}× | {r['rss_peak_mb']:.0f} "
            f"| {r['rss_steady_mb']:.0f} | {r['load_before']:.1f} → {r['load_after']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()

"""What the cyclic garbage collector costs a server worker per decision, over HTTP.

    .venv/bin/python bench/gc_decisions.py [--seconds 5] [--repeats 3] [--connections 50] \
        [--compare "cache off:NEXTOFFER_PROFILE_CACHE_MB=0;cache on:NEXTOFFER_PROFILE_CACHE_MB=64"]

``http_decisions.py``'s library and request (100 offers, 5-condition rules, top 3, a third
capped, 10,000 profiles, every decision recorded), one 2-worker uvicorn server per variant
(its ``NEXTOFFER_*`` environment; ``PYTHONPATH=OTHER/src`` runs another tree), driven by
wrk in turn, the variants' order reversed every other repeat. Every process of the servers
loads a ``sitecustomize`` written here that times each collection from ``gc.callbacks``
(``perf_counter_ns``, and the collecting thread's CPU time, ``thread_time_ns``, at its
start and stop) and writes its counts to a file; the driver reads them before and after
each row. Per variant, medians over repeats of: collections per 1,000 decisions by
generation, the collector's wall µs per decision (all generations and the full ones) and
its CPU µs by generation, the longest pause by generation, the pauses of 1 ms or more,
the objects the collections freed per decision (garbage cycles), decisions/s, p99 and
the server's CPU per decision. After the last repeat, each worker counts the objects the
collector tracks by generation and those frozen (``gc.get_objects``,
``gc.get_freeze_count``).
A variant's ``GC_THRESHOLD=700/10/10`` sets the collector's thresholds in its processes.

Every server first answers ``--warm`` seconds of decisions at 50 connections, so that a
profile cache on holds (nearly) all 10,000 profiles before the rows, as it does through
``http_decisions.py``'s run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from http_decisions import SERVERS, build, parse_variants, run_row
from httpbench import machine, probed_servers
from scratch import scratch_dir

#: Loaded by every process of a server (``PYTHONPATH``): counts and times each collection.
PROBE = r"""
import gc, json, os, threading, time

if os.environ.get("GC_THRESHOLD"):  # a variant's own thresholds, e.g. "7000/10/10"
    gc.set_threshold(*(int(n) for n in os.environ["GC_THRESHOLD"].split("/")))
_DIR = os.environ.get("GC_PROBE_DIR")
if _DIR:
    _perf = time.perf_counter_ns
    _cpu = time.thread_time_ns
    _counts = [0, 0, 0]
    _ns = [0, 0, 0]
    _cpu_ns = [0, 0, 0]
    _collected = [0, 0, 0]
    _longest = [0, 0, 0]
    _pauses = []  # (time.time(), generation, ns, collected) of every pause >= 1 ms
    _started = [0, 0]

    def _callback(phase, info):
        if phase == "start":
            _started[1] = _cpu()
            _started[0] = _perf()
            return
        spent = _perf() - _started[0]
        used = _cpu() - _started[1]
        generation = info["generation"]
        _counts[generation] += 1
        _ns[generation] += spent
        _cpu_ns[generation] += used
        _collected[generation] += info["collected"]
        if spent > _longest[generation]:
            _longest[generation] = spent
        if spent >= 1_000_000:
            _pauses.append((time.time(), generation, spent, info["collected"]))

    gc.callbacks.append(_callback)
    _path = os.path.join(_DIR, f"{os.getpid()}.json")
    _census = os.path.join(_DIR, "census")

    def _write():
        counted = 0.0
        sizes = None
        while True:
            time.sleep(0.25)
            try:
                asked = os.stat(_census).st_mtime
            except OSError:
                asked = 0.0
            if asked > counted:
                counted = asked
                sizes = {
                    "generations": [len(gc.get_objects(g)) for g in range(3)],
                    "frozen": gc.get_freeze_count(),
                    "thresholds": gc.get_threshold(),
                }
            state = {
                "counts": _counts,
                "ns": _ns,
                "cpu_ns": _cpu_ns,
                "collected": _collected,
                "longest": _longest,
                "pauses": _pauses[-2000:],
                "sizes": sizes,
                "census_at": counted,
            }
            with open(_path + ".tmp", "w") as out:
                json.dump(state, out)
            os.replace(_path + ".tmp", _path)

    threading.Thread(target=_write, name="gc-probe", daemon=True).start()
"""


def read(probe: Path) -> dict[int, dict[str, Any]]:
    """The last state each process of a server wrote."""
    states = {}
    for path in probe.glob("*.json"):
        try:
            states[int(path.stem)] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return states


def delta(before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Collections and their ns by generation, summed over the processes, between two reads."""
    keys = ("counts", "ns", "cpu_ns", "collected")
    moved: dict[str, list[int]] = {key: [0, 0, 0] for key in keys}
    for pid, state in after.items():
        old = before.get(pid)
        for key, sums in moved.items():
            for g in range(3):
                sums[g] += state[key][g] - (old[key][g] if old is not None else 0)
    return moved


def pauses(after: dict[int, dict[str, Any]], start: float, end: float) -> list[list[float]]:
    return [p for state in after.values() for p in state["pauses"] if start <= p[0] <= end]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warm", type=int, default=8, help="seconds of decisions first")
    parser.add_argument(
        "--compare",
        metavar="NAME:K=V,…;NAME:…",
        default="cache off:NEXTOFFER_PROFILE_CACHE_MB=0;cache on:NEXTOFFER_PROFILE_CACHE_MB=64",
    )
    args = parser.parse_args()
    variants = parse_variants(args.compare)
    workdir = scratch_dir("nextoffer-gc-")
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    lib = build(db_url)
    print(f"machine: {machine()}; load average {os.getloadavg()}", flush=True)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    servers = probed_servers(
        db_url,
        {name: (2, env) for name, env in variants.items()},
        probe=PROBE,
        out_var="GC_PROBE_DIR",
        workdir=workdir,
    )
    try:
        SERVERS[:] = [server for server, _ in servers.values()]
        for server, _ in servers.values():
            run_row(server, lib, "POST decisions", 50, args.warm)
        for repeat in range(args.repeats):
            order = list(servers.items())[:: -1 if repeat % 2 else 1]
            for name, (server, probe) in order:
                time.sleep(0.6)
                before, cpu = read(probe), server.cpu_seconds()
                start = time.time()
                result = run_row(server, lib, "POST decisions", args.connections, args.seconds)
                end = time.time()
                spent = server.cpu_seconds() - cpu
                time.sleep(0.6)  # the probes' next writes
                after = read(probe)
                moved = delta(before, after)
                decisions = max(result.requests, 1)
                long = pauses(after, start, end)
                rows[name].append(
                    {
                        "rps": result.requests_per_s,
                        "p99": result.p99_ms,
                        "errors": result.errors,
                        "cpu": spent / decisions * 1e6,
                        "per_k": [c / decisions * 1e3 for c in moved["counts"]],
                        "us": [ns / decisions / 1e3 for ns in moved["ns"]],
                        "cpu_us": [ns / decisions / 1e3 for ns in moved["cpu_ns"]],
                        "garbage": sum(moved["collected"]) / decisions,
                        "longest": [
                            max((p[2] for p in long if p[1] == g), default=0) / 1e6
                            for g in range(3)
                        ],
                        "over_1ms": len(long),
                    }
                )
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
        census_at = time.time()
        (workdir / "census").touch()
        for _, probe in servers.values():
            (probe / "census").touch()
        time.sleep(2.0)
        census = {name: read(probe) for name, (_, probe) in servers.items()}
    finally:
        for server, _ in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # the database grows by ~0.5 GB a run
    print(
        f"\n{args.connections} connections, 2 workers; medians of {args.repeats} repeats "
        f"(longest pauses: the longest of any repeat)\n"
    )
    print(
        "| variant | decisions/s | p99 ms | errors | CPU µs per decision "
        "| collections per 1,000 decisions (gen 0 / 1 / 2) | GC µs per decision "
        "| of which full (gen 2) | GC CPU µs per decision (gen 0 / 1 / 2) "
        "| longest pause ms (gen 0 / 1 / 2) | pauses ≥ 1 ms per row "
        "| objects collected per decision |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---|---|---:|---:|")
    for name, runs in rows.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(r[key] for r in runs))

        def med_g(key: str, g: int, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(r[key][g] for r in runs))

        per_k = " / ".join(f"{med_g('per_k', g):.2f}" for g in range(3))
        longest = " / ".join(f"{max(r['longest'][g] for r in runs):.2f}" for g in range(3))
        total = statistics.median(sum(r["us"]) for r in runs)
        used = " / ".join(f"{med_g('cpu_us', g):.2f}" for g in range(3))
        print(
            f"| {name} | {med('rps'):,.0f} | {med('p99'):.2f} | {sum(r['errors'] for r in runs)} "
            f"| {med('cpu'):.1f} | {per_k} | {total:.2f} | {med_g('us', 2):.2f} "
            f"| {used} | {longest} "
            f"| {med('over_1ms'):.0f} | {med('garbage'):.2f} |"
        )
    print("\nObjects the collector tracks in each worker after the last repeat:\n")
    print("| variant | process | gen 0 | gen 1 | gen 2 | frozen |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, states in census.items():
        for pid, state in sorted(states.items()):
            sizes = state.get("sizes")
            if sizes is None or state.get("census_at", 0) < census_at - 1:
                continue
            g0, g1, g2 = sizes["generations"]
            print(f"| {name} | {pid} | {g0:,} | {g1:,} | {g2:,} | {sizes['frozen']:,} |")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

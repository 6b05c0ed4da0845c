"""Where a SQLite worker's event loop stops serving requests, over HTTP.

    .venv/bin/python bench/loop_stalls.py [--seconds 8] [--repeats 3] [--connections 50] \
        [--compare "this tree:;other:PYTHONPATH=OTHER/src"]

``http_decisions.py``'s library and request (100 offers, 5-condition rules, top 3, a third
capped, 10,000 profiles, every decision recorded), one 2-worker uvicorn server per variant,
driven by wrk in turn (the order reversed every other repeat). Every process of the
servers loads a ``sitecustomize`` written here that times, on each worker's loop:

* the loop's lag: a callback asks to run every millisecond and notes how late it ran (a
  pass of the loop that takes 3 ms makes it 2 ms late);
* each group commit of the loop's record batch (``SqlitePath._write_loop_batch``: the
  write lock, the transaction, the futures resolved) and the records it held;
* each fold of the offers report on the loop (``SqlitePath._loop_fold``).

Per variant, medians over repeats: decisions/s and p99 (wrk), the lag's p50/p99, the share
of the loop's time spent more than 5 ms late, folds per second and their ms (p50 and the
longest), batches' ms (p50, p99, longest) and records (p50, p99). The probe wraps two
private methods of ``storage/sqlite_path.py``; it stops the run if they are gone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from http_decisions import SERVERS, build, parse_variants, run_row
from httpbench import machine, probed_servers
from scratch import scratch_dir

#: Loaded by every process of a server (``PYTHONPATH``); each worker writes what it timed
#: since its last write to ``STALL_PROBE_DIR/<pid>.json`` whenever that file is gone.
PROBE = r"""
import json, os, threading, time

_DIR = os.environ.get("STALL_PROBE_DIR")
if _DIR:
    from nextoffer.storage import sqlite_path as _sp

    _perf = time.perf_counter
    _lags, _folds, _batches, _sizes, _ticking = [], [], [], [], set()
    _write, _fold = _sp.SqlitePath._write_loop_batch, _sp.SqlitePath._loop_fold

    def _tick(loop, due):
        now = _perf()
        _lags.append(now - due)
        loop.call_later(0.001, _tick, loop, now + 0.001)

    def _write_loop_batch(self, loop):
        if loop not in _ticking:
            _ticking.add(loop)
            loop.call_later(0.001, _tick, loop, _perf() + 0.001)
        _sizes.append(len(self._loop_batches.get(loop, ())))
        start = _perf()
        _write(self, loop)
        _batches.append(_perf() - start)

    def _loop_fold(self, loop):
        start = _perf()
        _fold(self, loop)
        _folds.append(_perf() - start)

    _sp.SqlitePath._write_loop_batch = _write_loop_batch
    _sp.SqlitePath._loop_fold = _loop_fold
    _path = os.path.join(_DIR, f"{os.getpid()}.json")

    def _serve():
        while True:
            time.sleep(0.1)
            # Only a worker that has written a batch on its loop (not the supervisor).
            if not _ticking or os.path.exists(_path):
                continue
            taken = {}
            for name, values in (
                ("lags", _lags), ("folds", _folds), ("batches", _batches), ("sizes", _sizes)
            ):
                taken[name] = values[:]
                del values[: len(taken[name])]
            with open(_path + ".tmp", "w") as out:
                json.dump(taken, out)
            os.replace(_path + ".tmp", _path)

    threading.Thread(target=_serve, name="stall-probe", daemon=True).start()
"""

MISSING = "the probe found no SqlitePath._write_loop_batch/_loop_fold: see the server log"


def collect(probe: Path, pids: int) -> dict[str, list[float]]:
    """What every process timed since the last call: remove their files, wait for new."""
    for path in probe.glob("*.json"):
        path.unlink()
    deadline = time.monotonic() + 5
    while len(list(probe.glob("*.json"))) < pids:
        if time.monotonic() > deadline:
            raise SystemExit(MISSING)
        time.sleep(0.05)
    merged: dict[str, list[float]] = {"lags": [], "folds": [], "batches": [], "sizes": []}
    for path in probe.glob("*.json"):
        for name, values in json.loads(path.read_text()).items():
            merged[name].extend(values)
    return merged


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def summary(timed: dict[str, list[float]], seconds: float, workers: int) -> dict[str, float]:
    lags, folds, batches = timed["lags"], timed["folds"], timed["batches"]
    return {
        "lag_p50": quantile(lags, 0.5) * 1e3,
        "lag_p99": quantile(lags, 0.99) * 1e3,
        # Each late tick stands for the time the loop was that late, beyond 5 ms.
        "late_share": sum(lag - 0.005 for lag in lags if lag > 0.005) / (seconds * workers),
        "folds_per_s": len(folds) / (seconds * workers),
        "fold_p50": quantile(folds, 0.5) * 1e3,
        "fold_max": max(folds, default=0.0) * 1e3,
        "batch_p50": quantile(batches, 0.5) * 1e3,
        "batch_p99": quantile(batches, 0.99) * 1e3,
        "batch_max": max(batches, default=0.0) * 1e3,
        "size_p50": quantile(timed["sizes"], 0.5),
        "size_p99": quantile(timed["sizes"], 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--compare", metavar="NAME:K=V,…;NAME:…", default="this tree:")
    args = parser.parse_args()
    variants = parse_variants(args.compare)
    workdir = scratch_dir("nextoffer-stalls-")
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    lib = build(db_url)
    print(f"machine: {machine()}; load average {os.getloadavg()}", flush=True)
    workers = 2
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    servers = probed_servers(
        db_url,
        {name: (workers, env) for name, env in variants.items()},
        probe=PROBE,
        out_var="STALL_PROBE_DIR",
        workdir=workdir,
    )
    try:
        SERVERS[:] = [server for server, _ in servers.values()]
        for server, _ in servers.values():
            run_row(server, lib, "POST decisions", args.connections, 3)
        for repeat in range(args.repeats):
            order = list(servers.items())[:: -1 if repeat % 2 else 1]
            for name, (server, probe) in order:
                time.sleep(0.6)
                collect(probe, workers)  # what came before the row
                start = time.monotonic()
                result = run_row(server, lib, "POST decisions", args.connections, args.seconds)
                elapsed = time.monotonic() - start  # the row, not the wait for the probes
                row = summary(collect(probe, workers), elapsed, workers)
                row.update(rps=result.requests_per_s, p99=result.p99_ms, errors=result.errors)
                rows[name].append(row)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        for server, _ in servers.values():
            server.stop()
    print(f"\n{args.connections} connections, {workers} workers; medians of {args.repeats}\n")
    print(
        "| variant | decisions/s | p99 ms | errors | loop lag p50 / p99 ms "
        "| loop time > 5 ms late | folds /s per worker | fold ms p50 / longest "
        "| batch ms p50 / p99 / longest | records a batch p50 / p99 |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---|---|---|")
    for name, runs in rows.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(r[key] for r in runs))

        longest_fold = max(r["fold_max"] for r in runs)
        longest_batch = max(r["batch_max"] for r in runs)
        print(
            f"| {name} | {med('rps'):,.0f} | {med('p99'):.1f} "
            f"| {sum(int(r['errors']) for r in runs)} "
            f"| {med('lag_p50'):.2f} / {med('lag_p99'):.2f} | {med('late_share'):.1%} "
            f"| {med('folds_per_s'):.1f} | {med('fold_p50'):.2f} / {longest_fold:.2f} "
            f"| {med('batch_p50'):.2f} / {med('batch_p99'):.2f} / {longest_batch:.2f} "
            f"| {med('size_p50'):.0f} / {med('size_p99'):.0f} |"
        )
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

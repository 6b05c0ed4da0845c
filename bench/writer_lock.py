"""How the workers of one server share SQLite's single writer: lock waits, holds, batches.

    .venv/bin/python bench/writer_lock.py [--seconds 5] [--repeats 3] [--connections 50] \
        [--compare 'this:;main:PYTHONPATH=/tmp/main/src']

The library and profiles of ``http_decisions.py`` (100 offers, 5-condition rules, a third
capped, 10,000 profiles), recorded decisions driven by wrk on a 1-worker and a 2-worker
uvicorn server (or, with ``--compare``, one 2-worker server per environment), rows
interleaved. Every server process loads a ``sitecustomize`` (from a directory put first
on ``PYTHONPATH``) that times, per process and thread, without changing what runs:

* ``fcntl.flock`` on the writer lock file: time spent in a blocking ``LOCK_EX`` (the
  thread waits: on the event loop's thread, no request is served meanwhile; on a
  ``nextoffer-lock-waiter`` thread, the loop serves on), the number of non-blocking tries
  that found the lock held, and the time the lock was held;
* every loop batch (``group_commit.commit_batch`` as ``sqlite_path`` calls it): its
  records and its wall time;
* in a tree whose loop does not wait in ``flock``, how long each loop batch waited for
  the lock, from its first try to its commit (whole milliseconds);
* every fold (``SqlitePath._fold_held``, or ``_fold`` in older trees): its wall time.

Figures are per second of the row, summed over the server's workers, medians over
repeats; per worker the shares of one second: waiting on the loop thread, holding.
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

#: Loaded by every process of a measured server (``PYTHONPATH`` puts its directory first).
SITECUSTOMIZE = r"""
import fcntl, json, os, threading, time

_DIR = os.environ.get("NEXTOFFER_LOCKSTATS")
if _DIR:
    _flock = fcntl.flock
    _stats = {}
    _held = {}

    def _entry(name):
        entry = _stats.get(name)
        if entry is None:
            entry = _stats[name] = {
                "wait_s": 0.0, "waits": 0, "busy_tries": 0, "hold_s": 0.0, "holds": 0,
                "batches": 0, "records": 0, "batch_s": 0.0, "folds": 0, "fold_s": 0.0,
                "sizes": {},
            }
        return entry

    def flock(fd, op):
        entry = _entry(threading.current_thread().name)
        if op & fcntl.LOCK_UN:
            started = _held.pop(fd, None)
            if started is not None:
                entry["hold_s"] += time.perf_counter() - started
                entry["holds"] += 1
            return _flock(fd, op)
        started = time.perf_counter()
        try:
            _flock(fd, op)
        except BlockingIOError:
            entry["busy_tries"] += 1
            raise
        now = time.perf_counter()
        if not op & fcntl.LOCK_NB:
            entry["wait_s"] += now - started
            entry["waits"] += 1
        if op & fcntl.LOCK_EX:
            _held[fd] = now

    fcntl.flock = flock

    def _dump():
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while True:
            time.sleep(0.25)
            tmp = path + ".tmp"
            with open(tmp, "w") as out:
                json.dump(_stats, out)
            os.replace(tmp, path)

    threading.Thread(target=_dump, daemon=True, name="lockstats").start()

    def _patch():
        try:
            from nextoffer.storage import sqlite_path
        except ImportError:
            return
        commit_batch = sqlite_path.commit_batch

        def timed_batch(batch, write):
            entry = _entry(threading.current_thread().name)
            started = time.perf_counter()
            try:
                return commit_batch(batch, write)
            finally:
                entry["batch_s"] += time.perf_counter() - started
                entry["batches"] += 1
                entry["records"] += len(batch)
                size = str(len(batch))
                entry["sizes"][size] = entry["sizes"].get(size, 0) + 1

        sqlite_path.commit_batch = timed_batch
        cls = sqlite_path.SqlitePath
        held = "_fold_held" in cls.__dict__  # the fold's transaction, under the lock
        fold = cls.__dict__["_fold_held" if held else "_fold"]
        fold = fold.__func__ if isinstance(fold, staticmethod) else fold

        def timed_fold(*args):
            entry = _entry(threading.current_thread().name)
            started = time.perf_counter()
            try:
                return fold(*args)
            finally:
                entry["fold_s"] += time.perf_counter() - started
                entry["folds"] += 1

        if held:
            cls._fold_held = staticmethod(timed_fold)
        else:
            cls._fold = timed_fold

        if hasattr(cls, "_commit_loop_batch"):  # a loop that does not wait in flock
            first = {}
            write_loop_batch = cls._write_loop_batch
            commit_loop_batch = cls._commit_loop_batch

            def timed_write(self, loop, since, *rest):
                first.setdefault(loop, since)
                return write_loop_batch(self, loop, since, *rest)

            def timed_commit(self, loop):
                since = first.pop(loop, None)
                if since is not None:
                    waited = loop.time() - since
                    entry = _entry(threading.current_thread().name)
                    waits = entry.setdefault("batch_waits", {})
                    key = str(min(int(waited * 1000), 100))  # whole ms, 100 = 100 or more
                    waits[key] = waits.get(key, 0) + 1
                return commit_loop_batch(self, loop)

            cls._write_loop_batch = timed_write
            cls._commit_loop_batch = timed_commit

    _patch()
"""

DECISIONS = "POST decisions"


def snapshot(directory: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """pid → thread → counters, as the server's processes last wrote them."""
    found = {}
    for path in directory.glob("*.json"):
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced
            continue
    return found


def delta(
    before: dict[str, dict[str, dict[str, Any]]], after: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for pid, threads in after.items():
        for thread, entry in threads.items():
            old = before.get(pid, {}).get(thread, {})
            diff: dict[str, Any] = {
                key: value - old.get(key, 0)
                for key, value in entry.items()
                if key not in ("sizes", "batch_waits")
            }
            sizes = {
                int(size): n - old.get("sizes", {}).get(size, 0)
                for size, n in entry["sizes"].items()
            }
            diff["sizes"] = {size: n for size, n in sizes.items() if n}
            waits = {
                int(ms): n - old.get("batch_waits", {}).get(ms, 0)
                for ms, n in entry.get("batch_waits", {}).items()
            }
            diff["batch_waits"] = {ms: n for ms, n in waits.items() if n}
            if any(v for k, v in diff.items() if k not in ("sizes", "batch_waits")):
                out.setdefault(pid, {})[thread] = diff
    return out


def summarize(row: dict[str, dict[str, dict[str, Any]]], seconds: float) -> dict[str, float]:
    """Per second of the row: the loop threads' waits, holds and batches; the other
    threads' holds (checkpointer, writer thread)."""
    loop = [entry for threads in row.values() for t, entry in threads.items() if t == "MainThread"]
    others = [
        entry for threads in row.values() for t, entry in threads.items() if t != "MainThread"
    ]
    waiters = [
        entry
        for threads in row.values()
        for t, entry in threads.items()
        if t == "nextoffer-lock-waiter"
    ]
    workers = max(len(loop), 1)
    sizes: list[int] = []
    for entry in loop:
        for size, n in entry["sizes"].items():
            sizes.extend([size] * n)
    batches = sum(e["batches"] for e in loop)
    waited: list[int] = []
    for entry in loop:
        for ms, n in entry.get("batch_waits", {}).items():
            waited.extend([ms] * n)
    waited.sort()
    return {
        "workers": len(loop),
        "loop_wait_share": sum(e["wait_s"] for e in loop) / seconds / workers,
        "waits_per_s": sum(e["waits"] for e in loop) / seconds,
        "busy_tries_per_s": sum(e["busy_tries"] for e in loop) / seconds,
        "thread_waits_per_s": sum(e["waits"] for e in waiters) / seconds,
        "thread_wait_ms": sum(e["wait_s"] for e in waiters)
        / max(sum(e["waits"] for e in waiters), 1)
        * 1e3,
        "loop_hold_share": sum(e["hold_s"] for e in loop) / seconds,
        "other_hold_share": sum(e["hold_s"] for e in others) / seconds,
        "batches_per_s": batches / seconds,
        "records_per_batch": sum(e["records"] for e in loop) / max(batches, 1),
        "median_batch": statistics.median(sizes) if sizes else 0,
        "p90_batch": sorted(sizes)[int(0.9 * (len(sizes) - 1))] if sizes else 0,
        "wait_p99_ms": waited[int(0.99 * (len(waited) - 1))] if waited else float("nan"),
        "wait_max_ms": waited[-1] if waited else float("nan"),
        "batch_ms": sum(e["batch_s"] for e in loop) / max(batches, 1) * 1e3,
        "folds_per_s": sum(e["folds"] for e in loop) / seconds,
        "fold_ms": sum(e["fold_s"] for e in loop) / max(sum(e["folds"] for e in loop), 1) * 1e3,
    }


COLUMNS = (
    ("decisions/s", "rps", "{:,.0f}"),
    ("p99 ms", "p99", "{:.1f}"),
    ("errors", "errors", "{:.0f}"),
    ("server CPU µs per decision", "cpu_us", "{:.0f}"),
    ("loop thread blocked in flock (share of each worker's second)", "loop_wait_share", "{:.1%}"),
    ("blocking waits/s", "waits_per_s", "{:,.0f}"),
    ("tries finding it held/s", "busy_tries_per_s", "{:,.0f}"),
    ("waits handed to a thread/s", "thread_waits_per_s", "{:.1f}"),
    ("ms per wait in a thread", "thread_wait_ms", "{:.1f}"),
    ("lock held by the loops (share of a second)", "loop_hold_share", "{:.1%}"),
    ("held by other threads", "other_hold_share", "{:.1%}"),
    ("batches/s", "batches_per_s", "{:,.0f}"),
    ("records per batch (mean)", "records_per_batch", "{:.1f}"),
    ("median batch", "median_batch", "{:.0f}"),
    ("p90 batch", "p90_batch", "{:.0f}"),
    ("ms per batch", "batch_ms", "{:.2f}"),
    ("ms a batch waited for the lock, p99 (whole ms)", "wait_p99_ms", "{:.0f}"),
    ("… the longest", "wait_max_ms", "{:.0f}"),
    ("folds/s", "folds_per_s", "{:.1f}"),
    ("ms per fold", "fold_ms", "{:.2f}"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--compare", metavar="NAME:K=V,…;NAME:…", help="one 2-worker server per environment"
    )
    args = parser.parse_args()
    workdir = scratch_dir("nextoffer-lockbench-")
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    started = time.monotonic()
    lib = build(db_url)
    print(
        f"machine: {machine()}; load average {os.getloadavg()}; library built in "
        f"{time.monotonic() - started:.1f} s",
        flush=True,
    )
    if args.compare:
        setups = {name: (2, env) for name, env in parse_variants(args.compare).items()}
    else:
        setups = {"1 worker": (1, {}), "2 workers": (2, {})}
    rows: dict[str, list[dict[str, float]]] = {}
    servers = probed_servers(
        db_url, setups, probe=SITECUSTOMIZE, out_var="NEXTOFFER_LOCKSTATS", workdir=workdir
    )
    try:
        SERVERS[:] = [server for server, _ in servers.values()]
        for server, _ in servers.values():
            run_row(server, lib, DECISIONS, 10, 2)
        for repeat in range(args.repeats):
            order = list(servers.items())[:: -1 if repeat % 2 else 1]
            for name, (server, stats) in order:
                run_row(server, lib, DECISIONS, 2, 1)  # drain; the counters settle
                time.sleep(0.6)
                before = snapshot(stats)
                began = time.monotonic()
                cpu = server.cpu_seconds()
                result = run_row(server, lib, DECISIONS, args.connections, args.seconds)
                cpu = server.cpu_seconds() - cpu
                time.sleep(0.6)  # the dump thread's next write
                took = time.monotonic() - began - 0.6
                summary = summarize(delta(before, snapshot(stats)), took)
                summary.update(
                    rps=result.requests_per_s,
                    p99=result.p99_ms,
                    errors=result.errors,
                    cpu_us=cpu / max(result.requests, 1) * 1e6,
                )
                rows.setdefault(name, []).append(summary)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        for server, _ in servers.values():
            server.stop()
    names = list(rows)
    print(f"\n{args.connections} connections, medians of {args.repeats} repeats\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, key, fmt in COLUMNS:
        cells = [fmt.format(statistics.median(r[key] for r in rows[name])) for name in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

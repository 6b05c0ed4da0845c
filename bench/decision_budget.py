"""Where one recorded decision's time goes over HTTP: CPU µs per decision, stage by stage.

    .venv/bin/python bench/decision_budget.py [--seconds 10] [--connections 10] [--rate 2000]
                                              [--postgres [--redis] [--sockets]]
                                              [--env KEY=VALUE ...]

One uvicorn worker (its app runs in the server process), the library and request of
``http_decisions.py``. wrk drives ``POST …/decisions`` while py-spy samples every thread
of the server (active samples only, no idle); each sample is charged to the stage of the
innermost frame that names one (:data:`STAGES`, leaf first), else to "other". Samples ÷
rate is CPU time; divided by the decisions wrk completed meanwhile, µs per decision. The
same run samples ``GET /bare`` (a constant body from a route of the same app), whose µs
per request is the reference: the server stack's own cost of one request; and ``GET
/asgi``, a plain ASGI callable ahead of the app (``httpbench.SERVER``): a bare uvicorn ASGI
app's.

``--postgres`` runs the server on its own PostgreSQL (``scripts/services start``; with
``--redis``, counters in its Redis; with ``--sockets``, both reached through their Unix
sockets instead of loopback TCP), ``--env`` adds settings (e.g.
``NEXTOFFER_ACCESS_LOG=0``).

Seconds of CPU are not seconds of latency: time a request spends waiting (for the group
commit's batch, for the loop) is not sampled. The table says what a decision costs the
worker, which bounds its rate.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from http_decisions import DECIDE_TYPE, VARY_IDENTITY, build
from httpbench import Result, Server, machine, wrk
from scratch import scratch_dir

from nodes import SERVICES, database, start_services, warm

#: (stage, pattern on one frame "function (path:line)"), tried leaf first per sample.
STAGES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        # py-spy names an installed module's file from its package down: "(redis/….py:N)".
        ("cap counters in Redis", r"storage/redis_counters\.py|\(redis/"),
        ("PostgreSQL driver on the loop (asyncpg)", r"\(asyncpg/"),
        (
            "record: reserve + write + commit",
            r"sqlite_path\.py|session_path\.py|decision_path\.py|pg_path\.py|group_commit\.py",
        ),
        ("WAL checkpoint thread", r"storage/checkpoints\.py"),
        ("engine (selection, PQL)", r"nextoffer/engine/|nextoffer/pql/"),
        ("attempt + cap plan", r"service/attempt\.py|service/cap_plan\.py"),
        ("snapshot lookup", r"service/catalogs\.py"),
        ("decide use case", r"service/decisions\.py|nextoffer/root\.py"),
        ("authentication", r"service/auth\.py|service/tokens\.py"),
        ("body read + parse", r"api/bodies\.py|api/decision_request\.py"),
        ("response body", r"api/decision_response\.py|api/responses\.py"),
        ("route + middleware", r"nextoffer/api/"),
        ("HTTP server + ASGI", r"uvicorn/|starlette/|httptools|uvloop|h11/"),
        ("event loop", r"asyncio/"),
    )
)


#: The profile read runs in the decision path's module too (``SqlitePath.profile``): a
#: sample under it is charged to it before the leaf-first stages, not to the record.
PROFILE_READ = ("profile read (driver)", re.compile(r"(Path|OnLoop)\.(profile|events) \("))


def stage_of(stack: str) -> str:
    frames = stack.split(";")
    name, pattern = PROFILE_READ
    if any(pattern.search(frame) for frame in frames):
        return name
    for frame in reversed(frames):
        for name, pattern in STAGES:
            if pattern.search(frame):
                return name
    return "other"


def sched_seconds(pid: int) -> tuple[float, float]:
    """Seconds the threads of ``pid`` have spent on a CPU, and runnable waiting for one
    (``/proc/PID/task/*/schedstat``, Linux)."""
    on_cpu = waiting = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ran, waited, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
        on_cpu += int(ran)
        waiting += int(waited)
    return on_cpu / 1e9, waiting / 1e9


def sample(
    pid: int, seconds: int, rate: int, drive: Callable[[], Result], keep: Path | None = None
) -> tuple[Counter[str], Result, tuple[float, float]]:
    """py-spy on ``pid`` while ``drive()`` runs; samples per stage, wrk's result, and the
    seconds the process spent meanwhile on a CPU and waiting for one."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stacks.txt"
        spy = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)),
                *("--rate", str(rate), "--duration", str(seconds + 1), "--format", "raw"),
                *("--output", str(out), "--nonblocking"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result: list[Result] = []
        worker = threading.Thread(target=lambda: result.append(drive()))
        ran, waited = sched_seconds(pid)
        worker.start()
        worker.join()
        ran_after, waited_after = sched_seconds(pid)
        spy.wait(timeout=seconds + 30)
        if keep is not None:
            keep.write_text(out.read_text())
        counts: Counter[str] = Counter()
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            counts[stage_of(stack)] += int(n)
    return counts, result[0], (ran_after - ran, waited_after - waited)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--rate", type=int, default=2000, help="py-spy samples per second")
    parser.add_argument("--keep-stacks", type=Path, help="write the decisions' raw stacks here")
    parser.add_argument("--plot", type=Path, help="write a matplotlib PNG of the budget here")
    parser.add_argument("--postgres", action="store_true", help="on a PostgreSQL of its own")
    parser.add_argument("--redis", action="store_true", help="with --postgres: counters in Redis")
    parser.add_argument(
        "--sockets", action="store_true", help="with --postgres: both servers' Unix sockets"
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument(
        "--warm-identities",
        action="store_true",
        help="warm on every identity in turn (as bench/nodes.py): a full profile cache",
    )
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    services: dict[str, str] = {}
    if args.postgres:
        services = start_services()
        over = "_SOCKET_URL" if args.sockets else "_URL"
        admin = services[f"NEXTOFFER_TEST_POSTGRES{over}"]
        subprocess.run(["psql", admin, "-qc", "CREATE DATABASE bench"], check=True)
        db_url = database(admin, "bench")
        if args.redis:
            env["NEXTOFFER_REDIS"] = services[f"NEXTOFFER_TEST_REDIS{over}"]
    else:
        workdir = scratch_dir("nextoffer-budget-")
        db_url = f"sqlite:///{workdir / 'bench.db'}"
    lib = build(db_url)
    server = Server(db_url, workers=1, env=env)
    decisions = f"{server.base}/data/core/ode/{lib['container']}/decisions"

    def drive_decisions() -> Result:
        return wrk(
            "decisions",
            decisions,
            method="POST",
            headers={**lib["headers"], "Content-Type": DECIDE_TYPE},
            body=lib["request"],
            lua=VARY_IDENTITY,
            seconds=args.seconds,
            connections=args.connections,
        )

    def drive_bare() -> Result:
        return wrk(
            "bare", server.base + "/bare", seconds=args.seconds, connections=args.connections
        )

    def drive_asgi() -> Result:
        return wrk(
            "bare ASGI", server.base + "/asgi", seconds=args.seconds, connections=args.connections
        )

    try:
        drive_decisions()  # warm: snapshot, caches, connections
        if args.warm_identities:
            warm(server, lib, seconds=args.seconds)
        before = os.getloadavg()
        bare, bare_result, _ = sample(server.process.pid, args.seconds, args.rate, drive_bare)
        asgi, asgi_result, _ = sample(server.process.pid, args.seconds, args.rate, drive_asgi)
        spent, result, (ran, waited) = sample(
            server.process.pid, args.seconds, args.rate, drive_decisions, args.keep_stacks
        )
        after = os.getloadavg()
    finally:
        server.stop()
        if services:
            subprocess.run([str(SERVICES), "stop", services["NEXTOFFER_SERVICES_DIR"]], check=False)
    per_bare = sum(bare.values()) / args.rate / bare_result.requests * 1e6
    per_asgi = sum(asgi.values()) / args.rate / asgi_result.requests * 1e6
    per_decision = sum(spent.values()) / args.rate / result.requests * 1e6
    print(f"{machine()}; load average {before} → {after}")
    print(
        f"decisions: {result.requests_per_s:,.0f}/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, {result.errors} errors; "
        f"bare: {bare_result.requests_per_s:,.0f}/s; bare ASGI: {asgi_result.requests_per_s:,.0f}/s"
    )
    print(
        f"the worker, per decision: {ran / result.requests * 1e6:.0f} µs on a CPU, "
        f"{waited / result.requests * 1e6:.0f} µs runnable and waiting for one; py-spy's "
        f"samples of it: {per_decision:.0f} µs (the table below)"
    )
    print(
        f"\n| stage | CPU µs per decision | share | ÷ bare request ({per_bare:.0f} µs) "
        f"| ÷ bare ASGI request ({per_asgi:.0f} µs) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, n in spent.most_common():
        us = n / args.rate / result.requests * 1e6
        print(
            f"| {name} | {us:.0f} | {n / sum(spent.values()):.0%} | {us / per_bare:.2f} "
            f"| {us / per_asgi:.2f} |"
        )
    print(
        f"| **all** | **{per_decision:.0f}** | 100% | {per_decision / per_bare:.2f} "
        f"| {per_decision / per_asgi:.2f} |"
    )
    if args.plot:
        us = {name: n / args.rate / result.requests * 1e6 for name, n in spent.items()}
        plot(us, per_bare, per_asgi, args, args.plot)


def plot(
    us: dict[str, float], per_bare: float, per_asgi: float, args: argparse.Namespace, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(us, key=us.__getitem__)
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.barh(names, [us[n] for n in names], color="C0")
    ax.axvline(per_bare, color="grey", linestyle=":", label=f"one bare request ({per_bare:.0f} µs)")
    ax.axvline(
        per_asgi,
        color="black",
        linestyle="--",
        label=f"one request to a bare ASGI app ({per_asgi:.0f} µs)",
    )
    ax.set_xlabel("worker CPU µs per recorded decision")
    ax.set_title(
        f"One decision's budget: 1 worker, {args.connections} connections, "
        f"{sum(us.values()):.0f} µs in all"
    )
    ax.legend(loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

"""Decision throughput with one node and two nodes on a shared PostgreSQL + Redis.

    .venv/bin/python bench/nodes.py [--seconds 8] [--repeats 3] [--connections 20]
                                    [--compare-src OTHER/src] [--sockets]

Starts its own PostgreSQL and Redis (``scripts/services start``, loopback, temporary
folders), builds the library of ``bench/http_decisions.py`` (100 rule-bearing offers, a
third capped, 10,000 profiles) in a SQLite file and in a PostgreSQL database, and drives
``POST …/decisions`` (recorded decisions: profile read, counter reads, reservation,
decision event) with wrk on loopback. Rows, in every repeat, one after another (each
repeat starting one row further on):

* ``sqlite, 1 node`` — the embedded default, counters in the same SQLite file: the
  reference of the run.
* ``postgres, 1 node`` — counters in PostgreSQL.
* ``postgres+redis, 1 node`` — counters in Redis (Lua reservations).
* ``postgres+redis, 2 nodes`` — two server processes on the same database and Redis,
  one wrk per node at the same time; throughput is the sum, latency the worse node's.

``--pin`` gives the node a core of its own: every node on core 0, and this script, with
PostgreSQL, Redis and wrk that it starts, on the others (the node's database and load
generator elsewhere, as in production). The two-node row is left out then (two nodes
would share the one core).

``--sockets`` adds ``postgres+redis, 1 node, Unix sockets``: the same node reaching both
servers through their Unix sockets instead of loopback TCP (what a node beside its
servers would use: docs/deploy.md; ``bench/transport.py`` times one round trip each
way). ``--sqlite-profile-cache-off`` adds a SQLite row with the profile cache switched off
(``NEXTOFFER_PROFILE_CACHE_MB=0``; every node has it on by default). ``--compare-src``
adds the two one-node PostgreSQL rows again, served by another checkout's ``src`` (e.g.
an export of ``main``) on a database of the same server that checkout built and migrated
(the same library, the same seed) and the same Redis, interleaved with the others: a
before/after in one run, under the same load.

Before measuring, every node decides for each identity in turn for ``--warm`` seconds
(default 8: all 10,000 profiles at least once, so caches are measured full; the working
set fits the profile cache). Each node is one uvicorn worker. On a small machine the
nodes, PostgreSQL, Redis and wrk share the cores: the two-node row then measures
sharing, not scale. The machine's core count and load average are printed with the
table; compare ratios, not absolutes. The
node's CPU time per decision (user + system, from ``/proc/<pid>/stat``, summed over the
nodes of the row) is what load on the machine changes least.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from http_decisions import DECIDE_TYPE, PROFILES, VARY_IDENTITY, build
from httpbench import Result, Server, machine, wrk
from scratch import scratch_dir
from sqlalchemy.engine import make_url

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"


def start_services() -> dict[str, str]:
    out = subprocess.run(
        [str(SERVICES), "start"], check=True, capture_output=True, text=True
    ).stdout
    return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())


def database(url: str, name: str) -> str:
    """``url`` (a server's, over TCP or its socket) naming database ``name`` instead."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def decisions(server: Server, lib: dict[str, Any], *, seconds: int, connections: int) -> Result:
    return wrk(
        "POST decisions",
        f"{server.base}/data/core/ode/{lib['container']}/decisions",
        method="POST",
        headers={**lib["headers"], "Content-Type": DECIDE_TYPE},
        body=lib["request"],
        lua=VARY_IDENTITY,
        seconds=seconds,
        connections=connections,
    )


def build_with(src: str, db_url: str) -> dict[str, Any]:
    """``build(db_url)`` run by another checkout's ``src``."""
    bench = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from http_decisions import build;"
            " print(json.dumps(build(sys.argv[1])))",
            db_url,
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{bench}"},
    ).stdout
    found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return found


#: Every identity in turn (one wrk thread: one Lua state for all its connections).
EVERY_IDENTITY = f"""
local template = wrk.body
local n = -1
request = function()
  n = (n + 1) % {PROFILES}
  local body = template:gsub("__N__", tostring(n))
  return wrk.format(nil, nil, nil, body)
end
"""


def warm(server: Server, lib: dict[str, Any], *, seconds: int) -> None:
    """Compile the catalog and fill the caches before wrk measures anything: decisions for
    every identity in turn, for ``seconds`` (enough to visit all 10,000 once: then a node
    that keeps profiles in memory is measured in its steady state; ``--warm 1``: cold)."""
    wrk(
        "warm",
        f"{server.base}/data/core/ode/{lib['container']}/decisions",
        method="POST",
        headers={**lib["headers"], "Content-Type": DECIDE_TYPE},
        body=lib["request"],
        lua=EVERY_IDENTITY,
        seconds=seconds,
        connections=20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=20, help="per node")
    parser.add_argument(
        "--compare-src", type=Path, help="another checkout's src: its one-node rows too"
    )
    parser.add_argument(
        "--warm",
        type=int,
        default=8,
        help="seconds of decisions for every identity in turn before measuring (1: cold caches)",
    )
    parser.add_argument(
        "--sqlite-profile-cache-off",
        action="store_true",
        help="a SQLite row with the profile cache off (NEXTOFFER_PROFILE_CACHE_MB=0)",
    )
    parser.add_argument(
        "--sockets",
        action="store_true",
        help="a PostgreSQL + Redis row reaching both through their Unix sockets",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="each node on core 0; PostgreSQL, Redis and wrk on the other cores",
    )
    parser.add_argument("--plot-from", type=Path, help="a saved table to draw (no run)")
    parser.add_argument("--plot", type=Path, help="with --plot-from: the PNG to write")
    args = parser.parse_args()
    if args.plot_from is not None:
        plot_table(args.plot_from, args.plot or args.plot_from.with_suffix(".png"))
        return

    node_cpus: set[int] | None = None
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            parser.error("--pin needs two cores or more")
        node_cpus = {cores[0]}
        # Inherited by everything started from here on but the nodes: the servers, wrk.
        os.sched_setaffinity(0, set(cores[1:]))
    services = start_services()
    folder = scratch_dir("nextoffer-bench-nodes-")
    servers: list[Server] = []
    try:
        pg_admin = services["NEXTOFFER_TEST_POSTGRES_URL"]
        subprocess.run(["psql", pg_admin, "-qc", "CREATE DATABASE bench"], check=True)
        pg_url = database(pg_admin, "bench")
        redis_url = services["NEXTOFFER_TEST_REDIS_URL"]
        pg_socket_url = database(services["NEXTOFFER_TEST_POSTGRES_SOCKET_URL"], "bench")
        redis_socket_url = services["NEXTOFFER_TEST_REDIS_SOCKET_URL"]
        sqlite_url = f"sqlite:///{folder / 'bench.db'}"
        print("building the libraries ...", flush=True)
        sqlite_lib = build(sqlite_url)
        pg_lib = build(pg_url)

        def server(url: str, **env: str) -> Server:
            started = Server(
                url,
                env={"NEXTOFFER_METRICS": "0", "NEXTOFFER_ACCESS_LOG": "0", **env},
                cpus=node_cpus,
            )
            servers.append(started)
            return started

        sqlite_node = server(sqlite_url)
        pg_node = server(pg_url)
        redis_a = server(pg_url, NEXTOFFER_REDIS=redis_url)
        redis_b = None if args.pin else server(pg_url, NEXTOFFER_REDIS=redis_url)
        one_node = [
            ("sqlite, 1 node (reference)", sqlite_node, sqlite_lib),
            ("postgres, 1 node", pg_node, pg_lib),
            ("postgres+redis, 1 node", redis_a, pg_lib),
        ]
        if args.sockets:
            one_node.append(
                (
                    "postgres+redis, 1 node, Unix sockets",
                    server(pg_socket_url, NEXTOFFER_REDIS=redis_socket_url),
                    pg_lib,
                )
            )
        if args.sqlite_profile_cache_off:
            one_node.append(
                (
                    "sqlite, 1 node, profile cache off",
                    server(sqlite_url, NEXTOFFER_PROFILE_CACHE_MB="0"),
                    sqlite_lib,
                )
            )
        if args.compare_src is not None:
            other = str(args.compare_src.resolve())
            label = args.compare_src.parent.name or str(args.compare_src)
            # A database of its own, built and migrated by the other checkout (a database
            # migrated further than a checkout knows is refused by it).
            subprocess.run(["psql", pg_admin, "-qc", "CREATE DATABASE bench_other"], check=True)
            other_url = database(pg_admin, "bench_other")
            other_lib = build_with(other, other_url)
            one_node += [
                (f"postgres, 1 node ({label})", server(other_url, PYTHONPATH=other), other_lib),
                (
                    f"postgres+redis, 1 node ({label})",
                    server(other_url, PYTHONPATH=other, NEXTOFFER_REDIS=redis_url),
                    other_lib,
                ),
            ]
        for _, node, lib in one_node:
            warm(node, lib, seconds=args.warm)
        if redis_b is not None:
            warm(redis_b, pg_lib, seconds=args.warm)

        rows: dict[str, list[tuple[float, float, float, int, float]]] = {}
        kw = {"seconds": args.seconds, "connections": args.connections}
        load_before = os.getloadavg()
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
            # Each repeat starts one row further on: no row always runs first or last (the
            # capped offers fill up as the run goes on, and the load drifts).
            shift = repeat % len(one_node)
            for name, node, lib in one_node[shift:] + one_node[:shift]:
                cpu = node.cpu_seconds()
                r = decisions(node, lib, **kw)
                cpu = node.cpu_seconds() - cpu
                rows.setdefault(name, []).append(
                    (r.requests_per_s, r.p50_ms, r.p99_ms, r.errors, _per_decision(cpu, r))
                )
                time.sleep(1)
            if redis_b is None:
                continue
            cpu = redis_a.cpu_seconds() + redis_b.cpu_seconds()
            with ThreadPoolExecutor(max_workers=2) as pool:
                both = list(pool.map(lambda n: decisions(n, pg_lib, **kw), (redis_a, redis_b)))
            cpu = redis_a.cpu_seconds() + redis_b.cpu_seconds() - cpu
            total = sum(r.requests_per_s for r in both)
            rows.setdefault("postgres+redis, 2 nodes", []).append(
                (
                    total,
                    max(r.p50_ms for r in both),
                    max(r.p99_ms for r in both),
                    sum(r.errors for r in both),
                    _per_decision(cpu, *both),
                )
            )
            time.sleep(1)
        load_after = os.getloadavg()

        reference_rows = rows["sqlite, 1 node (reference)"]
        reference = statistics.median(v[0] for v in reference_rows)
        print()
        print(
            f"{machine()}; {args.connections} connections per node, {args.seconds} s per row, "
            f"median of {args.repeats}; load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
            + (f"; nodes on core {min(node_cpus)}, the rest on the others" if node_cpus else "")
        )
        print()
        print(
            "| setup | decisions/s | vs reference | vs reference, per repeat | p50 ms | p99 ms "
            "| errors | node CPU µs |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, values in rows.items():
            rps = statistics.median(v[0] for v in values)
            p50 = statistics.median(v[1] for v in values)
            p99 = statistics.median(v[2] for v in values)
            errors = sum(v[3] for v in values)
            cpu_us = statistics.median(v[4] for v in values)
            ratio = rps / reference
            # The same repeat's reference: the machine's drift over the run cancels out.
            paired = statistics.median(
                v[0] / ref[0] for v, ref in zip(values, reference_rows, strict=True)
            )
            print(
                f"| {name} | {rps:,.0f} | {ratio:.2f}× | {paired:.2f}× | {p50:.1f} | {p99:.1f} "
                f"| {errors} | {cpu_us:,.0f} |"
            )
    finally:
        for started in servers:
            started.stop()
        subprocess.run([str(SERVICES), "stop", services["NEXTOFFER_SERVICES_DIR"]], check=False)


def plot_table(table: Path, out: Path) -> None:
    """Draw a printed table (this script's output, saved) as two bar charts: decisions/s
    against the reference, and the node's CPU µs per decision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for line in table.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        # 8 cells, or 7 in a table printed before the per-repeat ratio was added
        if len(cells) in (7, 8) and cells[2].endswith("×"):
            rows.append((cells[0], float(cells[2][:-1]), float(cells[-1].replace(",", ""))))
    names = [r[0] for r in rows][::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 1.5), sharey=True)
    left.barh(names, [r[1] for r in rows][::-1], color="#4878a8")
    left.axvline(0.8, color="#c44", linestyle="--", linewidth=1)
    left.set_xlabel("decisions/s ÷ the SQLite node's (goal: 0.8)")
    right.barh(names, [r[2] for r in rows][::-1], color="#6a9f58")
    right.set_xlabel("node CPU µs per decision")
    fig.suptitle(table.stem)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


def _per_decision(cpu: float, *results: Result) -> float:
    """The nodes' CPU µs per decision over the measured window (wrk's request count)."""
    return cpu * 1e6 / max(1, sum(r.requests for r in results))


if __name__ == "__main__":
    main()

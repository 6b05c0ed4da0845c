"""The kernel's share of a recorded decision: syscalls per decision, by kind and by cause.

    .venv/bin/python bench/syscalls.py [--seconds 4] [--repeats 3] [--baseline OTHER/src]
    .venv/bin/python bench/syscalls.py --attribute [--seconds 1.5] [--baseline OTHER/src]
    .venv/bin/python bench/syscalls.py --http [--seconds 6] [--repeats 3] [--baseline OTHER/src]

Two children run the whole ASGI app in process on one SQLite database, as two workers of
a server do (``asgi_decide.py``'s app, library, profiles and request: 100 offers, a third
capped, 10,000 profiles, every decision recorded), each from 50 tasks, for the whole run.
Each child makes one ``getppid`` per decision answered (nothing else in the app calls it),
so a window of the kernel's counters divides by the decisions made in it.

By default ``perf stat`` counts one child's syscalls (every thread: the loop, the WAL
checkpointer) over ``--seconds`` once both are warm: per decision by kind, and the child's
CPU per decision. With ``--baseline``, each repeat runs this tree's pair and then the
other tree's pair, each on a database its own code built (a tree refuses a newer schema).

``--attribute`` traces one child with ``strace -f`` instead, while every SQLite connection
of both children reports each statement it starts to ``/dev/null`` (a ``write`` that shows
in the trace): each syscall is charged to the statement the thread last started, and the
WAL frames each commit wrote (a frame header names its page) to the b-tree that owns the
page (SQLite's ``dbstat`` table, read afterwards). ``strace`` slows the traced child about
tenfold, so its batches are larger than under load: read per-batch figures per batch.

``--http`` runs each tree's database under a 2-worker server (``httpbench.Server``) and
wrk at 50 connections instead (``http_decisions.py``'s decisions), ``perf stat`` on both
workers, per decision answered; ``read``, ``write`` and most ``epoll_pwait`` are uvicorn's,
as for a bare request. The server's CPU per decision is then paid for the tracepoints too.

Needs Linux with ``perf`` and ``strace`` and the right to trace (root, or
``kernel.perf_event_paranoid`` <= 1 and ``ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import collections
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from scratch import scratch_dir

HERE = Path(__file__).resolve().parent
#: What the table shows (the kernel's names); ``getppid`` is the decision counter.
KINDS = ("pread64", "pwrite64", "fcntl", "getpid", "flock", "fdatasync", "futex", "epoll_pwait")


def child(args: argparse.Namespace) -> None:
    """One worker: the app on ``args.db``, decisions from 50 tasks until ``args.seconds``."""
    if args.mark:
        _mark_statements()
    import uvloop
    from http_decisions import DECIDE_TYPE, PROFILES

    from nextoffer.api.app import create_app
    from nextoffer.settings import Settings

    lib = json.loads(Path(args.lib).read_text())
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the access log's sink
    app = create_app(Settings.from_env(db_url=args.db))
    headers = [(k.lower().encode(), v.encode()) for k, v in lib["headers"].items()]
    headers.append((b"content-type", DECIDE_TYPE.encode()))
    path = f"/data/core/ode/{lib['container']}/decisions"
    rng = random.Random(os.getpid())

    async def decide() -> int:
        body = lib["request"].replace("__N__", str(rng.randrange(PROFILES))).encode()
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                *headers,
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)
        os.getppid()  # the decision counter
        return status

    async def main() -> None:
        startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        done: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        await startup.put({"type": "lifespan.startup"})

        async def send_life(message: MutableMapping[str, Any]) -> None:
            await done.put(message)

        life_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        life = asyncio.ensure_future(app(life_scope, startup.get, send_life))
        await done.get()
        deadline = time.monotonic() + args.seconds
        bad = 0

        async def worker() -> None:
            nonlocal bad
            while time.monotonic() < deadline:
                if await decide() != 200:
                    bad += 1

        Path(args.ready).touch()
        await asyncio.gather(*(worker() for _ in range(50)))
        await startup.put({"type": "lifespan.shutdown"})
        await done.get()
        await life
        if bad:
            raise SystemExit(f"{bad} decisions did not answer 200")

    uvloop.run(main())


def _mark_statements() -> None:
    """Every SQLite connection of this process writes each statement it starts to
    /dev/null, where ``strace`` sees it."""
    sink = os.open(os.devnull, os.O_WRONLY)
    connect = sqlite3.connect

    def marked(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: os.write(sink, b"SQL " + sql[:70].encode()))
        return conn

    sqlite3.connect = marked  # type: ignore[assignment]
    sqlite3.dbapi2.connect = marked  # type: ignore[assignment]


def _env(src: str | None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, str(HERE)) if p)}


def pair(place: Path, src: str | None, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """Two children on a fresh copy of ``place``'s database; one of them traced."""
    db = _fresh_copy(place)
    ready = [place / f"ready-{n}" for n in range(2)]
    for flag in ready:
        flag.unlink(missing_ok=True)
    command = [
        *(sys.executable, __file__, "--child", "--db", f"sqlite:///{db}"),
        *("--lib", str(place / "lib.json"), "--seconds", str(args.warm + args.seconds + 5)),
        *(("--mark",) if args.attribute else ()),
    ]
    children = [
        subprocess.Popen([*command, "--ready", str(flag)], env=_env(src), stderr=subprocess.PIPE)
        for flag in ready
    ]
    try:
        while not all(flag.exists() for flag in ready):
            if any(c.poll() is not None for c in children):
                raise RuntimeError("a child stopped before it was ready")
            time.sleep(0.05)
        time.sleep(args.warm)
        pid = children[0].pid
        if args.attribute:
            tracer = ["strace", "-f", "-s", "80", "-p", str(pid), "-o", str(out)]
        else:
            events = ",".join(f"syscalls:sys_enter_{k}" for k in (*KINDS, "getppid"))
            events += ",raw_syscalls:sys_enter"
            tracer = ["perf", "stat", "-x", ",", "-e", events, "-p", str(pid), "-o", str(out)]
        trace = subprocess.Popen(tracer, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        cpu = _cpu_seconds(pid)
        time.sleep(args.seconds)
        cpu = _cpu_seconds(pid) - cpu
        trace.send_signal(signal.SIGINT)
        trace.wait()
    finally:
        for c in children:
            _, err = c.communicate()
            if c.returncode:
                raise RuntimeError(err.decode()[-2000:])
    if args.attribute:
        return {}
    counts = _counts(out)
    decisions = counts.pop("getppid", 0)
    if not decisions:
        raise RuntimeError("no decision in the window")
    per = {kind: n / decisions for kind, n in counts.items() if kind != "all"}
    per["all syscalls"] = counts.get("all", 0) / decisions - 1  # the getppid
    per["CPU µs"] = cpu / decisions * 1e6
    return per


def _fresh_copy(place: Path) -> Path:
    """A copy of ``place``'s built database, as built."""
    db = place / "run.db"
    for suffix in ("", "-wal", "-shm", "-writer.lock"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(place / "bench.db") as source, sqlite3.connect(db) as copy:
        source.backup(copy)
    return db


def over_http(place: Path, src: str | None, args: argparse.Namespace) -> dict[str, float]:
    """A 2-worker server on a fresh copy of ``place``'s database; wrk at 50 connections for
    ``--seconds`` while ``perf stat`` counts both workers; per decision answered."""
    from http_decisions import run_row
    from httpbench import Server

    lib = json.loads((place / "lib.json").read_text())
    server = Server(f"sqlite:///{_fresh_copy(place)}", workers=2, env=_env(src))
    try:
        run_row(server, lib, "POST decisions", 50, 3)  # warm: snapshots, caches, the WAL
        found = subprocess.run(
            ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=True
        )
        workers = [
            pid
            for pid in found.stdout.split()
            if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()
        ]
        out = place / "perf-http.txt"
        events = ",".join(f"syscalls:sys_enter_{k}" for k in (*KINDS, "read", "write"))
        events += ",raw_syscalls:sys_enter"
        perf = ["perf", "stat", "-x", ",", "-e", events, "-p", ",".join(workers), "-o", str(out)]
        trace = subprocess.Popen(perf, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        cpu = server.cpu_seconds()
        result = run_row(server, lib, "POST decisions", 50, int(args.seconds))
        cpu = server.cpu_seconds() - cpu
        trace.send_signal(signal.SIGINT)
        trace.wait()
    finally:
        server.stop()
    counts = _counts(out)
    per = {kind: n / result.requests for kind, n in counts.items() if kind != "all"}
    per["all syscalls"] = counts.get("all", 0) / result.requests
    per["CPU µs"] = cpu / result.requests * 1e6
    per["decisions/s"] = result.requests_per_s
    per["p99 ms"] = result.p99_ms
    return per


def _counts(out: Path) -> dict[str, int]:
    """``perf stat -x ,``'s counts by syscall (``all`` for every syscall)."""
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit() and "sys_enter" in fields[2]:
            kind = fields[2].split("sys_enter_")[1] if "sys_enter_" in fields[2] else "all"
            counts[kind] = int(fields[0])
    return counts


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def attribute(trace: Path, db: Path) -> None:
    """Syscalls per decision by thread and statement; WAL frames per commit by b-tree."""
    lines = trace.read_text().splitlines()
    main = next(line.split()[0] for line in lines if " getppid(" in line)
    started: dict[str, str] = {}
    charged: collections.Counter[tuple[str, str, str]] = collections.Counter()
    decisions = 0
    batches: list[list[int]] = []
    frames: list[int] | None = None
    with sqlite3.connect(db) as conn:
        owner = {
            page: f"{name} ({kind})"
            for page, name, kind in conn.execute("SELECT pageno, name, pagetype FROM dbstat")
        }
    for line in lines:
        tid, _, rest = line.partition(" ")
        rest = rest.lstrip()
        call = rest.split("(", 1)[0]
        if not call.isidentifier() or rest.startswith("<..."):
            continue
        if call == "getppid":
            decisions += tid == main
            continue
        if call == "write" and '"SQL ' in rest:
            sql = rest.split('"SQL ', 1)[1][:60].split('"')[0]
            started[tid] = sql
            if tid == main:
                if frames is not None:
                    batches.append(frames)
                frames = [] if sql.startswith("COMMIT") else None
            continue
        what = call
        if call == "fcntl":
            lock = re.search(r"l_type=F_(\w+).*l_start=(\d+)", rest)
            what = f"fcntl {lock.group(1)} byte {lock.group(2)}" if lock else call
        header = re.match(r'pwrite64\(\d+, "(.*)", 24, \d+\)', rest)
        if header and tid == main and frames is not None:
            frames.append(int.from_bytes(ast.literal_eval(f'b"{header.group(1)}"')[:4], "big"))
        thread = "loop" if tid == main else "other thread"
        charged[(thread, started.get(tid, "(before any statement)"), what)] += 1
    print(f"{decisions} decisions answered in the window; per decision:")
    print("| thread | statement last started | syscall | per decision |\n|---|---|---|---:|")
    for (thread, sql, what), n in charged.most_common():
        if n / decisions >= 0.01:
            print(f"| {thread} | `{sql}` | {what} | {n / decisions:.2f} |")
    if batches:
        pages = collections.Counter(owner.get(page, "?") for batch in batches for page in batch)
        print(
            f"\n{len(batches)} commits of the loop, {decisions / len(batches):.1f} decisions "
            f"and {sum(map(len, batches)) / len(batches):.1f} WAL frames each; per commit:"
        )
        print("| b-tree (page kind) | frames per commit |\n|---|---:|")
        for name, n in pages.most_common():
            print(f"| {name} | {n / len(batches):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--warm", type=float, default=4, help="seconds before the window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="another tree's src/ to compare with (PYTHONPATH)")
    parser.add_argument("--attribute", action="store_true", help="strace: by statement")
    parser.add_argument("--http", action="store_true", help="a 2-worker server under wrk")
    parser.add_argument("--workdir", help="keep the databases here and reuse them")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mark", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--lib", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.child:
        child(args)
        return
    if args.build:
        from http_decisions import build

        lib = build(f"sqlite:///{Path(args.build) / 'bench.db'}")
        (Path(args.build) / "lib.json").write_text(json.dumps(lib))
        return
    workdir = scratch_dir("nextoffer-syscalls-", keep=args.workdir)
    trees: dict[str, str | None] = {"this tree": None}
    if args.baseline:
        trees["baseline"] = args.baseline
    places = {}
    for n, (name, src) in enumerate(trees.items()):
        place = workdir / f"tree-{n}"
        place.mkdir(parents=True, exist_ok=True)
        if not (place / "lib.json").exists():
            print(f"building the library and 10,000 profiles ({name}) …", flush=True)
            command = [sys.executable, __file__, "--build", str(place)]
            subprocess.run(command, env=_env(src), check=True)
        places[name] = place
    if args.attribute:
        for name, src in trees.items():
            print(f"\n#### {name}\n")
            place = places[name]
            pair(place, src, args, place / "strace.txt")
            attribute(place / "strace.txt", place / "run.db")
        return
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, src in trees.items():
            if args.http:
                rows[name].append(over_http(places[name], src, args))
            else:
                rows[name].append(pair(places[name], src, args, places[name] / "perf.txt"))
        load.append(os.getloadavg()[0])
    print(f"load average (1 min) over the run: {min(load):.2f}–{max(load):.2f}")
    if args.http:
        print(f"per decision, medians of {args.repeats} wrk rows of {int(args.seconds)} s")
        columns = ["decisions/s", "p99 ms", "CPU µs", "all syscalls", *KINDS, "read", "write"]
    else:
        print(f"per decision, medians of {args.repeats} windows of {args.seconds} s (one child)")
        columns = ["CPU µs", "all syscalls", *KINDS]
    print("| tree | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name, per in rows.items():
        medians = [statistics.median(r.get(c, 0.0) for r in per) for c in columns]
        print(f"| {name} | " + " | ".join(f"{m:.2f}" for m in medians) + " |")


if __name__ == "__main__":
    main()

"""CPU time of one PostgreSQL read with psycopg: blocking, and awaited on an event loop.

    .venv/bin/python bench/pg_reads.py [--reads 5000] [--repeats 3]

Starts its own PostgreSQL (``scripts/services start``) and runs a one-row prepared
``SELECT`` (the shape of the decision path's profile read) ``--reads`` times:

* ``blocking`` — ``psycopg.Connection`` in this thread (what ``PgPath`` does in a pool
  thread);
* ``asyncio``/``uvloop``, 1 or 20 at a time — ``psycopg.AsyncConnection``s (4, shared as
  an asynchronous decision path would share them) awaited on the loop.

It prints the process's CPU time (user + system) per read, the median of the repeats: the
cost a read adds to the node's CPU per decision, whatever the machine's load (the time
spent waiting for the server is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import uvloop

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"
SQL = "SELECT %s::text, %s::text WHERE %s::int >= 0"


def blocking(url: str, reads: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.process_time()
        for n in range(reads):
            conn.execute(SQL, ("a", "b", n)).fetchone()
        return (time.process_time() - started) / reads


async def awaited(url: str, reads: int, at_once: int) -> float:
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(4)]
    idle: asyncio.Queue[psycopg.AsyncConnection[object]] = asyncio.Queue()
    for conn in conns:
        idle.put_nowait(conn)

    async def one(n: int) -> None:
        conn = await idle.get()
        try:
            await (await conn.execute(SQL, ("a", "b", n))).fetchone()
        finally:
            idle.put_nowait(conn)

    started = time.process_time()
    for first in range(0, reads, at_once):
        await asyncio.gather(*(one(n) for n in range(first, first + at_once)))
    spent = (time.process_time() - started) / reads
    for conn in conns:
        await conn.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = subprocess.run(
        [str(SERVICES), "start"], check=True, capture_output=True, text=True
    ).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    url = env["NEXTOFFER_TEST_POSTGRES_URL"]
    runs: dict[str, Callable[[], float]] = {
        "blocking": lambda: blocking(url, args.reads),
        "asyncio, 1 at a time": lambda: asyncio.run(awaited(url, args.reads, 1)),
        "asyncio, 20 at a time": lambda: asyncio.run(awaited(url, args.reads, 20)),
        "uvloop, 1 at a time": lambda: _uvloop(awaited(url, args.reads, 1)),
        "uvloop, 20 at a time": lambda: _uvloop(awaited(url, args.reads, 20)),
    }
    try:
        results: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():  # interleaved: the load drifts alike for all
                results[name].append(run())
        print(f"{args.reads} reads, median of {args.repeats}")
        print("| read | CPU µs per read |")
        print("|---|---:|")
        for name, values in results.items():
            print(f"| {name} | {statistics.median(values) * 1e6:.0f} |")
    finally:
        subprocess.run([str(SERVICES), "stop", env["NEXTOFFER_SERVICES_DIR"]], check=False)


def _uvloop(coroutine: Awaitable[float]) -> float:
    return uvloop.run(coroutine)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()

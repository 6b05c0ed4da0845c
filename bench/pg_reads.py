"""CPU time of one PostgreSQL read, and of a batch's rows, per driver: psycopg blocking,
psycopg awaited, asyncpg awaited.

    .venv/bin/python bench/pg_reads.py [--reads 5000] [--repeats 3] [--batch 20]

Starts its own PostgreSQL (``scripts/services start``) and runs, interleaved per repeat:

* reads — a one-row prepared ``SELECT`` (the shape of the decision path's profile read)
  ``--reads`` times:

  * ``psycopg, blocking`` — ``psycopg.Connection`` in this thread (what ``PgPath`` does in
    a pool thread);
  * ``psycopg, asyncio``/``uvloop``, 1 or 20 at a time — ``psycopg.AsyncConnection``s (4,
    shared as an asynchronous decision path would share them) awaited on the loop;
  * ``asyncpg, asyncio``/``uvloop``, 1 or 20 at a time — the same with asyncpg
    connections (its protocol is written in Cython; statements prepared and cached).

* batch rows — ``--reads`` rows of a decision event's shape inserted ``--batch`` per
  transaction (what the group-commit writer does): psycopg's ``executemany`` (pipelined),
  and asyncpg's ``executemany`` in a transaction.

It prints the process's CPU time (user + system) per read or per row, the median of the
repeats: the cost each adds to the node's CPU per decision, whatever the machine's load
(the time spent waiting for the server is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import uvloop

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"
SQL = "SELECT %s::text, %s::text WHERE %s::int >= 0"
SQL_ASYNCPG = "SELECT $1::text, $2::text WHERE $3::int >= 0"
TABLE = "CREATE UNLOGGED TABLE IF NOT EXISTS bench_rows (id text PRIMARY KEY, body text)"
ROW = "INSERT INTO bench_rows (id, body) VALUES (%s, %s)"
ROW_ASYNCPG = "INSERT INTO bench_rows (id, body) VALUES ($1, $2)"
BODY = '{"propositionId": "x", "propositions": [' + ", ".join(['{"id": "offer"}'] * 3) + "]}"
_rows = 0


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

    spent = await _timed(reads, at_once, one)
    for conn in conns:
        await conn.close()
    return spent


async def awaited_asyncpg(url: str, reads: int, at_once: int) -> float:
    conns = [await asyncpg.connect(url) for _ in range(4)]
    idle: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
    for conn in conns:
        idle.put_nowait(conn)

    async def one(n: int) -> None:
        conn = await idle.get()
        try:
            await conn.fetchrow(SQL_ASYNCPG, "a", "b", n)
        finally:
            idle.put_nowait(conn)

    spent = await _timed(reads, at_once, one)
    for conn in conns:
        await conn.close()
    return spent


async def _timed(reads: int, at_once: int, one: Callable[[int], Awaitable[None]]) -> float:
    started = time.process_time()
    for first in range(0, reads, at_once):
        await asyncio.gather(*(one(n) for n in range(first, first + at_once)))
    return (time.process_time() - started) / reads


def _batches(rows: int, batch: int) -> list[list[tuple[str, str]]]:
    global _rows
    out = []
    for first in range(0, rows, batch):
        out.append([(f"r{_rows + n}", BODY) for n in range(first, min(rows, first + batch))])
    _rows += rows
    return out


def written_blocking(url: str, rows: int, batch: int) -> float:
    batches = _batches(rows, batch)
    with psycopg.connect(url) as conn:
        started = time.process_time()
        for chunk in batches:
            with conn.cursor() as cursor:
                cursor.executemany(ROW, chunk)
            conn.commit()
        return (time.process_time() - started) / rows


async def written_asyncpg(url: str, rows: int, batch: int) -> float:
    batches = _batches(rows, batch)
    conn = await asyncpg.connect(url)
    started = time.process_time()
    for chunk in batches:
        async with conn.transaction():
            await conn.executemany(ROW_ASYNCPG, chunk)
    spent = (time.process_time() - started) / rows
    await conn.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=20, help="rows per write transaction")
    args = parser.parse_args()
    out = subprocess.run(
        [str(SERVICES), "start"], check=True, capture_output=True, text=True
    ).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    url = env["NEXTOFFER_TEST_POSTGRES_URL"]
    n = args.reads
    runs: dict[str, Callable[[], float]] = {
        "read: psycopg, blocking": lambda: blocking(url, n),
        "read: psycopg, asyncio, 1 at a time": lambda: asyncio.run(awaited(url, n, 1)),
        "read: psycopg, asyncio, 20 at a time": lambda: asyncio.run(awaited(url, n, 20)),
        "read: psycopg, uvloop, 1 at a time": lambda: _uvloop(awaited(url, n, 1)),
        "read: psycopg, uvloop, 20 at a time": lambda: _uvloop(awaited(url, n, 20)),
        "read: asyncpg, asyncio, 1 at a time": lambda: asyncio.run(awaited_asyncpg(url, n, 1)),
        "read: asyncpg, asyncio, 20 at a time": lambda: asyncio.run(awaited_asyncpg(url, n, 20)),
        "read: asyncpg, uvloop, 1 at a time": lambda: _uvloop(awaited_asyncpg(url, n, 1)),
        "read: asyncpg, uvloop, 20 at a time": lambda: _uvloop(awaited_asyncpg(url, n, 20)),
        f"row, {args.batch} a batch: psycopg, blocking": lambda: written_blocking(
            url, n, args.batch
        ),
        f"row, {args.batch} a batch: asyncpg, uvloop": lambda: _uvloop(
            written_asyncpg(url, n, args.batch)
        ),
    }
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(TABLE)
        results: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():  # interleaved: the load drifts alike for all
                results[name].append(run())
        print(f"{n} reads or rows, median of {args.repeats}")
        print("| operation | CPU µs each |")
        print("|---|---:|")
        for name, values in results.items():
            print(f"| {name} | {statistics.median(values) * 1e6:.0f} |")
    finally:
        subprocess.run([str(SERVICES), "stop", env["NEXTOFFER_SERVICES_DIR"]], check=False)


def _uvloop(coroutine: Coroutine[Any, Any, float]) -> float:
    return uvloop.run(coroutine)


if __name__ == "__main__":
    main()

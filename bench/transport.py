"""What one round trip to PostgreSQL and to Redis costs, over loopback TCP and over the
servers' Unix sockets: CPU µs on the client's side and on the server's.

    .venv/bin/python bench/transport.py [--round-trips 5000] [--repeats 5]

Starts its own PostgreSQL and Redis (``scripts/services start``) and, per repeat and
transport in turn, makes ``--round-trips`` sequential round trips on one connection
through the drivers a server worker's decisions use on its event loop (uvloop): asyncpg's
prepared ``SELECT $1::int``, redis-py's asyncio ``PING``. The client's CPU is this
process's (``time.process_time``), the server's that of the backend or Redis process
(``/proc/PID/stat``); both ÷ round trips, medians over repeats. One caller waiting on each
answer leaves its loop idle in between, so the client's figure includes a wake-up per
round trip, as for a worker with nothing else to do; a busy worker pays less of that.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
import uvloop
from httpbench import process_cpu_seconds
from sqlalchemy.engine import make_url

from nextoffer.storage.pg_path import conninfo
from nodes import SERVICES, start_services

WARM = 200


async def timed(
    server_pid: int, once: Callable[[], Awaitable[object]], n: int
) -> tuple[float, float]:
    """(client µs, server µs) per call of ``once``, after a warm-up."""
    for _ in range(WARM):
        await once()
    server, client = process_cpu_seconds(server_pid), time.process_time()
    for _ in range(n):
        await once()
    return (
        (time.process_time() - client) / n * 1e6,
        (process_cpu_seconds(server_pid) - server) / n * 1e6,
    )


async def postgres(url: str, n: int) -> tuple[float, float]:
    conn = await asyncpg.connect(conninfo(make_url(url)))
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        return await timed(backend, lambda: conn.fetchval("SELECT $1::int", 1), n)
    finally:
        await conn.close()


async def redis(url: str, n: int, server_pid: int) -> tuple[float, float]:
    client = aioredis.Redis.from_url(url)
    try:
        return await timed(server_pid, client.ping, n)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    services = start_services()
    try:
        folder = Path(services["NEXTOFFER_SERVICES_DIR"])
        redis_pid = int((folder / "redis" / "redis.pid").read_text())
        n = args.round_trips
        runs: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
            "PostgreSQL (asyncpg), TCP": lambda: postgres(
                services["NEXTOFFER_TEST_POSTGRES_URL"], n
            ),
            "PostgreSQL (asyncpg), Unix socket": lambda: postgres(
                services["NEXTOFFER_TEST_POSTGRES_SOCKET_URL"], n
            ),
            "Redis (redis-py asyncio), TCP": lambda: redis(
                services["NEXTOFFER_TEST_REDIS_URL"], n, redis_pid
            ),
            "Redis (redis-py asyncio), Unix socket": lambda: redis(
                services["NEXTOFFER_TEST_REDIS_SOCKET_URL"], n, redis_pid
            ),
        }
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
            for name, run in runs.items():
                rows[name].append(uvloop.run(run()))
    finally:
        subprocess.run([str(SERVICES), "stop", services["NEXTOFFER_SERVICES_DIR"]], check=False)
    print(f"\n{n:,} round trips per row and repeat, medians of {args.repeats}")
    print("| round trip | client CPU µs | server CPU µs |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        client = statistics.median(v[0] for v in values)
        server = statistics.median(v[1] for v in values)
        print(f"| {name} | {client:.1f} | {server:.1f} |")


if __name__ == "__main__":
    main()

"""Soak: mixed load at half the measured maximum for a long time; errors, latency, RSS, open
files, threads and database size.

1. Seed a tenant with the demo library and start ``nextoffer serve`` on loopback.
2. Measure the maximum: a closed loop of ``--concurrency`` clients sending the mix for
   ``--measure`` seconds; requests completed / seconds is the maximum rate.
3. Soak: an open loop at half that rate for ``--duration`` seconds. Each request is
   timed from the moment it was *scheduled*, so a stalled server shows up as latency
   (no coordinated omission). Every ``--interval`` seconds a row reports the count,
   errors, p50/p95/p99/max and the server's RSS, open file descriptors and threads (summed
   over its processes) and the SQLite database's size on disk (with its WAL), so a leak
   shows as a column that grows.

The mix: 80 % decisions (1,000 profiles), 15 % events (a new ``_id`` each), 5 % library
edits (a JSON Patch of an offer, which makes every process rebuild its compiled catalog).
Anything other than a 200 is an error. Load goes to 127.0.0.1 only.

    python bench/soak.py --duration 600          # the full soak (scripts/soak)
    python bench/soak.py --duration 60 --measure 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scratch import scratch_dir

from nextoffer.ids import format_datetime, utcnow
from support.live import (
    DECIDE_TYPE,
    PATCH_TYPE,
    LiveServer,
    decision_request,
    headers_of,
    make_tenant,
)


@dataclass
class Window:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    db_bytes: list[int] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)


class Mix:
    def __init__(self, base: str, creds, ids: dict[str, str]) -> None:
        self.base = base
        self.headers = headers_of(creds)
        self.container = creds.container_id
        self.ids = ids
        self.edits = 0

    def pick(self, rng: random.Random) -> tuple[str, str, str, dict[str, str], bytes]:
        roll = rng.random()
        email = f"user{rng.randrange(1000)}@example.com"
        if roll < 0.80:
            body = decision_request(self.ids, email)
            return (
                "decision",
                "POST",
                f"/data/core/ode/{self.container}/decisions",
                {**self.headers, "Content-Type": DECIDE_TYPE},
                json.dumps(body).encode(),
            )
        if roll < 0.95:
            event = {
                "identityMap": {"Email": [{"id": email}]},
                "timestamp": format_datetime(utcnow()),
                "eventType": "web.webpagedetails.pageViews",
                "_id": str(uuid.uuid4()),
                "web": {"webPageDetails": {"name": "home"}},
            }
            return (
                "event",
                "POST",
                "/data/core/nextoffer/events",
                {**self.headers, "Content-Type": "application/json"},
                json.dumps({"events": [event]}).encode(),
            )
        self.edits += 1
        ops = [{"op": "add", "path": "/_instance/xdm:description", "value": f"edit {self.edits}"}]
        return (
            "edit",
            "PATCH",
            f"/data/core/xcore/{self.container}/instances/{self.ids['holiday_offer@instance']}",
            {**self.headers, "Content-Type": PATCH_TYPE},
            json.dumps(ops).encode(),
        )


async def send(
    client: httpx.AsyncClient, mix: Mix, rng: random.Random, window_of, scheduled: float
) -> None:
    kind, method, path, headers, body = mix.pick(rng)
    try:
        response = await client.request(method, path, headers=headers, content=body)
        ok = response.status_code == 200
        detail = f"{kind} {response.status_code} {response.text[:200]}"
    except httpx.HTTPError as exc:
        ok, detail = False, f"{kind} {type(exc).__name__}: {exc}"
    window = window_of()
    window.latencies.append(time.monotonic() - scheduled)
    window.by_kind[kind] = window.by_kind.get(kind, 0) + 1
    if not ok:
        window.errors += 1
        if len(window.error_samples) < 5:
            window.error_samples.append(detail)


async def measure(base: str, mix: Mix, *, seconds: float, concurrency: int) -> float:
    rng = random.Random(1)
    done = 0
    window = Window()
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(
        base_url=base, timeout=10, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await send(client, mix, rng, lambda: window, time.monotonic())
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - start
    if window.errors:
        print(f"measure: {window.errors} errors, e.g. {window.error_samples}", file=sys.stderr)
    return done / elapsed


def resources(server: LiveServer) -> tuple[int, int]:
    """Open file descriptors and threads, summed over the server's processes."""
    import contextlib

    import psutil

    fds = threads = 0
    for pid in server.pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            fds += process.num_fds()
            threads += process.num_threads()
    return fds, threads


def db_size(path: Path) -> int:
    """The SQLite database's bytes on disk, its WAL and shared-memory files included."""
    return sum(
        p.stat().st_size
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        if p.exists()
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def soak(
    server: LiveServer,
    mix: Mix,
    *,
    rate: float,
    duration: float,
    interval: float,
    max_outstanding: int,
    db_path: Path,
) -> list[dict[str, float]]:
    rng = random.Random(2)
    windows: list[Window] = [Window()]
    rows: list[dict[str, float]] = []
    start = time.monotonic()
    outstanding: set[asyncio.Task[None]] = set()
    gate = asyncio.Semaphore(max_outstanding)

    async def paced(client: httpx.AsyncClient, scheduled: float) -> None:
        async with gate:
            await send(client, mix, rng, lambda: windows[-1], scheduled)

    def close_window(now: float) -> None:
        window = windows[-1]
        row = {
            "t_s": round(now - start),
            "requests": len(window.latencies),
            "errors": window.errors,
            "p50_ms": round(pct(window.latencies, 0.50), 2),
            "p95_ms": round(pct(window.latencies, 0.95), 2),
            "p99_ms": round(pct(window.latencies, 0.99), 2),
            "max_ms": round(max(window.latencies, default=0) * 1000, 2),
            "rss_mib": round(statistics.fmean(window.rss) / 2**20, 1)
            if window.rss
            else float("nan"),
            "fds": max(window.fds, default=-1),
            "threads": max(window.threads, default=-1),
            "db_mib": round(max(window.db_bytes, default=0) / 2**20, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if window.error_samples:
            print("  errors:", window.error_samples, flush=True)
        windows.append(Window())

    async with httpx.AsyncClient(
        base_url=mix.base, timeout=10, limits=httpx.Limits(max_connections=max_outstanding)
    ) as client:
        period = 1.0 / rate
        next_send = start
        next_window = start + interval
        next_rss = start
        while True:
            now = time.monotonic()
            if now >= next_rss:
                windows[-1].rss.append(server.rss_bytes())
                fds, threads = resources(server)
                windows[-1].fds.append(fds)
                windows[-1].threads.append(threads)
                windows[-1].db_bytes.append(db_size(db_path))
                next_rss += 5
            if now >= next_window:
                close_window(now)
                next_window += interval
            if now - start >= duration:
                break
            while next_send <= now:
                task = asyncio.create_task(paced(client, next_send))
                outstanding.add(task)
                task.add_done_callback(outstanding.discard)
                next_send += period
            await asyncio.sleep(max(0.0, min(next_send, next_window, next_rss) - time.monotonic()))
        if outstanding:
            await asyncio.gather(*outstanding)
        if windows[-1].latencies:
            close_window(time.monotonic())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="soak seconds (default 600)")
    parser.add_argument("--measure", type=float, default=15, help="seconds to measure the maximum")
    parser.add_argument("--concurrency", type=int, default=16, help="clients while measuring")
    parser.add_argument("--interval", type=float, default=60, help="seconds per report row")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument(
        "--fraction", type=float, default=0.5, help="share of the maximum to soak at"
    )
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()

    workdir = scratch_dir("nextoffer-soak-")
    db_url = f"sqlite:///{workdir / 'soak.db'}"
    creds, ids = make_tenant(db_url, "SOAK@AdobeOrg", "prod", seed=True)
    server = LiveServer(db_url, workdir=workdir, workers=args.workers).start()
    try:
        mix = Mix(server.base, creds, ids)
        maximum = asyncio.run(
            measure(server.base, mix, seconds=args.measure, concurrency=args.concurrency)
        )
        rate = maximum * args.fraction
        print(
            f"maximum {maximum:.0f} req/s "
            f"(closed loop, {args.concurrency} clients, {args.measure:.0f} s); "
            f"soaking at {rate:.0f} req/s for {args.duration:.0f} s",
            flush=True,
        )
        rows = asyncio.run(
            soak(
                server,
                mix,
                rate=rate,
                duration=args.duration,
                interval=args.interval,
                max_outstanding=64,
                db_path=workdir / "soak.db",
            )
        )
    finally:
        server.stop()
    errors = sum(r["errors"] for r in rows)
    total = sum(r["requests"] for r in rows)
    rss = [r["rss_mib"] for r in rows if r["rss_mib"] == r["rss_mib"]]
    sampled = [r for r in rows if r["fds"] >= 0]
    summary = {
        "maximum_rps": round(maximum),
        "rate_rps": round(rate),
        "duration_s": args.duration,
        "requests": total,
        "errors": errors,
        "rows": rows,
        "rss_first_mib": rss[0] if rss else None,
        "rss_last_mib": rss[-1] if rss else None,
        "fds_first_last": [sampled[0]["fds"], sampled[-1]["fds"]] if sampled else None,
        "threads_first_last": [sampled[0]["threads"], sampled[-1]["threads"]] if sampled else None,
        "db_mib_first_last": [sampled[0]["db_mib"], sampled[-1]["db_mib"]] if sampled else None,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

"""Search latency over HTTP on SQLite or PostgreSQL: 100,000 instances in one container.

Measures p50/p95 of property filters + sort + ``limit=20``, of ``q`` searches, of a
cursor walk, and of a primary-key ``GET`` of one instance (the reference, measured in the
same run; each case is also reported as a ratio to it), one request at a time over
loopback against one uvicorn worker. "CPU ms / request" is the user + system time the
server and (PostgreSQL) its database server spent per request: on a machine shared with
other work it is what the latency would be on a quiet one, give or take the waits.

    .venv/bin/python bench/search.py [--instances 100000] [--requests 300] [--db PATH]
    .venv/bin/python bench/search.py --backend postgresql [--postgres URL --meta PATH]

``--db PATH`` keeps the loaded SQLite database at PATH and reuses it on the next run
(loading 100,000 offers through the store takes minutes). ``--backend postgresql``
starts a throwaway PostgreSQL (``scripts/services``) and loads it; ``--postgres URL
--meta PATH`` uses a database you started instead and reuses it once loaded.
``--json PATH`` also writes the figures for ``bench/search_plot.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil
from httpbench import Server, machine
from rich.progress import Progress
from scratch import scratch_dir
from sqlalchemy.engine import make_url

from nextoffer.ids import IdFactory, epoch_micros, format_datetime
from nextoffer.repository.objects import PERSONALIZED_OFFER
from nextoffer.repository.records import Audit, InstanceRecord
from nextoffer.service.tenants import bootstrap
from nextoffer.storage.store import Store

SERVICES = Path(__file__).resolve().parents[1] / "scripts" / "services"
OM = "https://ns.adobe.com/experience/offer-management/"
WORDS = [
    "gold",
    "silver",
    "bronze",
    "platinum",
    "checking",
    "savings",
    "mortgage",
    "loan",
    "card",
    "travel",
    "rewards",
    "cashback",
    "spring",
    "summer",
    "autumn",
    "winter",
    "student",
    "family",
    "premium",
    "basic",
    "online",
    "branch",
    "mobile",
    "bonus",
]
STATUSES = ["approved", "draft", "archived"]


def offer_body(rng: random.Random, n: int, placement: str) -> dict:
    title = " ".join(rng.sample(WORDS, 3))
    start = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(365))
    return {
        "xdm:name": f"Offer {n} {title}",
        "xdm:status": rng.choice(STATUSES),
        "xdm:rank": {"xdm:priority": rng.randrange(100)},
        "xdm:selectionConstraint": {
            "xdm:startDate": format_datetime(start),
            "xdm:endDate": format_datetime(start + timedelta(days=90)),
        },
        "xdm:representations": [
            {
                "xdm:placement": placement,
                "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
                "xdm:components": [
                    {
                        "@type": OM + "content-component-html",
                        "dc:format": "text/html",
                        "xdm:content": f"<p>{' '.join(rng.sample(WORDS, 5))}</p>",
                    }
                ],
            }
        ],
        "xdm:characteristics": {"segment": rng.choice(WORDS), "code": f"C{n:06d}"},
        "xdm:tags": [],
    }


def load(db_url: str, container_id: str, count: int) -> tuple[str, float]:
    """Insert ``count`` offers through ``Session.insert_instances`` in batches of 2,000
    (instance, references, revision, search index, counts: what a create writes)."""
    rng = random.Random(7)
    ids = IdFactory(worker=1)
    store = Store.open(db_url)
    placement = "xcore:offer-placement:1"
    began = time.perf_counter()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    first = ""
    schema_id = PERSONALIZED_OFFER.schema_id
    with Progress() as progress:
        task = progress.add_task("loading offers", total=count)
        for batch_start in range(0, count, 2000):
            items: list[tuple[InstanceRecord, list[str]]] = []
            for n in range(batch_start, min(batch_start + 2000, count)):
                moment = base + timedelta(seconds=n)
                stamp = format_datetime(moment)
                body = offer_body(rng, n, placement)
                at_id = ids.at_id("personalized-offer", moment)
                instance_id = ids.instance_id(moment)
                body["@id"] = at_id
                audit = Audit(stamp, stamp, "bench@AdobeID", "bench@AdobeID", "bench", "bench")
                record = InstanceRecord(
                    instance_id=instance_id,
                    container_id=container_id,
                    schema_id=schema_id,
                    at_id=at_id,
                    etag=1,
                    audit=audit,
                    body=body,
                    created_us=epoch_micros(moment),
                    modified_us=epoch_micros(moment),
                )
                items.append((record, []))
                first = first or instance_id
            with store.session(write=True) as session:
                if store.dialect == "sqlite":
                    # A bulk load touches index pages all over the file: a bigger page
                    # cache keeps it fast (this connection only).
                    session.conn.exec_driver_sql("PRAGMA cache_size = -262144")
                session.insert_instances(items)
            progress.advance(task, len(items))
    elapsed = time.perf_counter() - began
    store.close()
    return first, elapsed


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and all their children."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
    return total


def database_pids(db_url: str) -> list[int]:
    """The PostgreSQL server listening on the URL's port (its backends are children)."""
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        return []
    port = url.port or 5432
    return [
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    ][:1]


def measure(
    client: httpx.Client, url: str, headers: dict, requests: int, pids: list[int]
) -> tuple[float, float, float, dict]:
    body: dict = {}
    for _ in range(10):  # warm-up: connections, caches, SQLite pages
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
    samples = []
    cpu_before = cpu_seconds(pids)
    for _ in range(requests):
        began = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    cpu_ms = (cpu_seconds(pids) - cpu_before) * 1000 / requests
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], cpu_ms, body


def prepare(db_url: str, meta_path: Path | None, instances: int) -> dict:
    """The loaded database's credentials and first instance (loading it the first time)."""
    if meta_path is not None and meta_path.exists():
        return dict(json.loads(meta_path.read_text()))
    store = Store.open(db_url)
    creds = bootstrap(store, org="BENCH@AdobeOrg", sandbox="prod", now=datetime.now(UTC))
    store.close()
    first, load_seconds = load(db_url, creds.container_id, instances)
    meta = {
        "container_id": creds.container_id,
        "first": first,
        "load_seconds": load_seconds,
        "instances": instances,
        "access_token": creds.access_token,
        "api_key": creds.api_key,
        "org": creds.org,
        "sandbox": creds.sandbox,
    }
    if meta_path is not None:
        meta_path.write_text(json.dumps(meta))
    return meta


def run(db_url: str, meta: dict, requests: int) -> list[tuple[str, float, float, float, int]]:
    """p50, p95, CPU per request (the server and its database server) and the number of
    matches of each case, one request at a time."""
    headers = {
        "Authorization": f"Bearer {meta['access_token']}",
        "x-api-key": meta["api_key"],
        "x-gw-ims-org-id": meta["org"],
        "x-sandbox-name": meta["sandbox"],
    }
    schema = OM + "personalized-offer;version=0.5"
    # No catalog warm-up: building the decision catalog of 100,000 offers would run in the
    # server's process while the searches are measured (search never reads it).
    env = {"NEXTOFFER_METRICS": "0", "NEXTOFFER_ACCESS_LOG": "0", "NEXTOFFER_WARM_CATALOGS": "0"}
    server = Server(db_url, env=env)
    rows = []
    pids = [server.process.pid, *database_pids(db_url)]
    try:
        base = f"{server.base}/data/core/xcore/{meta['container_id']}"
        with httpx.Client(timeout=60) as client:
            for name, path, params in cases(meta["first"]):
                if params is None:
                    url = base + path
                elif params == "cursor":
                    url = f"{base}/queries/core/search?" + urlencode(
                        [("schema", schema), ("limit", "20")]
                    )
                    for _ in range(49):
                        nxt = client.get(url, headers=headers).json()["_links"]["next"]["href"]
                        url = f"{server.base}/data/core/xcore{nxt}"
                else:
                    url = (
                        base
                        + path
                        + "?"
                        + urlencode([("schema", schema), ("limit", "20"), *params])
                    )
                p50, p95, cpu_ms, body = measure(client, url, headers, requests, pids)
                total = body.get("_embedded", {}).get("total", 1)
                rows.append((name, p50, p95, cpu_ms, total))
    finally:
        server.stop()
    return rows


def cases(first: str) -> list[tuple[str, str, Any]]:
    return [
        ("GET instance by id (reference)", f"/instances/{first}", None),
        (
            "property ==, orderby=-repo:createdDate, limit=20",
            "/queries/core/search",
            [("property", "_instance.xdm:status==approved"), ("orderby", "-repo:createdDate")],
        ),
        (
            "property >= number and date, orderby=-repo:createdDate, limit=20",
            "/queries/core/search",
            [
                ("property", "_instance.xdm:rank.xdm:priority>=90"),
                (
                    "property",
                    "_instance.xdm:selectionConstraint.xdm:startDate>=2024-12-01T00:00:00Z",
                ),
                ("orderby", "-repo:createdDate"),
            ],
        ),
        ("name lookup (wildcard)", "/instances", [("name", "Offer 4242 *")]),
        ("q one word, limit=20", "/queries/core/search", [("q", "platinum")]),
        (
            "q two words AND, limit=20",
            "/queries/core/search",
            [("q", "gold mortgage"), ("qop", "AND")],
        ),
        (
            "q phrase in a field, limit=20",
            "/queries/core/search",
            [("q", '"winter bonus"'), ("field", "_instance.xdm:representations")],
        ),
        ("page 50 by cursor (limit=20)", "/queries/core/search", "cursor"),
    ]


def start_postgres() -> tuple[str, str]:
    """A throwaway PostgreSQL (``scripts/services``): its database URL and folder."""
    out = subprocess.run(
        [str(SERVICES), "start"], check=True, capture_output=True, text=True
    ).stdout
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    admin = env["NEXTOFFER_TEST_POSTGRES_URL"]
    subprocess.run(["psql", admin, "-qc", "CREATE DATABASE bench"], check=True)
    return admin.rsplit("/", 1)[0] + "/bench", env["NEXTOFFER_SERVICES_DIR"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--db", help="SQLite: keep (and reuse) the loaded file here")
    parser.add_argument(
        "--postgres",
        help="PostgreSQL: use this database URL instead of a throwaway server "
        "(with --meta, loaded once and reused)",
    )
    parser.add_argument("--meta", help="where the loaded database's credentials are kept")
    parser.add_argument("--json", help="also write the figures here (for bench/search_plot.py)")
    args = parser.parse_args()
    services_dir = None
    meta_path = Path(args.meta) if args.meta else None
    if args.backend == "sqlite":
        db_path = Path(args.db) if args.db else scratch_dir("nextoffer-search-") / "bench.db"
        db_url = f"sqlite:///{db_path}"
        meta_path = meta_path or db_path.with_suffix(".json")
    elif args.postgres:
        db_url = args.postgres
    else:
        db_url, services_dir = start_postgres()
    try:
        meta = prepare(db_url, meta_path, args.instances)
        load_before = os.getloadavg()[0]
        rows = run(db_url, meta, args.requests)
        load_after = os.getloadavg()[0]
    finally:
        if services_dir is not None:
            subprocess.run([str(SERVICES), "stop", services_dir], check=False)
    print(
        f"machine: {machine()}; {args.backend}; {meta['instances']:,} offers in one "
        f"container, loaded in {meta['load_seconds']:.0f} s; {args.requests} sequential "
        f"requests each after 10 warm-ups, 1 worker; load average {load_before:.2f} before, "
        f"{load_after:.2f} after\n"
    )
    reference = rows[0]
    print("| request | p50 ms | p95 ms | p50 / ref | p95 / ref | CPU ms / request | matches |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, p50, p95, cpu_ms, total in rows:
        print(
            f"| {name} | {p50:.2f} | {p95:.2f} | {p50 / reference[1]:.1f} | "
            f"{p95 / reference[2]:.1f} | {cpu_ms:.2f} | {total:,} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "backend": args.backend,
                    "load": [load_before, load_after],
                    "rows": [
                        dict(zip(("name", "p50", "p95", "cpu_ms", "total"), r, strict=True))
                        for r in rows
                    ],
                }
            )
        )


if __name__ == "__main__":
    main()

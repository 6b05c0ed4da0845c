"""Search latency over HTTP on SQLite: 100,000 instances in one container.

Measures p50/p95 of a property filter + sort + ``limit=20``, of ``q`` searches, and of a
primary-key ``GET`` of one instance (the reference, measured in the same run), one
request at a time over loopback against one uvicorn worker.

    .venv/bin/python bench/search.py [--instances 100000] [--requests 300] [--db PATH]

``--db PATH`` keeps the loaded database at PATH and reuses it on the next run (loading
100,000 offers through the store takes minutes).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
from httpbench import Server, machine
from sqlalchemy import insert

from nextoffer.ids import IdFactory, epoch_micros, format_datetime
from nextoffer.repository.objects import PERSONALIZED_OFFER
from nextoffer.service.tenants import bootstrap
from nextoffer.storage import search_index
from nextoffer.storage import tables as t
from nextoffer.storage.store import Store

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
    """Insert ``count`` offers in batches: the rows ``Session.insert_instance`` writes
    (instance, search index, count), one multi-row statement per table and batch."""
    rng = random.Random(7)
    ids = IdFactory(worker=1)
    store = Store.open(db_url)
    placement = "xcore:offer-placement:1"
    began = time.perf_counter()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    first = ""
    schema_id = PERSONALIZED_OFFER.schema_id
    for batch_start in range(0, count, 2000):
        with store.session(write=True) as session:
            conn = session.conn
            # A bulk load touches index pages all over the file: a bigger page cache than
            # SQLite's 2 MB default keeps it fast (this connection only).
            conn.exec_driver_sql("PRAGMA cache_size = -262144")
            scope = search_index.scope_of(conn, container_id, schema_id, create=True)
            instances, values = [], []
            for n in range(batch_start, min(batch_start + 2000, count)):
                moment = base + timedelta(seconds=n)
                stamp = format_datetime(moment)
                body = offer_body(rng, n, placement)
                at_id = ids.at_id("personalized-offer", moment)
                instance_id = ids.instance_id(moment)
                body["@id"] = at_id
                instances.append(
                    {
                        "instance_id": instance_id,
                        "container_id": container_id,
                        "schema_id": schema_id,
                        "at_id": at_id,
                        "name": body["xdm:name"],
                        "etag": 1,
                        "created": stamp,
                        "modified": stamp,
                        "created_us": epoch_micros(moment),
                        "modified_us": epoch_micros(moment),
                        "created_by": "bench@AdobeID",
                        "modified_by": "bench@AdobeID",
                        "created_client": "bench",
                        "modified_client": "bench",
                        "body": orjson.dumps(body).decode(),
                    }
                )
                values.extend(
                    {**row, "scope": scope, "instance_id": instance_id}
                    for row in search_index.flatten(body)
                )
                first = first or instance_id
            conn.execute(insert(t.instances), instances)
            conn.execute(insert(search_index.search_values), values)
    with store.session(write=True) as session:
        session.conn.execute(
            insert(t.instance_counts).values(
                container_id=container_id, schema_id=schema_id, count=count
            )
        )
    elapsed = time.perf_counter() - began
    store.close()
    return first, elapsed


def measure(
    client: httpx.Client, url: str, headers: dict, requests: int
) -> tuple[float, float, dict]:
    body: dict = {}
    for _ in range(10):  # warm-up: connections, caches, SQLite pages
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--db", help="keep (and reuse) the loaded SQLite file here")
    args = parser.parse_args()
    db_path = (
        Path(args.db)
        if args.db
        else Path(tempfile.mkdtemp(prefix="nextoffer-search-")) / "bench.db"
    )
    db_url = f"sqlite:///{db_path}"
    meta_path = db_path.with_suffix(".json")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
    else:
        store = Store.open(db_url)
        creds = bootstrap(store, org="BENCH@AdobeOrg", sandbox="prod", now=datetime.now(UTC))
        store.close()
        first, load_seconds = load(db_url, creds.container_id, args.instances)
        meta = {
            "container_id": creds.container_id,
            "first": first,
            "load_seconds": load_seconds,
            "instances": args.instances,
            "access_token": creds.access_token,
            "api_key": creds.api_key,
            "org": creds.org,
            "sandbox": creds.sandbox,
        }
        meta_path.write_text(json.dumps(meta))
    first, load_seconds = meta["first"], meta["load_seconds"]
    headers = {
        "Authorization": f"Bearer {meta['access_token']}",
        "x-api-key": meta["api_key"],
        "x-gw-ims-org-id": meta["org"],
        "x-sandbox-name": meta["sandbox"],
    }
    schema = OM + "personalized-offer;version=0.5"
    cases = [
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
        ("name lookup (exact)", "/instances", [("name", "Offer 4242 *")]),
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
    server = Server(db_url)
    rows = []
    try:
        base = f"{server.base}/data/core/xcore/{meta['container_id']}"
        with httpx.Client(timeout=30) as client:
            for name, path, params in cases:
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
                p50, p95, body = measure(client, url, headers, args.requests)
                total = body.get("_embedded", {}).get("total", 1)
                rows.append((name, p50, p95, total))
    finally:
        server.stop()
    print(
        f"machine: {machine()}; {meta['instances']:,} offers in one container, loaded in "
        f"{load_seconds:.0f} s; {args.requests} sequential requests each, 1 worker\n"
    )
    print("| request | p50 ms | p95 ms | matches |")
    print("|---|---:|---:|---:|")
    for name, p50, p95, total in rows:
        print(f"| {name} | {p50:.2f} | {p95:.2f} | {total:,} |")


if __name__ == "__main__":
    main()

"""Crash safety: concurrent writes, SIGKILL mid-burst, restart, and every acknowledged write
is there. The run behind ``scripts/crash-test`` and ``tests/api/test_crash_safety.py``.

One round: ``clients`` threads send creates (placements), patches (of placements they
created) and event batches (unique ``_id`` values) as fast as they can; after
``kill_after`` seconds the server gets SIGKILL (no shutdown, no flush). Only a write that
received its success response counts as acknowledged. After a restart on the same
database:

* every acknowledged instance answers 200, with ``repo:etag`` at least the last
  acknowledged one, and the name that etag was given when they are equal;
* every acknowledged event is a ``duplicate`` when sent again (so it is stored);
* SQLite's ``PRAGMA integrity_check`` says ``ok``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.live import PATCH_TYPE, LiveServer, headers_of, make_tenant

CREATE = (
    'application/schema-instance+json; version=1; schema="https://ns.adobe.com/experience/'
    'offer-management/offer-placement;version=0.4"'
)
WEB = "https://ns.adobe.com/xdm/channel-types/web"
HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"


@dataclass
class Acked:
    #: instanceId → (etag, name) of the last acknowledged write
    instances: dict[str, tuple[int, str]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    attempts: int = 0
    transport_errors: int = 0
    other_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class RoundResult:
    acked_creates: int
    acked_patches: int
    acked_events: int
    attempts: int
    transport_errors: int
    missing_instances: list[str]
    stale_instances: list[str]
    missing_events: list[str]
    integrity: str
    unexpected: list[str]

    @property
    def ok(self) -> bool:
        return (
            not self.missing_instances
            and not self.stale_instances
            and not self.missing_events
            and self.integrity == "ok"
            and not self.unexpected
        )


def _client_loop(
    base: str,
    headers: dict[str, str],
    container: str,
    acked: Acked,
    stop: threading.Event,
    seed: int,
) -> None:
    mine: list[str] = []
    n = 0
    with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
        while not stop.is_set():
            n += 1
            kind = ("create", "patch", "events")[n % 3] if mine else "create"
            try:
                if kind == "create":
                    name = f"c{seed}-{n}"
                    body = {"xdm:name": name, "xdm:channel": WEB, "xdm:componentType": HTML}
                    r = client.post(
                        f"/data/core/xcore/{container}/instances",
                        content=json.dumps(body),
                        headers={"Content-Type": CREATE},
                    )
                    with acked.lock:
                        acked.attempts += 1
                    if r.status_code == 201:
                        receipt = r.json()
                        with acked.lock:
                            acked.instances[receipt["instanceId"]] = (receipt["repo:etag"], name)
                        mine.append(receipt["instanceId"])
                    else:
                        acked.other_errors.append(f"create {r.status_code} {r.text[:200]}")
                elif kind == "patch":
                    target = mine[n % len(mine)]
                    name = f"p{seed}-{n}"
                    ops = [{"op": "replace", "path": "/_instance/xdm:name", "value": name}]
                    r = client.patch(
                        f"/data/core/xcore/{container}/instances/{target}",
                        content=json.dumps(ops),
                        headers={"Content-Type": PATCH_TYPE},
                    )
                    with acked.lock:
                        acked.attempts += 1
                    if r.status_code == 200:
                        etag = r.json()["repo:etag"]
                        with acked.lock:
                            if etag > acked.instances.get(target, (0, ""))[0]:
                                acked.instances[target] = (etag, name)
                    else:
                        acked.other_errors.append(f"patch {r.status_code} {r.text[:200]}")
                else:
                    ids = [f"e-{uuid.uuid4()}" for _ in range(5)]
                    batch = [
                        {
                            "identityMap": {"Email": [{"id": f"crash{seed}@example.com"}]},
                            "timestamp": "2026-01-01T00:00:00Z",
                            "eventType": "web.webpagedetails.pageViews",
                            "_id": event_id,
                        }
                        for event_id in ids
                    ]
                    r = client.post("/data/core/nextoffer/events", json={"events": batch})
                    with acked.lock:
                        acked.attempts += 1
                    if r.status_code == 200 and r.json()["stored"] == len(ids):
                        with acked.lock:
                            acked.events.extend(ids)
                    else:
                        acked.other_errors.append(f"events {r.status_code} {r.text[:200]}")
            except httpx.TransportError:
                # The server died under us: nothing was acknowledged. Wait for the round to end.
                with acked.lock:
                    acked.transport_errors += 1
                stop.wait(0.05)


def integrity_check(db_path: Path) -> str:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)


def verify(
    base: str, headers: dict[str, str], container: str, acked: Acked
) -> tuple[list[str], list[str], list[str]]:
    missing, stale, missing_events = [], [], []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for instance_id, (etag, name) in acked.instances.items():
            r = client.get(f"/data/core/xcore/{container}/instances/{instance_id}")
            if r.status_code != 200:
                missing.append(f"{instance_id}: {r.status_code}")
                continue
            body = r.json()
            if body["repo:etag"] < etag or (
                body["repo:etag"] == etag and body["_instance"]["xdm:name"] != name
            ):
                stale.append(
                    f"{instance_id}: acknowledged etag {etag} {name!r}, found {body['repo:etag']} "
                    f"{body['_instance']['xdm:name']!r}"
                )
        for i in range(0, len(acked.events), 500):
            chunk = acked.events[i : i + 500]
            batch = [
                {
                    "identityMap": {"Email": [{"id": "verify@example.com"}]},
                    "timestamp": "2026-01-01T00:00:00Z",
                    "eventType": "web.webpagedetails.pageViews",
                    "_id": event_id,
                }
                for event_id in chunk
            ]
            r = client.post("/data/core/nextoffer/events", json={"events": batch})
            for event_id, result in zip(chunk, r.json()["results"], strict=True):
                if result["status"] != "duplicate":
                    missing_events.append(event_id)
    return missing, stale, missing_events


def run_round(
    server: LiveServer, db_path: Path, creds: Any, *, clients: int, kill_after: float
) -> RoundResult:
    headers = headers_of(creds)
    acked = Acked()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_client_loop, args=(server.base, headers, creds.container_id, acked, stop, i)
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(kill_after)
    server.kill()
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join()
    server.start()
    missing, stale, missing_events = verify(server.base, headers, creds.container_id, acked)
    creates = sum(1 for etag, _ in acked.instances.values() if etag >= 1)
    return RoundResult(
        acked_creates=creates,
        acked_patches=sum(etag - 1 for etag, _ in acked.instances.values()),
        acked_events=len(acked.events),
        attempts=acked.attempts,
        transport_errors=acked.transport_errors,
        missing_instances=missing,
        stale_instances=stale,
        missing_events=missing_events,
        integrity=integrity_check(db_path),
        unexpected=acked.other_errors[:10],
    )


def run(
    workdir: Path, *, rounds: int, clients: int, kill_after: float, seed: int = 9
) -> list[RoundResult]:
    """``rounds`` rounds on one database (each restart also survives the earlier crashes);
    each round kills after ``kill_after`` seconds, jittered by ±50 %."""
    import random

    rng = random.Random(seed)
    db_path = workdir / "crash.db"
    db_url = f"sqlite:///{db_path}"
    creds, _ = make_tenant(db_url, "CRASH@AdobeOrg", "prod")
    server = LiveServer(db_url, workdir=workdir).start()
    results = []
    try:
        for _ in range(rounds):
            jittered = kill_after * rng.uniform(0.5, 1.5)
            results.append(run_round(server, db_path, creds, clients=clients, kill_after=jittered))
    finally:
        server.stop()
    return results

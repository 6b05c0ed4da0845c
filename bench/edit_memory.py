"""Memory of one process under decisions while the library is edited: the soak's mix in
process (TestClient, no HTTP), with a larger share of edits, so that what a replaced
snapshot leaves behind shows within a minute. Prints RSS, the frozen objects, the
serialised-options cache's entries and the threads every tenth of the run.

    python bench/edit_memory.py --requests 10000 --edits 0.5
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import uuid
from pathlib import Path

import psutil
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scratch import scratch_dir

from nextoffer.api.app import create_app
from nextoffer.api.decision_response import SERIALISED
from nextoffer.ids import format_datetime, utcnow
from nextoffer.settings import Settings
from support.live import DECIDE_TYPE, PATCH_TYPE, decision_request, headers_of, make_tenant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--edits", type=float, default=0.5, help="share of library edits")
    parser.add_argument("--events", type=float, default=0.15, help="share of events")
    args = parser.parse_args()
    db = f"sqlite:///{scratch_dir('nextoffer-edit-memory-') / 'edit.db'}"
    creds, ids = make_tenant(db, "MEM@AdobeOrg", "prod", seed=True)
    headers = headers_of(creds)
    offer = f"/data/core/xcore/{creds.container_id}/instances/{ids['holiday_offer@instance']}"
    rng = random.Random(1)
    process = psutil.Process()
    edits = 0
    settings = Settings(db_url=db, access_log=False)
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:

        def one() -> None:
            nonlocal edits
            roll = rng.random()
            email = f"user{rng.randrange(1000)}@example.com"
            if roll < args.edits:
                edits += 1
                ops = [{"op": "add", "path": "/_instance/xdm:description", "value": f"e{edits}"}]
                response = client.patch(
                    offer,
                    content=json.dumps(ops),
                    headers={**headers, "Content-Type": PATCH_TYPE},
                )
            elif roll < args.edits + args.events:
                event = {
                    "identityMap": {"Email": [{"id": email}]},
                    "timestamp": format_datetime(utcnow()),
                    "eventType": "web.webpagedetails.pageViews",
                    "_id": str(uuid.uuid4()),
                }
                response = client.post(
                    "/data/core/nextoffer/events",
                    content=json.dumps({"events": [event]}),
                    headers={**headers, "Content-Type": "application/json"},
                )
            else:
                response = client.post(
                    f"/data/core/ode/{creds.container_id}/decisions",
                    content=json.dumps(decision_request(ids, email)),
                    headers={**headers, "Content-Type": DECIDE_TYPE},
                )
            assert response.status_code == 200, response.text

        for _ in range(args.requests // 5):  # warm up: caches, pools, the first snapshots
            one()
        started = time.monotonic()
        step = max(1, args.requests // 10)
        for n in range(args.requests + 1):
            if n % step == 0:
                row = {
                    "requests": n,
                    "rss_mib": round(process.memory_info().rss / 2**20, 1),
                    "frozen": gc.get_freeze_count(),
                    "serialised_entries": len(SERIALISED),
                    "threads": process.num_threads(),
                }
                print(json.dumps(row), flush=True)
            if n < args.requests:
                one()
        print(json.dumps({"seconds": round(time.monotonic() - started, 1), "edits": edits}))


if __name__ == "__main__":
    main()

"""The local engine with cap counters in Redis: a job's records reserve in Redis many to a
round trip and are group-committed (``CountersElsewhere.record_many``), sharing caps
exactly with online decisions made while it runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from batch.test_workloads import DECIDE, batch_and_online_share_caps, rows, wait_done
from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.api import Tenant, make_tenant
from support.backends import redis_url
from support.batch import DWM, Library, add_profiles, dataset, segment, workload


@pytest.fixture
def tenant(db_url: str, tmp_path: Path) -> Iterator[Tenant]:
    settings = Settings(
        db_url=db_url,
        redis_url=redis_url(),
        freeze_heap=False,
        datasets_dir=str(tmp_path / "datasets"),
        batch_workers=2,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield make_tenant(client, db_url, "ACME@AdobeOrg", "prod")


def chosen_a(tenant: Tenant, library: Library, dataset_id: str) -> int:
    decided = rows(tenant, dataset_id)
    items = [r["_experience"]["decisioning"]["propositions"][0]["items"][0]["id"] for r in decided]
    return items.count(library.a)


def test_batch_and_online_decisions_share_caps_in_redis(tenant: Tenant) -> None:
    """The Redis form of ``test_workloads.test_batch_and_online_decisions_share_caps``."""
    batch_and_online_share_caps(tenant)


def test_a_cap_is_met_exactly_by_a_local_job_and_online_decisions_at_once(
    tenant: Tenant,
) -> None:
    """Online decisions made in a loop while the job decides its audience: the offer
    capped for everyone is proposed exactly its limit's times between the job's rows and
    the online answers, and Redis's counter says so."""
    limit, audience = 150, 400
    library = Library(tenant, [{"xdm:limit": limit, "xdm:scope": "global"}])
    add_profiles(tenant, audience)
    url = f"/data/core/ode/{tenant.container}/decisions"
    headers = {**tenant.headers, "Content-Type": DECIDE}
    online: list[str] = []
    stop = threading.Event()

    def decide_online() -> None:
        n = 0
        while not stop.is_set():
            body = {
                "xdm:propositionRequests": [
                    {"xdm:placementId": library.placement, "xdm:activityId": library.decision}
                ],
                "xdm:profiles": [
                    {"xdm:identityMap": {"Email": [{"xdm:id": f"p{n % audience:04d}@example.com"}]}}
                ],
            }
            answer = tenant.client.post(url, json=body, headers=headers)
            assert answer.status_code == 200, answer.text
            options = answer.json()["xdm:propositions"][0].get("xdm:options")
            online.append(options[0]["xdm:id"] if options else "")  # else the fallback
            n += 1
            stop.wait(0.02)

    job = tenant.client.post(
        DWM,
        json=workload(library, segment(tenant, "age >= 0"), dataset(tenant)),
        headers=tenant.headers,
    ).json()
    deciding = threading.Thread(target=decide_online)
    deciding.start()
    try:
        done = wait_done(tenant, f"{DWM}/{job['@id']}")
    finally:
        stop.set()
        deciding.join()
    assert done["ode:status"] == "COMPLETED", done
    batch = chosen_a(tenant, library, done["xdm:dataSetId"])
    assert online.count(library.a) > 0 and batch > 0, (online.count(library.a), batch)
    assert batch + online.count(library.a) == limit
    raw = redis.Redis.from_url(redis_url())
    try:
        names = raw.keys(f"nextoffer:cap:{{{tenant.container}}}:*|{library.a}|*")
        assert len(names) == 1, names
        assert int(raw.get(names[0]) or 0) == limit
    finally:
        raw.close()

"""Exact caps under concurrency: 50 simultaneous decisions over two server processes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from nextoffer.ids import utcnow
from nextoffer.service.tenants import bootstrap
from nextoffer.storage.store import Store
from support import CREATE_TYPE, schema
from support.api import capped_library
from support.servers import serve

DECIDE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'
REQUESTS = 50


def build_library(base: str, headers: dict[str, str], container: str, caps: dict) -> dict[str, str]:
    def create(type_name: str, body: dict) -> str:
        response = httpx.post(
            f"{base}/data/core/xcore/{container}/instances",
            json=body,
            headers={**headers, "Content-Type": CREATE_TYPE.format(schema=schema(type_name))},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["@id"])

    return capped_library(create, caps)


def wait_for_decision(base: str, headers: dict[str, str], container: str, ids: dict) -> None:
    """Until the node decides on the new decision (a dry run: no cap is consumed)."""
    body = {
        "xdm:propositionRequests": [
            {"xdm:placementId": ids["placement"], "xdm:activityId": ids["decision"]}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "probe@example.com"}]}}],
        "xdm:dryRun": True,
    }
    deadline = time.monotonic() + 10
    while True:
        response = httpx.post(
            f"{base}/data/core/ode/{container}/decisions",
            json=body,
            headers={**headers, "Content-Type": DECIDE},
            timeout=30,
        )
        if response.status_code == 200 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("caps", "identity"),
    [({"xdm:globalCap": 7}, None), ({"xdm:profileCap": 3}, "same@example.com")],
)
def test_cap_is_met_exactly_by_concurrent_deciders_on_two_processes(tmp_path, caps, identity):
    db_url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = Store.open(db_url)
    creds = bootstrap(store, org="ACME@AdobeOrg", sandbox="prod", now=utcnow())
    store.close()
    headers = {
        "Authorization": f"Bearer {creds.access_token}",
        "x-api-key": creds.api_key,
        "x-gw-ims-org-id": creds.org,
        "x-sandbox-name": creds.sandbox,
    }
    limit = next(iter(caps.values()))
    with serve(db_url, workdir=tmp_path) as node_a, serve(db_url, workdir=tmp_path) as node_b:
        ids = build_library(node_a, headers, creds.container_id, caps)
        for base in (node_a, node_b):  # node B learns of A's writes within its check interval
            wait_for_decision(base, headers, creds.container_id, ids)

        def one(n: int) -> str:
            base = node_a if n % 2 else node_b
            body = {
                "xdm:propositionRequests": [
                    {"xdm:placementId": ids["placement"], "xdm:activityId": ids["decision"]}
                ],
                "xdm:profiles": [
                    {"xdm:identityMap": {"Email": [{"xdm:id": identity or f"user{n}@example.com"}]}}
                ],
            }
            response = httpx.post(
                f"{base}/data/core/ode/{creds.container_id}/decisions",
                json=body,
                headers={**headers, "Content-Type": DECIDE},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            proposition = response.json()["xdm:propositions"][0]
            return (
                proposition["xdm:options"][0]["xdm:id"]
                if "xdm:options" in proposition
                else "fallback"
            )

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            chosen = list(pool.map(one, range(REQUESTS)))
    assert chosen.count(ids["capped"]) == limit
    assert chosen.count(ids["other"]) == REQUESTS - limit

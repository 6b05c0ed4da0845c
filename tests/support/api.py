"""API-test helpers: a bootstrapped tenant that speaks the four headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from nextoffer.ids import utcnow
from nextoffer.service.tenants import Credentials, bootstrap
from nextoffer.storage.store import Store
from support import CREATE_TYPE, RECEIPT_ACCEPT, schema

HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
DECIDE = (
    'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/'
    'decision-request;version=1.0"'
)
WEB = "https://ns.adobe.com/xdm/channel-types/web"


class Tenant:
    """A bootstrapped org + sandbox with a client that speaks its headers."""

    def __init__(self, client: TestClient, creds: Credentials) -> None:
        self.client = client
        self.creds = creds
        self.container = creds.container_id
        self.headers = {
            "Authorization": f"Bearer {creds.access_token}",
            "x-api-key": creds.api_key,
            "x-gw-ims-org-id": creds.org,
            "x-sandbox-name": creds.sandbox,
        }

    def url(self, suffix: str = "") -> str:
        return f"/data/core/xcore/{self.container}/instances{suffix}"

    def create(self, type_name: str, body: dict[str, Any], *, expect: int = 201, **kw: Any) -> Any:
        response = self.client.post(
            self.url(),
            json=body,
            headers={
                **self.headers,
                "Accept": RECEIPT_ACCEPT,
                "Content-Type": CREATE_TYPE.format(schema=schema(type_name)),
            },
            **kw,
        )
        assert response.status_code == expect, response.text
        return response.json()


def make_tenant(client: TestClient, db_url: str, org: str, sandbox: str) -> Tenant:
    store = Store.open(db_url)
    try:
        creds = bootstrap(store, org=org, sandbox=sandbox, now=utcnow())
    finally:
        store.close()
    return Tenant(client, creds)


def capped_library(
    create: Callable[[str, dict[str, Any]], str], caps: dict[str, Any]
) -> dict[str, str]:
    """One placement; offer "capped" (priority 9, ``caps``) and "other" (priority 1) in one
    live decision with a fallback. ``create(type_name, body)`` makes an instance and
    answers its ``@id``. The ids by role: placement, capped, other, decision."""
    placement = create(
        "offer-placement", {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    reps = [
        {"xdm:placement": placement, "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
    ]

    def offer(name: str, priority: int, **more: Any) -> str:
        body = {"xdm:name": name, "xdm:status": "approved", "xdm:rank": {"xdm:priority": priority}}
        return create("personalized-offer", {**body, "xdm:representations": reps, **more})

    capped = offer("capped", 9, **{"xdm:cappingConstraint": caps})
    other = offer("other", 1)
    fallback = create(
        "fallback-offer", {"xdm:name": "f", "xdm:status": "approved", "xdm:representations": reps}
    )
    collection = create(
        "offer-filter", {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": [capped, other]}
    )
    decision = create(
        "offer-activity",
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [{"xdm:optionSelection": {"xdm:filter": collection}}],
        },
    )
    return {"placement": placement, "capped": capped, "other": other, "decision": decision}


def first_option(tenant: Tenant, ids: dict[str, str], n: int) -> str:
    """Decide for visitor ``u<n>@example.com`` in :func:`capped_library`'s decision and
    placement: the id of the first option proposed."""
    body = {
        "xdm:propositionRequests": [
            {"xdm:placementId": ids["placement"], "xdm:activityId": ids["decision"]}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": f"u{n}@example.com"}]}}],
    }
    response = tenant.client.post(
        f"/data/core/ode/{tenant.container}/decisions",
        json=body,
        headers={**tenant.headers, "Content-Type": DECIDE},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["xdm:propositions"][0]["xdm:options"][0]["xdm:id"])

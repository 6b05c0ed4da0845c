"""API-test helpers: a bootstrapped tenant that speaks the four headers."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from nextoffer.ids import utcnow
from nextoffer.service.tenants import Credentials, bootstrap
from nextoffer.storage.store import Store
from support import CREATE_TYPE, RECEIPT_ACCEPT, schema

HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
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

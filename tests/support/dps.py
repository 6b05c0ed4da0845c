"""A dps client for one tenant: ``/data/core/dps/…`` with the documented headers."""

from __future__ import annotations

import re
from typing import Any

from support.api import Tenant

BASE = "/data/core/dps"
#: The documented read header (offer-api-dps §1): ``Accept: *,application/json``.
READ = {"Accept": "*,application/json"}
WRITE = {"Content-Type": "application/json"}
RECEIPT_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
DOCUMENT_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")

#: Resource path (and offer-type) of each xcore type name.
RESOURCES = {
    "personalized-offer": "offers?offer-type=personalized",
    "fallback-offer": "offers?offer-type=fallback",
    "offer-placement": "placements",
    "offer-filter": "offer-collections",
    "eligibility-rule": "offer-rules",
    "tag": "tags",
    "offer-activity": "offer-decisions",
    "ranking-function": "ranking-formulas",
    "ranking-strategy": "ranking-strategies",
}


def item_url(type_name: str, at_id: str) -> str:
    path, _, query = RESOURCES[type_name].partition("?")
    return f"{BASE}/{path}/{at_id}" + (f"?{query}" if query else "")


class Dps:
    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.client = tenant.client

    def create(self, type_name: str, body: Any, *, expect: int = 201) -> Any:
        response = self.client.post(
            f"{BASE}/{RESOURCES[type_name]}",
            json=body,
            headers={**self.tenant.headers, **WRITE},
        )
        assert response.status_code == expect, response.text
        return response.json()

    def get(self, type_name: str, at_id: str, *, expect: int = 200) -> Any:
        response = self.client.get(
            item_url(type_name, at_id), headers={**self.tenant.headers, **READ}
        )
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    def patch(self, type_name: str, at_id: str, operations: Any, *, expect: int = 200) -> Any:
        response = self.client.patch(
            item_url(type_name, at_id),
            json=operations,
            headers={**self.tenant.headers, **WRITE},
        )
        assert response.status_code == expect, response.text
        return response.json()

    def delete(self, type_name: str, at_id: str, *, expect: int = 200) -> Any:
        # The documented DELETE also sends Content-Type: application/json.
        response = self.client.delete(
            item_url(type_name, at_id), headers={**self.tenant.headers, **WRITE}
        )
        assert response.status_code == expect, response.text
        return response

    def list(self, url: str, *, expect: int = 200) -> Any:
        response = self.client.get(
            url if url.startswith(BASE) else BASE + url, headers={**self.tenant.headers, **READ}
        )
        assert response.status_code == expect, response.text
        return response.json()

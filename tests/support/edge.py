"""Edge Network test helpers: a small library to decide from, scopes, the offers report.

Works through any client that speaks ``post``/``get``/``patch`` as httpx and Starlette's
TestClient do: the library is built through the xcore API, like a customer's.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from support import CREATE_TYPE, RECEIPT_ACCEPT, schema
from support.api import HTML, WEB

RULE = {"xdm:type": "PQL", "xdm:format": "pql/text"}
#: Journey Optimizer's context-data example rule (decisioning-api.md §3), as documented.
IPHONE_RULE = (
    "select _Any1 from xEvent where "
    '_Any1._experienceplatform.offerContextData.deviceType.equals("iphone", false)'
)
DECIDE_TYPE = (
    'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/'
    'decision-request;version=1.0"'
)


def scope(activity: str, placement: str, *, xdm: bool = False, **extra: Any) -> str:
    """A decision scope: base64 of the JSON the Web SDK documentation shows."""
    prefix = "xdm:" if xdm else ""
    body = {f"{prefix}activityId": activity, f"{prefix}placementId": placement, **extra}
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


class Library:
    """One placement; offers A (priority 20, capped by ``caps``), B (10) and "iphone"
    (30, eligible after an event with ``deviceType`` iphone); a fallback; one decision."""

    def __init__(self, client: Any, headers: dict[str, str], container: str, caps: list[Any]):
        self.client = client
        self.headers = headers
        self.container = container
        self.placement = self.create(
            "offer-placement", {"xdm:name": "banner", "xdm:channel": WEB, "xdm:componentType": HTML}
        )
        window = {"xdm:startDate": "2020-01-01T00:00:00Z", "xdm:endDate": "2099-01-01T00:00:00Z"}
        rule = self.create(
            "eligibility-rule",
            {"xdm:name": "iphone", "xdm:condition": {**RULE, "xdm:value": IPHONE_RULE}},
        )

        def offer(name: str, priority: int, **extra: Any) -> str:
            return self.create(
                "personalized-offer",
                {
                    "xdm:name": name,
                    "xdm:status": "approved",
                    "xdm:rank": {"xdm:priority": priority},
                    "xdm:representations": [self.rep(f"<p>{name}</p>")],
                    "xdm:characteristics": {"code": name},
                    **extra,
                },
            )

        self.a = offer(
            "A",
            20,
            **{"xdm:selectionConstraint": window, "xdm:frequencyCappingConstraints": caps},
        )
        self.b = offer("B", 10)
        self.iphone = offer(
            "iphone", 30, **{"xdm:selectionConstraint": {**window, "xdm:eligibilityRule": rule}}
        )
        self.fallback = self.create(
            "fallback-offer",
            {
                "xdm:name": "F",
                "xdm:status": "approved",
                "xdm:representations": [self.rep("<p>F</p>")],
            },
        )
        collection = self.create(
            "offer-filter",
            {
                "xdm:name": "all",
                "xdm:filterType": "offers",
                "xdm:ids": [self.a, self.b, self.iphone],
            },
        )
        self.decision = self.create(
            "offer-activity",
            {
                "xdm:name": "home",
                "xdm:status": "live",
                "xdm:fallback": self.fallback,
                "xdm:criteria": [
                    {
                        "xdm:placements": [self.placement],
                        "xdm:optionSelection": {"xdm:filter": collection},
                    }
                ],
            },
        )
        self.scope = scope(self.decision, self.placement)

    def rep(self, text: str) -> dict[str, Any]:
        return {
            "xdm:placement": self.placement,
            "xdm:components": [
                {
                    "@type": HTML,
                    "dc:format": "text/html",
                    "dc:language": ["en"],
                    "xdm:content": text,
                }
            ],
        }

    def create(self, type_name: str, body: dict[str, Any]) -> str:
        response = self.client.post(
            f"/data/core/xcore/{self.container}/instances",
            json=body,
            headers={
                **self.headers,
                "Accept": RECEIPT_ACCEPT,
                "Content-Type": CREATE_TYPE.format(schema=schema(type_name)),
            },
        )
        assert response.status_code == 201, response.text
        return str(response.json()["@id"])

    def report(self) -> dict[str, dict[str, int]]:
        """The offers report: offer @id -> propositions, impressions, clicks (all days)."""
        response = self.client.get(
            "/data/core/nextoffer/reports/offers",
            params={"containerId": self.container},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        totals: dict[str, dict[str, int]] = {}
        for row in response.json()["rows"]:
            into = totals.setdefault(
                row["offerId"], {"propositions": 0, "impressions": 0, "clicks": 0}
            )
            for key in into:
                into[key] += int(row.get(key, 0))
        return totals

    def explain(self, namespace: str, identity: str) -> dict[str, Any]:
        """A dry-run decision through the Decisioning API, with its explain trace."""
        body = {
            "xdm:propositionRequests": [
                {"xdm:placementId": self.placement, "xdm:activityId": self.decision}
            ],
            "xdm:profiles": [{"xdm:identityMap": {namespace: [{"xdm:id": identity}]}}],
            "xdm:dryRun": True,
            "xdm:responseFormat": {"nextoffer:explain": True},
        }
        response = self.client.post(
            f"/data/core/ode/{self.container}/decisions",
            json=body,
            headers={**self.headers, "Content-Type": DECIDE_TYPE},
        )
        assert response.status_code == 200, response.text
        return dict(response.json()["xdm:propositions"][0])

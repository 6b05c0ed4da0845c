"""A small shop ranked by an AI ranking strategy, for the tests that teach one and read
its report (tests/api/test_ranking.py, tests/console)."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from support.api import HTML, WEB, Tenant

DECIDE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'
DISPLAY = "decisioning.propositionDisplay"
CLICK = "decisioning.propositionInteract"


class Shop:
    """Three offers in one collection, a decision ranked by ``strategy``."""

    def __init__(self, tenant: Tenant, strategy: dict[str, Any]) -> None:
        self.tenant = tenant
        create = tenant.create
        self.placement = create(
            "offer-placement", {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML}
        )["@id"]
        reps = [
            {
                "xdm:placement": self.placement,
                "xdm:components": [{"@type": HTML, "dc:format": "text/html"}],
            }
        ]
        self.offers = [
            create(
                "personalized-offer",
                {
                    "xdm:name": name,
                    "xdm:status": "approved",
                    "xdm:rank": {"xdm:priority": 10},
                    "xdm:representations": reps,
                },
            )["@id"]
            for name in ("A", "B", "C")
        ]
        fallback = create(
            "fallback-offer",
            {"xdm:name": "F", "xdm:status": "approved", "xdm:representations": reps},
        )["@id"]
        self.collection = create(
            "offer-filter",
            {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": self.offers},
        )["@id"]
        self.strategy_receipt = create("ranking-strategy", strategy)
        self.strategy = self.strategy_receipt["@id"]
        self.decision_receipt = create(
            "offer-activity",
            {
                "xdm:name": "d",
                "xdm:status": "live",
                "xdm:fallback": fallback,
                "xdm:criteria": [self.criterion()],
            },
        )
        self.decision = self.decision_receipt["@id"]

    def criterion(self, strategy: str | None = None, priority: int = 0) -> dict[str, Any]:
        return {
            "xdm:placements": [self.placement],
            "xdm:optionSelection": {"xdm:filter": self.collection},
            "xdm:ranking": {
                "xdm:priority": priority,
                "xdm:order": {
                    "xdm:orderEvaluationType": "rankingStrategy",
                    "xdm:rankingStrategy": strategy or self.strategy,
                },
            },
        }

    def decide(
        self,
        who: str = "alice",
        *,
        client: TestClient | None = None,
        explain: bool = False,
        context: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "xdm:propositionRequests": [
                {"xdm:placementId": self.placement, "xdm:activityId": self.decision}
            ],
            "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": who}]}}],
        }
        if context:
            body["xdm:profiles"][0]["xdm:contextData"] = context
        if explain:
            body["xdm:responseFormat"] = {"nextoffer:explain": True}
        response = (client or self.tenant.client).post(
            f"/data/core/ode/{self.tenant.container}/decisions",
            json=body,
            headers={**self.tenant.headers, "Content-Type": DECIDE},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def feedback(
        self,
        events: list[tuple[str, str, str]],
        *,
        client: TestClient | None = None,
        ids: list[str] | None = None,
    ) -> Any:
        """``events``: (proposition id, offer @id, event type)."""
        body = {
            "events": [
                {
                    **({"_id": ids[i]} if ids else {}),
                    "timestamp": "2026-01-01T00:00:00Z",
                    "eventType": kind,
                    "https://ns.adobe.com/experience/decisioning/propositions": [
                        {"xdm:id": proposition, "xdm:items": [{"xdm:id": offer}]}
                    ],
                }
                for i, (proposition, offer, kind) in enumerate(events)
            ]
        }
        response = (client or self.tenant.client).post(
            "/data/core/nextoffer/events", json=body, headers=self.tenant.headers
        )
        assert response.status_code in (200, 207), response.text
        return response.json()

    def report(self, client: TestClient | None = None) -> Any:
        response = (client or self.tenant.client).get(
            f"/data/core/nextoffer/reports/ranking-strategies/{self.strategy}",
            params={"containerId": self.tenant.container, "from": "2026-01-01", "to": "2026-01-31"},
            headers=self.tenant.headers,
        )
        assert response.status_code == 200, response.text
        return response.json()


def chosen(answer: dict[str, Any]) -> str:
    return str(answer["xdm:propositions"][0]["xdm:options"][0]["xdm:id"])


AUTO = {"xdm:name": "auto", "xdm:strategyType": "auto-optimization"}


def teach(shop: Shop, best: str, rounds: int, *, client: TestClient | None = None) -> None:
    """Serve ``rounds`` decisions; every option is displayed, only ``best`` is clicked."""
    events = []
    for n in range(rounds):
        answer = shop.decide(f"u{n}", client=client)
        offer = chosen(answer)
        events.append((answer["xdm:propositionId"], offer, DISPLAY))
        if offer == best:
            events.append((answer["xdm:propositionId"], offer, CLICK))
    shop.feedback(events, client=client)

"""Capping over HTTP: frequency rules, feedback (impressions, clicks, custom events),
idempotent events, dry runs, date changes, and the offers report."""

from __future__ import annotations

import pytest

from support.api import HTML, WEB

DECIDE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'
PATCH = "application/vnd.adobe.platform.xcore.patch.hal+json"


class Shop:
    """Two placements, offers A (priority 20, capped as the test says) and B (10), a fallback."""

    def __init__(self, tenant, caps):
        self.tenant = tenant
        create = tenant.create
        self.p1 = create(
            "offer-placement", {"xdm:name": "p1", "xdm:channel": WEB, "xdm:componentType": HTML}
        )["@id"]
        self.p2 = create(
            "offer-placement", {"xdm:name": "p2", "xdm:channel": WEB, "xdm:componentType": HTML}
        )["@id"]
        reps = [
            {"xdm:placement": p, "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
            for p in (self.p1, self.p2)
        ]
        self.window = {
            "xdm:startDate": "2020-01-01T00:00:00Z",
            "xdm:endDate": "2099-01-01T00:00:00Z",
        }
        self.a = create(
            "personalized-offer",
            {
                "xdm:name": "A",
                "xdm:status": "approved",
                "xdm:rank": {"xdm:priority": 20},
                "xdm:representations": reps,
                "xdm:selectionConstraint": self.window,
                "xdm:frequencyCappingConstraints": caps,
            },
        )
        self.b = create(
            "personalized-offer",
            {
                "xdm:name": "B",
                "xdm:status": "approved",
                "xdm:rank": {"xdm:priority": 10},
                "xdm:representations": reps,
            },
        )
        fallback = create(
            "fallback-offer",
            {"xdm:name": "F", "xdm:status": "approved", "xdm:representations": reps},
        )["@id"]
        collection = create(
            "offer-filter",
            {
                "xdm:name": "c",
                "xdm:filterType": "offers",
                "xdm:ids": [self.a["@id"], self.b["@id"]],
            },
        )["@id"]
        self.decision = create(
            "offer-activity",
            {
                "xdm:name": "d",
                "xdm:status": "live",
                "xdm:fallback": fallback,
                "xdm:criteria": [{"xdm:optionSelection": {"xdm:filter": collection}}],
            },
        )["@id"]

    def decide(self, who="alice", placement=None, dry=False, namespace="Email"):
        body = {
            "xdm:propositionRequests": [
                {"xdm:placementId": placement or self.p1, "xdm:activityId": self.decision}
            ],
            "xdm:profiles": [{"xdm:identityMap": {namespace: [{"xdm:id": who}]}}],
            "xdm:dryRun": dry,
        }
        response = self.tenant.client.post(
            f"/data/core/ode/{self.tenant.container}/decisions",
            json=body,
            headers={**self.tenant.headers, "Content-Type": DECIDE},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        proposition = answer["xdm:propositions"][0]
        chosen = proposition["xdm:options"][0]["xdm:id"] if "xdm:options" in proposition else None
        return answer["xdm:propositionId"], chosen

    def feedback(
        self,
        proposition_id,
        offer_id,
        kind="decisioning.propositionDisplay",
        event_id=None,
        **extra,
    ):
        event = {
            "xdm:timestamp": "2026-01-01T00:00:00Z",
            "xdm:eventType": kind,
            "https://ns.adobe.com/experience/decisioning/propositions": [
                {
                    "xdm:items": [{"xdm:id": offer_id.removeprefix("xcore:")}],
                    "xdm:id": proposition_id,
                }
            ],
            **extra,
        }
        if event_id:
            event["@id"] = event_id
        response = self.tenant.client.post(
            "/data/core/nextoffer/events", json={"events": [event]}, headers=self.tenant.headers
        )
        assert response.status_code in (200, 207), response.text
        return response.json()


def save_offer_with(tenant, placement, caps):
    body = {
        "xdm:name": "x",
        "xdm:status": "draft",
        "xdm:frequencyCappingConstraints": caps,
        "xdm:representations": [
            {
                "xdm:placement": placement,
                "xdm:components": [{"@type": HTML, "dc:format": "text/html"}],
            }
        ],
    }
    return tenant.client.post(
        tenant.url(),
        json=body,
        headers={
            **tenant.headers,
            "Content-Type": 'application/schema-instance+json; version=1;  schema="https://ns.adobe.com/experience/offer-management/personalized-offer;version=0.5"',
        },
    )


@pytest.mark.parametrize(
    "caps",
    [
        [{"xdm:limit": 0}],
        [{"xdm:limit": -1}],
        [{"xdm:limit": 1, "xdm:events": ["pageview"]}],
        [{"xdm:limit": 1, "xdm:repeat": {"xdm:unit": "day", "xdm:unitCount": 800}}],
        [{"xdm:limit": 1}] * 11,
        [{"xdm:limit": 1, "xdm:events": ["custom"], "xdm:customQuery": "eventType = "}],
    ],
)
def test_bad_capping_rules_are_422_at_save_time(tenant, placement, caps):
    response = save_offer_with(tenant, placement, caps)
    assert response.status_code == 422, response.text
    assert response.json()["pointer"].startswith("/xdm:frequencyCappingConstraints")


def test_decision_rule_per_profile(tenant):
    shop = Shop(tenant, [{"xdm:limit": 2, "xdm:scope": "profile"}])
    assert [shop.decide()[1] for _ in range(3)] == [shop.a["@id"], shop.a["@id"], shop.b["@id"]]
    assert shop.decide("bob")[1] == shop.a["@id"]


def test_the_longest_identity_without_a_profile_is_capped_like_any_other(tenant):
    # A namespace of 255 characters and an id of 1,024 (the longest each may be), in
    # characters of two bytes: its counters are named by a digest, on PostgreSQL too,
    # where the text form passed the columns' bounds (a 503 after every retry).
    namespace, who = "é" * 255, "ü" * 1024
    shop = Shop(tenant, [{"xdm:limit": 1, "xdm:scope": "profile", "xdm:events": ["impression"]}])
    first, chosen = shop.decide(who, namespace=namespace)
    assert chosen == shop.a["@id"]
    assert shop.decide(who, namespace=namespace)[1] == shop.a["@id"]  # nothing seen yet
    assert shop.feedback(first, chosen, event_id="imp-1")["stored"] == 1
    assert shop.decide(who, namespace=namespace)[1] == shop.b["@id"]
    assert shop.decide(who[:-1], namespace=namespace)[1] == shop.a["@id"]  # another identity


def test_decision_rule_per_placement(tenant):
    shop = Shop(tenant, [{"xdm:limit": 1, "xdm:scope": "global", "xdm:entity": "placement"}])
    assert shop.decide(placement=shop.p1)[1] == shop.a["@id"]
    assert shop.decide(placement=shop.p1)[1] == shop.b["@id"]
    assert shop.decide(placement=shop.p2)[1] == shop.a["@id"]


def test_impression_cap_takes_effect_on_the_next_decision_and_counts_each_event_once(tenant):
    shop = Shop(tenant, [{"xdm:limit": 2, "xdm:scope": "profile", "xdm:events": ["impression"]}])
    first, chosen = shop.decide()
    assert chosen == shop.a["@id"]
    shop.feedback(first, chosen, event_id="imp-1")
    again = shop.feedback(first, chosen, event_id="imp-1")
    assert again["duplicates"] == 1
    assert shop.decide()[1] == shop.a["@id"]  # one impression counted, limit 2
    shop.feedback(first, chosen, event_id="imp-2")
    assert shop.decide()[1] == shop.b["@id"]
    assert shop.decide("bob")[1] == shop.a["@id"]


def test_click_cap_and_dry_run_flagged_feedback(tenant):
    shop = Shop(tenant, [{"xdm:limit": 1, "xdm:scope": "global", "xdm:events": ["click"]}])
    proposition, chosen = shop.decide()
    shop.feedback(proposition, chosen, kind="decisioning.propositionDisplay", event_id="d1")
    shop.feedback(
        proposition,
        chosen,
        kind="decisioning.propositionInteract",
        event_id="c0",
        data={"__adobe": {"ajo": {"dryRun": True}}},
    )
    assert shop.decide()[1] == shop.a["@id"]
    shop.feedback(proposition, chosen, kind="decisioning.propositionInteract", event_id="c1")
    assert shop.decide("anyone")[1] == shop.b["@id"]


def test_feedback_for_an_unknown_proposition_is_stored_and_counts_nothing(tenant):
    shop = Shop(tenant, [{"xdm:limit": 1, "xdm:events": ["impression"]}])
    event = {
        "identityMap": {"Email": [{"id": "alice"}]},
        "timestamp": "2026-01-01T00:00:00Z",
        "eventType": "decisioning.propositionDisplay",
        "_experience": {
            "decisioning": {
                "propositions": [{"id": "no-such-proposition", "items": [{"id": shop.a["@id"]}]}]
            }
        },
    }
    body = tenant.client.post(
        "/data/core/nextoffer/events", json={"events": [event]}, headers=tenant.headers
    ).json()
    assert body["stored"] == 1
    assert shop.decide()[1] == shop.a["@id"]


def test_custom_event_rule_counts_matching_events(tenant):
    shop = Shop(
        tenant,
        [
            {
                "xdm:limit": 1,
                "xdm:scope": "profile",
                "xdm:events": ["custom"],
                "xdm:customQuery": 'eventType = "commerce.checkout"',
            }
        ],
    )

    def event(kind, n):
        return {
            "identityMap": {"Email": [{"id": "carol"}]},
            "timestamp": "2026-01-01T00:00:00Z",
            "eventType": kind,
            "_id": f"e{n}",
        }

    tenant.client.post(
        "/data/core/nextoffer/events",
        json={"events": [event("page.view", 1)]},
        headers=tenant.headers,
    )
    assert shop.decide("carol")[1] == shop.a["@id"]
    tenant.client.post(
        "/data/core/nextoffer/events",
        json={"events": [event("commerce.checkout", 2)]},
        headers=tenant.headers,
    )
    assert shop.decide("carol")[1] == shop.b["@id"]
    assert shop.decide("dave")[1] == shop.a["@id"]


def test_moving_the_start_after_the_old_end_resets_the_counts(tenant):
    shop = Shop(tenant, [{"xdm:limit": 1, "xdm:scope": "profile"}])
    assert shop.decide()[1] == shop.a["@id"]
    assert shop.decide()[1] == shop.b["@id"]
    url = tenant.url(f"/{shop.a['instanceId']}")
    extend = [
        {
            "op": "replace",
            "path": "/_instance/xdm:selectionConstraint/xdm:endDate",
            "value": "2100-01-01T00:00:00Z",
        }
    ]
    assert (
        tenant.client.patch(
            url, json=extend, headers={**tenant.headers, "Content-Type": PATCH}
        ).status_code
        == 200
    )
    assert shop.decide()[1] == shop.b["@id"]  # extending the end carries the counts forward
    restart = [
        {
            "op": "replace",
            "path": "/_instance/xdm:selectionConstraint/xdm:endDate",
            "value": "2021-01-01T00:00:00Z",
        },
    ]
    assert (
        tenant.client.patch(
            url, json=restart, headers={**tenant.headers, "Content-Type": PATCH}
        ).status_code
        == 200
    )
    later = [
        {
            "op": "replace",
            "path": "/_instance/xdm:selectionConstraint/xdm:startDate",
            "value": "2022-01-01T00:00:00Z",
        },
        {
            "op": "replace",
            "path": "/_instance/xdm:selectionConstraint/xdm:endDate",
            "value": "2100-01-01T00:00:00Z",
        },
    ]
    assert (
        tenant.client.patch(
            url, json=later, headers={**tenant.headers, "Content-Type": PATCH}
        ).status_code
        == 200
    )
    assert shop.decide()[1] == shop.a["@id"]


def test_offers_report_counts_propositions_impressions_clicks(tenant):
    shop = Shop(tenant, [])
    proposition, chosen = shop.decide()
    shop.decide(dry=True)
    shop.feedback(proposition, chosen, event_id="i1")
    shop.feedback(proposition, chosen, event_id="i2")
    shop.feedback(proposition, chosen, kind="decisioning.propositionInteract", event_id="k1")
    report = tenant.client.get(
        "/data/core/nextoffer/reports/offers",
        params={"containerId": tenant.container, "from": "2025-12-01", "to": "2099-01-01"},
        headers=tenant.headers,
    )
    assert report.status_code == 400  # over a year
    report = tenant.client.get(
        "/data/core/nextoffer/reports/offers",
        params={"containerId": tenant.container, "from": "2025-12-31"},
        headers=tenant.headers,
    ).json()
    rows = {(r["day"], r["offerId"]): r for r in report["rows"]}
    feedback_day = rows[("2026-01-01", shop.a["@id"])]
    assert (
        feedback_day["impressions"],
        feedback_day["clicks"],
        feedback_day["clickThroughRate"],
    ) == (2, 1, 0.5)
    assert sum(r["propositions"] for r in report["rows"] if r["offerId"] == shop.a["@id"]) == 1


def test_the_offers_report_equals_the_one_computed_from_the_events(tenant):
    """The report is folded from the decision events behind the answers: read through the
    API right after the decisions, it counts exactly what the recorded events proposed
    (A until each profile's cap, then B); dry runs record nothing."""
    shop = Shop(tenant, [{"xdm:limit": 2, "xdm:scope": "profile"}])
    for n in range(12):
        shop.decide(who=f"p{n % 3}", placement=shop.p1 if n % 2 else shop.p2)
    shop.decide(who="p0", dry=True)
    events = tenant.client.get(
        f"/data/core/ode/{tenant.container}/decision-events",
        params={"limit": "1000"},
        headers=tenant.headers,
    ).json()["events"]
    assert len(events) == 12
    expected: dict[tuple[str, str], int] = {}
    for event in events:
        for proposition in event["propositions"]:
            offers = [option["id"] for option in proposition["options"]]
            if not offers and proposition["fallback"] is not None:
                offers = [proposition["fallback"]]
            for offer in offers:
                key = (event["timestamp"][:10], offer)
                expected[key] = expected.get(key, 0) + 1
    report = tenant.client.get(
        "/data/core/nextoffer/reports/offers",
        params={"containerId": tenant.container, "from": "2025-12-31"},
        headers=tenant.headers,
    ).json()
    folded = {(r["day"], r["offerId"]): r["propositions"] for r in report["rows"]}
    assert folded == expected
    assert sum(expected.values()) == 12
    assert {offer for _, offer in expected} == {shop.a["@id"], shop.b["@id"]}

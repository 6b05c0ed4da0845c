"""Two orgs x two sandboxes x every endpoint and verb: nothing crosses tenants.

Each tenant gets the demo library, a profile under the *same* identity as every other
tenant's, an event and a decision. Then every tenant calls every endpoint with every other
tenant's container, instance, decision and placement ids: container paths answer 404
exactly like a missing thing (never 403), its own container never shows another's
things, and every tenant's data is unchanged afterwards. (``test_tenancy.py`` covers the
instance verbs alone; this is the whole API.)
"""

from __future__ import annotations

import itertools

import pytest

from support.endpoints import CALLS, DECIDE_TYPE
from support.live import decision_request, headers_of
from support.live import make_tenant as seeded_tenant

TENANTS = [
    ("ACME@AdobeOrg", "prod"),
    ("ACME@AdobeOrg", "dev"),
    ("GLOBEX@AdobeOrg", "prod"),
    ("GLOBEX@AdobeOrg", "dev"),
]
SHARED = "shared@example.com"
OM = "https://ns.adobe.com/experience/offer-management/"
#: Calls whose path or query names a container.
CONTAINER_CALLS = [c for c in CALLS if "{C}" in c.path or "{C}" in c.params.values()]


class T:
    def __init__(self, client, db_url, org, sandbox):
        self.creds, self.ids = seeded_tenant(db_url, org, sandbox, seed=True)
        self.org, self.sandbox = org, sandbox
        self.label = f"{org}/{sandbox}"
        self.client = client
        self.headers = headers_of(self.creds)
        self.container = self.creds.container_id
        self.fill = {
            "C": self.container,
            "I": self.ids["placement@instance"],
            "A": self.ids["decision"],
            "P": self.ids["placement"],
            "E": SHARED,
            "D": self.creds.datastream_id,
        }

    def send(self, call, fill):
        path, params, content, extra = call.render(fill)
        return self.client.request(
            call.method, path, params=params, content=content, headers={**self.headers, **extra}
        )

    def at_ids(self):
        return {v for k, v in self.ids.items() if not k.endswith("@instance")}


@pytest.fixture
def tenants(client, db_url):
    made = [T(client, db_url, org, sandbox) for org, sandbox in TENANTS]
    for t in made:
        upsert = client.post(
            "/data/core/nextoffer/profiles",
            headers=t.headers,
            json={"identityMap": {"Email": [{"id": SHARED}]}, "profile": {"owner": t.label}},
        )
        assert upsert.status_code == 201, upsert.text
        events = client.post(
            "/data/core/nextoffer/events",
            headers=t.headers,
            json={
                "events": [
                    {
                        "identityMap": {"Email": [{"id": SHARED}]},
                        "timestamp": "2026-01-01T00:00:00Z",
                        "eventType": "web.webpagedetails.pageViews",
                        "_id": f"event-{t.label}",
                    }
                ]
            },
        )
        assert events.status_code == 200 and events.json()["stored"] == 1, events.text
        decided = client.post(
            f"/data/core/ode/{t.container}/decisions",
            headers={**t.headers, "Content-Type": DECIDE_TYPE},
            json=decision_request(t.ids, SHARED),
        )
        assert decided.status_code == 200, decided.text
    return made


def assert_not_found(response, where):
    assert response.status_code == 404, (where, response.status_code, response.text[:300])
    body = response.json()
    assert body["type"] == "https://nextoffer.dev/problems/not-found", (where, body)
    assert set(body) <= {"type", "title", "status", "detail", "pointer"}, (where, body)


def test_every_container_call_into_another_tenant_is_404(tenants):
    assert len(CONTAINER_CALLS) >= 12
    for owner, caller in itertools.permutations(tenants, 2):
        for call in CONTAINER_CALLS:
            where = (caller.label, "→", owner.label, call.name)
            assert_not_found(caller.send(call, owner.fill), where)


def test_another_tenants_ids_are_404_or_absent_in_ones_own_container(tenants):
    by_id = {"get", "put", "patch", "delete", "decide"}
    by_id |= {"dps-get", "dps-patch", "dps-delete", "ods-decide"}  # ids, no container
    for owner, caller in itertools.permutations(tenants, 2):
        # The caller's container, the owner's instance, decision and placement ids.
        fill = {**owner.fill, "C": caller.container}
        for call in CALLS:
            if call.name in by_id:
                assert_not_found(
                    caller.send(call, fill),
                    (caller.label, "own container, ids of", owner.label, call.name),
                )
        offers = caller.send(next(c for c in CALLS if c.name == "activity-offers"), fill)
        assert offers.status_code == 200 and offers.json() == {"xdm:activityOffers": []}, (
            offers.text
        )


def test_reads_in_ones_own_container_show_only_ones_own_things(tenants):
    for t in tenants:
        others = set().union(*(o.at_ids() for o in tenants if o is not t))
        seen: set[str] = set()
        for type_name in (
            "offer-placement",
            "personalized-offer",
            "fallback-offer",
            "offer-filter",
            "tag",
            "eligibility-rule",
            "offer-activity",
        ):
            for path in (
                f"/data/core/xcore/{t.container}/instances",
                f"/data/core/xcore/{t.container}/queries/core/search",
            ):
                page = t.client.get(path, params={"schema": OM + type_name}, headers=t.headers)
                assert page.status_code == 200, page.text
                seen |= {r["_instance"]["@id"] for r in page.json()["_embedded"]["results"]}
        assert seen == t.at_ids(), t.label
        assert not seen & others
        home = t.client.get("/data/core/xcore/", headers=t.headers).json()
        assert [c["instanceId"] for c in home["_embedded"][next(iter(home["_embedded"]))]] == [
            t.container
        ]
        profile = t.client.get(
            "/data/core/nextoffer/profiles",
            params={"namespace": "Email", "id": SHARED},
            headers=t.headers,
        )
        assert profile.json()["profile"] == {"owner": t.label}
        events = t.client.get(
            f"/data/core/ode/{t.container}/decision-events", headers=t.headers
        ).json()
        assert events["count"] == 1
        assert all(
            t.ids["decision"] in str(e) and not any(o in str(e) for o in others)
            for e in events["events"]
        )
        diagnostics = t.client.get(
            f"/data/core/ode/{t.container}/diagnostics", headers=t.headers
        ).text
        assert not any(o in diagnostics for o in others)
        report = t.client.get(
            "/data/core/nextoffer/reports/offers",
            params={"containerId": t.container},
            headers=t.headers,
        )
        assert report.status_code == 200 and not any(o in report.text for o in others)


def test_profile_and_event_writes_stay_in_their_tenant(tenants):
    actor, *rest = tenants
    update = actor.client.post(
        "/data/core/nextoffer/profiles",
        headers=actor.headers,
        json={"identityMap": {"Email": [{"id": SHARED}]}, "profile": {"owner": "changed"}},
    )
    assert update.status_code == 200
    # The same event id in another tenant is that tenant's own event, not a duplicate.
    again = actor.client.post(
        "/data/core/nextoffer/events",
        headers=actor.headers,
        json={
            "events": [
                {
                    "identityMap": {"Email": [{"id": SHARED}]},
                    "timestamp": "2026-01-01T00:00:00Z",
                    "eventType": "web.webpagedetails.pageViews",
                    "_id": f"event-{rest[0].label}",
                }
            ]
        },
    )
    assert again.json()["stored"] == 1, again.text
    deleted = actor.client.delete(
        "/data/core/nextoffer/profiles",
        params={"namespace": "Email", "id": SHARED},
        headers=actor.headers,
    )
    assert deleted.status_code == 204
    for t in rest:
        profile = t.client.get(
            "/data/core/nextoffer/profiles",
            params={"namespace": "Email", "id": SHARED},
            headers=t.headers,
        )
        assert profile.status_code == 200 and profile.json()["profile"] == {"owner": t.label}


def test_nothing_changed_after_every_cross_tenant_call(tenants):
    for owner, caller in itertools.permutations(tenants, 2):
        for call in CONTAINER_CALLS:
            caller.send(call, owner.fill)
    for t in tenants:
        placement = t.client.get(
            f"/data/core/xcore/{t.container}/instances/{t.ids['placement@instance']}",
            headers=t.headers,
        )
        assert placement.status_code == 200 and placement.json()["repo:etag"] == 1
        assert placement.json()["_instance"]["xdm:name"] == "Home page banner"
        listed = t.client.get(
            f"/data/core/xcore/{t.container}/instances",
            params={"schema": OM + "offer-placement"},
            headers=t.headers,
        )
        assert listed.json()["_embedded"]["total"] == 1, t.label


def test_another_tenants_datastream_is_404_and_listings_show_only_ones_own(tenants):
    by_id = [
        c for c in CALLS if c.name in ("datastream-get", "datastream-patch", "datastream-delete")
    ]
    assert len(by_id) == 3
    for owner, caller in itertools.permutations(tenants, 2):
        for call in by_id:
            assert_not_found(
                caller.send(call, owner.fill), (caller.label, "→", owner.label, call.name)
            )
    for t in tenants:
        listed = t.client.get("/data/core/nextoffer/datastreams", headers=t.headers).json()
        assert [d["datastreamId"] for d in listed["datastreams"]] == [t.creds.datastream_id]
        own = t.client.get(
            f"/data/core/nextoffer/datastreams/{t.creds.datastream_id}", headers=t.headers
        )
        assert own.json()["allowedOrigins"] == [], own.text  # no other tenant's PATCH landed

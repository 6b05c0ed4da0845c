"""Segment definitions in offers' and criteria's segment constraints: membership is
evaluated from the definition, or read from the profile's ``segmentMembership`` — either
source suffices — and a changed definition is seen by the next decision."""

from __future__ import annotations

from typing import Any

from support.api import HTML, WEB, Tenant
from support.batch import SEGMENTS, add_profiles, segment

DECIDE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'


def library(tenant: Tenant, segment_id: str) -> dict[str, str]:
    create = tenant.create
    placement = create(
        "offer-placement", {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]
    reps = [{"xdm:placement": placement, "xdm:components": [{"@type": HTML}]}]
    window = {"xdm:startDate": "2020-01-01T00:00:00Z", "xdm:endDate": "2099-01-01T00:00:00Z"}
    offer = create(
        "personalized-offer",
        {
            "xdm:name": "X",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:selectionConstraint": window,
        },
    )["@id"]
    fallback = create(
        "fallback-offer", {"xdm:name": "F", "xdm:status": "approved", "xdm:representations": reps}
    )["@id"]
    collection = create(
        "offer-filter", {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": [offer]}
    )["@id"]
    decision = create(
        "offer-activity",
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [
                {
                    "xdm:placements": [placement],
                    "xdm:optionSelection": {"xdm:filter": collection},
                    "xdm:profileConstraints": {
                        "xdm:profileConstraintType": "anySegments",
                        "xdm:segmentIdentities": [
                            {"_id": segment_id, "xdm:namespace": {"xdm:code": "ups"}}
                        ],
                    },
                }
            ],
        },
    )["@id"]
    return {"placement": placement, "offer": offer, "fallback": fallback, "decision": decision}


def chosen(tenant: Tenant, ids: dict[str, str], email: str) -> str:
    body: dict[str, Any] = {
        "xdm:propositionRequests": [
            {"xdm:placementId": ids["placement"], "xdm:activityId": ids["decision"]}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": email}]}}],
        "xdm:dryRun": True,
    }
    response = tenant.client.post(
        f"/data/core/ode/{tenant.container}/decisions",
        json=body,
        headers={**tenant.headers, "Content-Type": DECIDE},
    )
    assert response.status_code == 200, response.text
    proposition = response.json()["xdm:propositions"][0]
    if "xdm:options" in proposition:
        return str(proposition["xdm:options"][0]["xdm:id"])
    return str(proposition["xdm:fallback"]["xdm:id"])


def test_a_segment_constraint_naming_a_definition(tenant: Tenant) -> None:
    segment_id = segment(tenant, "age >= 18")
    ids = library(tenant, segment_id)
    add_profiles(tenant, 20)  # p0000..p0019: age = n
    assert chosen(tenant, ids, "p0019@example.com") == ids["offer"]  # the definition is true
    assert chosen(tenant, ids, "p0010@example.com") == ids["fallback"]  # false, no membership
    # The profile's own segmentMembership is the other source: either suffices.
    member = {
        "identityMap": {"Email": [{"id": "p0010@example.com"}]},
        "profile": {"age": 10, "segmentMembership": {"ups": {segment_id: {"status": "realized"}}}},
    }
    tenant.client.post("/data/core/nextoffer/profiles", json=member, headers=tenant.headers)
    assert chosen(tenant, ids, "p0010@example.com") == ids["offer"]
    # A changed definition reaches the next decision (the snapshot is compiled again).
    patched = tenant.client.patch(
        f"{SEGMENTS}/{segment_id}",
        json={"expression": {"type": "PQL", "format": "pql/text", "value": "age >= 19"}},
        headers=tenant.headers,
    )
    assert patched.status_code == 200
    assert chosen(tenant, ids, "p0018@example.com") == ids["fallback"]
    assert chosen(tenant, ids, "p0019@example.com") == ids["offer"]

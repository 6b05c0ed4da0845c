"""Deleting a profile deletes the decision events recorded for it, in the background
(``service/retention.py``): those under its id and those made for one of its identities
before it had a profile, in its own org and sandbox only; the offers report keeps them."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from nextoffer.root import NextOffer
from support.api import Tenant, make_tenant
from support.edge import DECIDE_TYPE, Library

PROFILES = "/data/core/nextoffer/profiles"


def decide(tenant: Tenant, library: Library, email: str) -> None:
    body = {
        "xdm:propositionRequests": [
            {"xdm:placementId": library.placement, "xdm:activityId": library.decision}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": email}]}}],
    }
    response = tenant.client.post(
        f"/data/core/ode/{tenant.container}/decisions",
        json=body,
        headers={**tenant.headers, "Content-Type": DECIDE_TYPE},
    )
    assert response.status_code == 200, response.text


def add_profile(tenant: Tenant, email: str) -> None:
    response = tenant.client.post(
        PROFILES,
        json={"identityMap": {"Email": [{"id": email}]}, "profile": {"tier": "gold"}},
        headers=tenant.headers,
    )
    assert response.status_code in (200, 201), response.text


def delete_profile(tenant: Tenant, email: str) -> None:
    response = tenant.client.delete(
        PROFILES, params={"namespace": "Email", "id": email}, headers=tenant.headers
    )
    assert response.status_code in (200, 204), response.text


def logged(no: NextOffer, container: str) -> list[str]:
    """The identities of the container's decision events."""
    with no.store.session() as session:
        events = session.runtime.decision_events(container, since_us=0, limit=1000)
    return sorted(e["identity"]["id"] for e in events)


def propositions(no: NextOffer, container: str) -> int:
    no.path.fold()
    with no.store.session() as session:
        rows: list[dict[str, Any]] = session.runtime.offer_report(
            container, first_day="2000-01-01", last_day="2999-12-31"
        )
    return sum(row["propositions"] for row in rows)


def test_a_deleted_profile_s_decision_events_go_with_it(
    client: TestClient, tenant: Tenant, db_url: str
) -> None:
    other = make_tenant(client, db_url, "Other@AdobeOrg", "prod")
    ours = Library(client, tenant.headers, tenant.container, [])
    theirs = Library(client, other.headers, other.container, [])
    add_profile(tenant, "alice@x")
    add_profile(tenant, "bob@x")
    decide(tenant, ours, "carol@x")  # before carol had a profile: under her identity
    add_profile(tenant, "carol@x")
    for email in ("alice@x", "alice@x", "bob@x", "carol@x"):
        decide(tenant, ours, email)
    decide(other, theirs, "alice@x")  # another org's visitor of the same address
    no: NextOffer = client.app.state.nextoffer  # type: ignore[attr-defined]
    before = propositions(no, tenant.container)
    assert before == 5

    delete_profile(tenant, "alice@x")
    delete_profile(tenant, "carol@x")
    decide(tenant, ours, "bob@x")  # the newest event is never deleted: not theirs
    no.path.fold()
    pruned = no.retention.prune()

    assert pruned.erased == 4
    assert logged(no, tenant.container) == ["bob@x", "bob@x"]
    assert logged(no, other.container) == ["alice@x"]
    assert propositions(no, tenant.container) == before + 1  # the report keeps counting them
    assert no.retention.prune().erased == 0  # nothing more of theirs

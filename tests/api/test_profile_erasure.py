"""Deleting a profile deletes the decision events recorded for it, in the background
(``service/retention.py``): those under its id and those made for one of its identities
before it had a profile, in its own org and sandbox only; the offers report keeps them.
Its cap counters go the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.root import NextOffer
from nextoffer.service import retention
from nextoffer.service.retention import Retention
from nextoffer.settings import Settings
from nextoffer.storage import erasures
from nextoffer.storage import tables as t
from support.api import Tenant, make_tenant
from support.backends import redis_url
from support.edge import DECIDE_TYPE, Library

PROFILES = "/data/core/nextoffer/profiles"


PROFILE_CAP = [{"xdm:limit": 1, "xdm:scope": "profile"}]  # one decision per profile


def proposed(tenant: Tenant, library: Library, email: str) -> str:
    """The offer decided for ``email`` (recorded)."""
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
    [proposition] = response.json()["xdm:propositions"]
    [option] = proposition.get("xdm:options") or [proposition["xdm:fallback"]]
    return str(option["xdm:id"])


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
    proposed(tenant, ours, "carol@x")  # before carol had a profile: under her identity
    add_profile(tenant, "carol@x")
    for email in ("alice@x", "alice@x", "bob@x", "carol@x"):
        proposed(tenant, ours, email)
    proposed(other, theirs, "alice@x")  # another org's visitor of the same address
    no: NextOffer = client.app.state.nextoffer  # type: ignore[attr-defined]
    before = propositions(no, tenant.container)
    assert before == 5

    delete_profile(tenant, "alice@x")
    delete_profile(tenant, "carol@x")
    proposed(tenant, ours, "bob@x")  # the newest event is never deleted: not theirs
    no.path.fold()
    pruned = no.retention.prune()

    assert pruned.erased == 4
    assert logged(no, tenant.container) == ["bob@x", "bob@x"]
    assert logged(no, other.container) == ["alice@x"]
    assert propositions(no, tenant.container) == before + 1  # the report keeps counting them
    assert no.retention.prune().erased == 0  # nothing more of theirs


def counted(no: NextOffer, container: str) -> set[str]:
    """The scopes the container's cap counters count under."""
    c = t.cap_counters.c
    with no.store.session() as session:
        codes = session.conn.execute(
            select(c.counter_key).where(c.container_id == container)
        ).scalars()
        return {code.rpartition("|")[2] for code in codes} - {""}  # "": everyone's


def later(no: NextOffer, minutes: float) -> Retention:
    """The root's retention, as a pass ``minutes`` from now would run it."""
    when = datetime.now(UTC) + timedelta(minutes=minutes)
    return Retention(
        no.store,
        counters=[no.counters],
        decision_events_days=0,
        experience_events_days=0,
        clock=lambda: when,
    )


def test_a_deleted_profile_s_cap_counters_go_with_it(
    client: TestClient, tenant: Tenant, db_url: str
) -> None:
    other = make_tenant(client, db_url, "Other@AdobeOrg", "prod")
    ours = Library(client, tenant.headers, tenant.container, PROFILE_CAP)
    theirs = Library(client, other.headers, other.container, PROFILE_CAP)
    no: NextOffer = client.app.state.nextoffer  # type: ignore[attr-defined]
    assert proposed(tenant, ours, "carol@x") == ours.a  # counted under her identity's text
    assert proposed(tenant, ours, "carol@x") == ours.b  # A's cap is reached
    assert proposed(other, theirs, "carol@x") == theirs.a  # another org's visitor
    add_profile(tenant, "carol@x")
    add_profile(tenant, "dave@x")
    assert proposed(tenant, ours, "carol@x") == ours.a  # counted under her profile's id
    assert proposed(tenant, ours, "dave@x") == ours.a
    scopes = counted(no, tenant.container)
    assert "identity:Email:carol@x" in scopes and len(scopes) == 3

    delete_profile(tenant, "carol@x")
    pruned = no.retention.prune()

    # Her identity's counters go at once; her profile id's wait for decisions other
    # processes make from their profile caches to settle.
    assert pruned.counters == 1
    assert "identity:Email:carol@x" not in counted(no, tenant.container)
    assert len(counted(no, tenant.container)) == 2
    assert counted(no, other.container) == {"identity:Email:carol@x"}
    assert later(no, 2).prune().counters == 1
    assert len(counted(no, tenant.container)) == 1  # dave's
    assert later(no, 2).prune().counters == 0  # nothing queued is left
    # Back as a visitor without a profile, she is counted from zero.
    assert proposed(tenant, ours, "carol@x") == ours.a


def test_erasures_of_counters_redis_holds_wait_for_a_server_with_redis(
    client: TestClient,
    tenant: Tenant,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A shell's `db prune` without NEXTOFFER_REDIS walks the database's counters only:
    # it must not unqueue an erasure whose counters are in Redis, nor let such erasures
    # (however many, and older) keep another tenant's from being done.
    monkeypatch.setattr(erasures, "ERASED_BATCH", 1)
    monkeypatch.setattr(retention, "ERASED_BATCH", 1)
    other = make_tenant(client, db_url, "Other@AdobeOrg", "prod")
    ours = Library(client, tenant.headers, tenant.container, PROFILE_CAP)
    theirs = Library(client, other.headers, other.container, PROFILE_CAP)
    no: NextOffer = client.app.state.nextoffer  # type: ignore[attr-defined]
    assert proposed(tenant, ours, "erin@x") == ours.a
    assert proposed(other, theirs, "fay@x") == theirs.a
    add_profile(tenant, "erin@x")
    delete_profile(tenant, "erin@x")  # queued first: the oldest erasure due
    add_profile(other, "fay@x")
    delete_profile(other, "fay@x")
    with no.store.session(write=True) as session:
        session.conn.execute(
            insert(t.redis_counter_markers).values(container_id=tenant.container, placed="x")
        )

    assert later(no, 2).prune().counters == 1  # fay's, under her identity
    assert "identity:Email:erin@x" in counted(no, tenant.container)
    assert counted(no, other.container) == set()
    with no.store.session() as session:
        queued = session.conn.execute(select(t.counter_erasures.c.org_id)).scalars().all()
    assert set(queued) == {tenant.creds.org}
    assert "erases them" in caplog.text


def test_a_deleted_profile_s_cap_counters_in_redis_go_with_it(tmp_path: Path) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url=redis_url(), freeze_heap=False
    )
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")
        ours = Library(client, tenant.headers, tenant.container, PROFILE_CAP)
        no: NextOffer = client.app.state.nextoffer  # type: ignore[attr-defined]
        assert proposed(tenant, ours, "carol@x") == ours.a  # under her identity, in Redis
        assert proposed(tenant, ours, "carol@x") == ours.b
        add_profile(tenant, "carol@x")
        delete_profile(tenant, "carol@x")

        assert no.retention.prune().counters == 1
        raw = redis.Redis.from_url(redis_url())
        try:
            names = raw.keys(f"nextoffer:cap:{{{tenant.container}}}:*")
        finally:
            raw.close()
        assert names and not [n for n in names if n.endswith(b"|identity:Email:carol@x")]
        assert proposed(tenant, ours, "carol@x") == ours.a  # counted from zero again


def test_counters_the_database_kept_from_before_redis_go_with_the_profile(
    tmp_path: Path,
) -> None:
    # helper-64: the database keeps the counters a deployment made without Redis (until
    # `admin counters --into-redis` moves them; a container Redis counted first, here
    # before the deployment left Redis and came back); a server with Redis erased only
    # Redis's, and unqueued the erasure.
    db = f"sqlite:///{tmp_path / 'n.db'}"
    settings = Settings(db_url=db, redis_url=redis_url(), freeze_heap=False)
    with TestClient(create_app(settings)) as client:  # counted in Redis: marked
        tenant = make_tenant(client, db, "ACME@AdobeOrg", "prod")
        ours = Library(client, tenant.headers, tenant.container, PROFILE_CAP)
        assert proposed(tenant, ours, "carol@x") == ours.a
    with TestClient(create_app(Settings(db_url=db, freeze_heap=False))) as client:
        tenant = make_tenant(client, db, "ACME@AdobeOrg", "prod")
        ours.client, ours.headers = client, tenant.headers
        assert proposed(tenant, ours, "carol@x") == ours.a  # in the database, from zero
    with TestClient(create_app(settings)) as client:  # the deployment has Redis again
        tenant = make_tenant(client, db, "ACME@AdobeOrg", "prod")
        ours.client, ours.headers = client, tenant.headers
        add_profile(tenant, "carol@x")
        delete_profile(tenant, "carol@x")
        no: NextOffer = client.app.state.nextoffer  # type: ignore[attr-defined]
        assert no.retention.prune().counters == 2  # the database's, and Redis's
        assert "identity:Email:carol@x" not in counted(no, tenant.container)

"""nextoffer's profile store: upsert by any identity, lookup, delete, events in batches."""

from __future__ import annotations

import pytest

from support.api import make_tenant


def upsert(tenant, identity_map, profile, expect):
    response = tenant.client.post(
        "/data/core/nextoffer/profiles",
        json={"identityMap": identity_map, "profile": profile},
        headers=tenant.headers,
    )
    assert response.status_code == expect, response.text
    return response.json()


def test_upsert_by_any_known_identity_updates_the_same_profile(tenant):
    first = upsert(tenant, {"Email": [{"id": "a@x.com"}]}, {"tier": "silver"}, 201)
    second = upsert(
        tenant, {"Email": [{"id": "a@x.com"}], "CRM": [{"id": "42"}]}, {"tier": "gold"}, 200
    )
    assert second["profileId"] == first["profileId"]
    third = upsert(tenant, {"CRM": [{"id": "42"}]}, {"tier": "platinum"}, 200)
    assert third["profileId"] == first["profileId"]
    got = tenant.client.get(
        "/data/core/nextoffer/profiles",
        params={"namespace": "Email", "id": "a@x.com"},
        headers=tenant.headers,
    ).json()
    assert got["profile"] == {"tier": "platinum"}
    assert got["identityMap"] == {"CRM": [{"id": "42"}], "Email": [{"id": "a@x.com"}]}


def test_identities_of_two_profiles_are_a_conflict(tenant):
    upsert(tenant, {"Email": [{"id": "a"}]}, {}, 201)
    upsert(tenant, {"Email": [{"id": "b"}]}, {}, 201)
    upsert(tenant, {"Email": [{"id": "a"}, {"id": "b"}]}, {}, 409)


def test_delete_then_lookup_is_404(tenant):
    upsert(tenant, {"Email": [{"id": "gone"}]}, {"x": 1}, 201)
    params = {"namespace": "Email", "id": "gone"}
    assert (
        tenant.client.delete(
            "/data/core/nextoffer/profiles", params=params, headers=tenant.headers
        ).status_code
        == 204
    )
    assert (
        tenant.client.get(
            "/data/core/nextoffer/profiles", params=params, headers=tenant.headers
        ).status_code
        == 404
    )
    assert (
        tenant.client.delete(
            "/data/core/nextoffer/profiles", params=params, headers=tenant.headers
        ).status_code
        == 404
    )


def test_bad_profile_bodies_are_4xx(tenant):
    for body, status in (
        ([], 400),
        ({"identityMap": {}}, 422),
        ({"identityMap": {"Email": [{"id": ""}]}}, 422),
        ({"identityMap": {"Email": [{"id": "a"}]}, "profile": [1]}, 422),
    ):
        response = tenant.client.post(
            "/data/core/nextoffer/profiles", json=body, headers=tenant.headers
        )
        assert response.status_code == status, (body, response.text)
    assert (
        tenant.client.get(
            "/data/core/nextoffer/profiles", params={"namespace": "Email"}, headers=tenant.headers
        ).status_code
        == 400
    )


def test_event_batch_stores_good_events_reports_bad_ones_and_counts_duplicates_once(tenant):
    good = {
        "identityMap": {"Email": [{"id": "e@x.com"}]},
        "timestamp": "2026-01-01T00:00:00Z",
        "eventType": "view",
        "_id": "ev-1",
    }
    events = [
        good,
        {"identityMap": {"Email": [{"id": "e@x.com"}]}, "timestamp": "yesterday"},
        "nope",
        good,
    ]
    response = tenant.client.post(
        "/data/core/nextoffer/events", json={"events": events}, headers=tenant.headers
    )
    assert response.status_code == 207
    body = response.json()
    assert (body["stored"], body["rejected"], body["duplicates"]) == (1, 2, 1)
    assert [r["status"] for r in body["results"]] == ["stored", "rejected", "rejected", "duplicate"]
    assert "timestamp" in body["results"][1]["detail"]
    # The event created the profile it names.
    got = tenant.client.get(
        "/data/core/nextoffer/profiles",
        params={"namespace": "Email", "id": "e@x.com"},
        headers=tenant.headers,
    )
    assert got.status_code == 200


def test_profiles_are_invisible_to_other_tenants(tenant, client, db_url):
    upsert(tenant, {"Email": [{"id": "private"}]}, {"secret": True}, 201)
    other = make_tenant(client, db_url, "ACME@AdobeOrg", "dev")
    params = {"namespace": "Email", "id": "private"}
    assert (
        client.get(
            "/data/core/nextoffer/profiles", params=params, headers=other.headers
        ).status_code
        == 404
    )
    assert (
        client.delete(
            "/data/core/nextoffer/profiles", params=params, headers=other.headers
        ).status_code
        == 404
    )
    created = upsert(other, {"Email": [{"id": "private"}]}, {"mine": True}, 201)
    mine = client.get("/data/core/nextoffer/profiles", params=params, headers=tenant.headers).json()
    assert mine["profile"] == {"secret": True} and mine["profileId"] != created["profileId"]


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("_id", "i" * 256, "_id must be a string of 1 to 255 characters"),
        ("eventType", "t" * 256, "eventType must be a string of up to 255 characters"),
        ("timestamp", "2026-01-01T00:00:00,5Z", "timestamp must be an RFC 3339 date-time"),
    ],
)
def test_an_event_past_a_bound_is_rejected_alone_on_every_backend(tenant, field, value, detail):
    # On PostgreSQL a column's bound refused the whole batch (400) where SQLite stored it.
    good = {"identityMap": {"Email": [{"id": "e@x.com"}]}, "timestamp": "2026-01-01T00:00:00Z"}
    events = [{**good, "_id": "kept"}, {**good, field: value}]
    response = tenant.client.post(
        "/data/core/nextoffer/events", json={"events": events}, headers=tenant.headers
    )
    assert response.status_code == 207, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["stored", "rejected"]
    assert body["results"][1]["detail"] == detail


def test_an_event_timestamp_keeps_any_number_of_fractional_digits(tenant):
    stamp = "2026-01-01T00:00:00." + "1" * 60 + "+05:30"  # longer than the stored column
    event = {"identityMap": {"Email": [{"id": "e@x.com"}]}, "timestamp": stamp, "_id": "e1"}
    response = tenant.client.post(
        "/data/core/nextoffer/events", json={"events": [event]}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1


@pytest.mark.parametrize("length", [255, 256])
def test_a_namespace_is_at_most_255_characters_on_every_backend(tenant, length):
    namespace = "n" * length
    upsert_response = tenant.client.post(
        "/data/core/nextoffer/profiles",
        json={"identityMap": {namespace: [{"id": "a@x.com"}]}, "profile": {}},
        headers=tenant.headers,
    )
    event = {"identityMap": {namespace: [{"id": "a@x.com"}]}, "timestamp": "2026-01-01T00:00:00Z"}
    events = tenant.client.post(
        "/data/core/nextoffer/events", json={"events": [event]}, headers=tenant.headers
    ).json()
    if length == 255:
        assert upsert_response.status_code == 201, upsert_response.text
        assert events["stored"] == 1
        return
    assert upsert_response.status_code == 422, upsert_response.text
    assert upsert_response.json()["pointer"] == f"/identityMap/{namespace}"
    assert events["results"][0]["detail"] == "a namespace is at most 255 characters"

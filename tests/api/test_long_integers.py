"""An integer past 64 bits in a body: ``orjson`` reads one as a float, so it was stored
with its digits lost (an offer's priority then failed the engine's own check). Every
body refuses one with a 400 naming where it is (docs/api.md); the bounds are kept exactly."""

from __future__ import annotations

import json

import pytest

from support.api import HTML, WEB, schema

TAG = schema("tag")


def post_tag(tenant, body: dict) -> object:
    return tenant.client.post(
        tenant.url(),
        content=json.dumps(body),
        headers={
            **tenant.headers,
            "Content-Type": f'application/schema-instance+json; schema="{TAG}"',
        },
    )


@pytest.mark.parametrize("value", [2**64, 2**70, -(2**63) - 1, 10**30])
def test_an_integer_past_64_bits_is_a_400_naming_where_and_nothing_is_stored(tenant, value):
    response = post_tag(tenant, {"xdm:name": "big", "x": [1, {"n": value}]})
    assert response.status_code == 400, response.text
    assert response.json()["pointer"] == "/x/1/n"
    assert response.json()["detail"].startswith("the request body: an integer past 64 bits")
    listed = tenant.client.get(tenant.url(f"?schema={TAG}"), headers=tenant.headers).json()
    assert listed["_embedded"]["results"] == []


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 2**63, 123456789012345678])
def test_integers_within_64_bits_are_kept_exactly(tenant, value):
    response = post_tag(tenant, {"xdm:name": "edge", "n": value})
    assert response.status_code == 201, response.text
    stored = tenant.client.get(
        tenant.url(f"/{response.json()['instanceId']}"), headers=tenant.headers
    )
    assert json.loads(stored.text)["_instance"]["n"] == value  # an int, every digit


def test_an_offer_priority_past_64_bits_is_refused_not_stored_as_a_float(tenant):
    placement = tenant.create(
        "offer-placement", {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    body = {
        "xdm:name": "o",
        "xdm:status": "approved",
        "xdm:rank": {"xdm:priority": 2**70},
        "xdm:representations": [
            {
                "xdm:placement": placement["@id"],
                "xdm:components": [{"@type": HTML, "dc:format": "text/html"}],
            }
        ],
    }
    refused = tenant.create("personalized-offer", body, expect=400)
    assert refused["pointer"] == "/xdm:rank/xdm:priority"


def test_a_profile_attribute_past_64_bits_is_a_400(tenant):
    response = tenant.client.post(
        "/data/core/nextoffer/profiles",
        content=json.dumps({"identityMap": {"Email": [{"id": "a@x"}]}, "profile": {"n": 2**70}}),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["pointer"] == "/profile/n"

"""A NUL character (U+0000) in a request: PostgreSQL's text cannot hold one, and neither
backend may answer it with a 5xx (schemathesis found 503s "database unavailable" on
PostgreSQL: the edge's configId, dps bodies). On both backends it is a 400 naming where
it is (docs/api.md), and nothing is stored."""

from __future__ import annotations

import pytest

from support.api import HTML, WEB, schema
from support.dps import Dps

NUL = "a%00b"


def urls(container: str, instance: str) -> list[tuple[str, str]]:
    placements = schema("offer-placement")
    return [
        ("GET", f"/data/core/xcore/{container}/instances/{NUL}"),
        ("GET", f"/data/core/xcore/{container}/instances/{NUL}/revisions"),
        ("DELETE", f"/data/core/xcore/{container}/instances/{NUL}"),
        ("GET", f"/data/core/xcore/{container}/instances?schema={placements}&name={NUL}"),
        ("GET", f"/data/core/xcore/{container}/instances?schema={placements}&id={NUL}"),
        ("POST", f"/data/core/xcore/{container}/instances/{instance}/revisions/{NUL}/revert"),
        ("GET", f"/data/core/ode/{NUL}/diagnostics"),
        ("GET", f"/data/core/ode/{NUL}/decision-events"),
        ("GET", f"/data/core/nextoffer/profiles?namespace={NUL}&id={NUL}"),
        ("DELETE", f"/data/core/nextoffer/profiles?namespace={NUL}&id={NUL}"),
        ("GET", f"/data/core/nextoffer/reports/offers?containerId={NUL}"),
        ("GET", f"/data/core/nextoffer/reports/ranking-strategies/{NUL}?containerId={container}"),
        ("DELETE", f"/data/core/dps/tags/{NUL}"),
        ("GET", f"/data/core/nextoffer/datastreams/{NUL}"),
        ("GET", f"/data/core/ups/segment/definitions/{NUL}"),
        ("GET", f"/data/core/nextoffer/datasets/{NUL}/files"),
        ("GET", f"/data/core/dwm/workloads/decisions/{NUL}"),
        ("POST", f"/ee/v1/interact?configId={NUL}"),
        ("POST", f"/ee/{NUL}/v1/collect?configId={NUL}"),
        ("OPTIONS", f"/ee/v1/interact?configId={NUL}"),
    ]


def test_a_nul_in_a_url_is_a_400_naming_the_part(tenant):
    placement = tenant.create(
        "offer-placement", {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    answered = {}
    for method, url in urls(tenant.container, placement["instanceId"]):
        kwargs = {"json": {"events": []}} if method == "POST" else {}
        response = tenant.client.request(method, url, headers=tenant.headers, **kwargs)
        where = (
            "query" if NUL in url.partition("?")[2] and NUL not in url.partition("?")[0] else "path"
        )
        body = response.json()
        # The Edge Network's problem shape names it in its report.
        pointer = body["report"]["pointer"] if url.startswith("/ee/") else body.get("pointer")
        answered[f"{method} {url}"] = (response.status_code, pointer, where)
    assert {k: v for k, v in answered.items() if v[:2] != (400, v[2])} == {}


def test_a_percent_sign_before_00_in_a_value_is_not_a_nul(tenant):
    # ``%2500`` is the text "%00": a name may hold it.
    response = tenant.client.get(
        tenant.url(f"?schema={schema('offer-placement')}&name=x%2500"), headers=tenant.headers
    )
    assert response.status_code == 200, response.text


def test_a_nul_in_a_body_is_a_400_naming_where_and_nothing_is_stored(tenant):
    dps = Dps(tenant)
    refused = dps.create("tag", {"name": "a\x00b"}, expect=400)
    assert refused["pointer"] == "/name"
    refused = dps.create("tag", {"name": "t", "x\x00": {"y": 1}}, expect=400)
    assert refused["pointer"] == ""
    refused = tenant.create(
        "offer-placement",
        {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML, "xdm:description": "\x00"},
        expect=400,
    )
    assert refused["pointer"] == "/xdm:description"
    response = tenant.client.post(
        "/data/core/nextoffer/profiles",
        json={"identityMap": {"Email": [{"id": "\x00"}]}, "profile": {}},
        headers=tenant.headers,
    )
    assert response.status_code == 400, response.text
    assert response.json()["pointer"] == "/identityMap/Email/0/id"
    assert dps.list("/tags")["results"] == []
    placements = tenant.client.get(
        tenant.url(f"?schema={schema('offer-placement')}"), headers=tenant.headers
    ).json()
    assert placements["_embedded"]["results"] == []


def test_a_backslash_before_u0000_is_text_not_a_nul(tenant):
    # The JSON text holds the escape's characters only as a string's own backslash.
    name = "a\\u0000b"
    created = Dps(tenant).create("tag", {"name": name})
    assert Dps(tenant).get("tag", created["id"])["name"] == name


@pytest.mark.parametrize("where", ["/xdm:propositionRequests", "/xdm:profiles"])
def test_a_decision_request_with_a_nul_is_a_400(tenant, where):
    body = {
        "xdm:propositionRequests": [{"xdm:placementId": "p", "xdm:activityId": "a"}],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "x"}]}}],
    }
    if where == "/xdm:profiles":
        body["xdm:profiles"][0]["xdm:identityMap"]["Email"][0]["xdm:id"] = "\x00"
        pointer = "/xdm:profiles/0/xdm:identityMap/Email/0/xdm:id"
    else:
        body["xdm:propositionRequests"][0]["xdm:placementId"] = "p\x00"
        pointer = "/xdm:propositionRequests/0/xdm:placementId"
    response = tenant.client.post(
        f"/data/core/ode/{tenant.container}/decisions",
        json=body,
        headers={
            **tenant.headers,
            "Content-Type": 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"',
        },
    )
    assert response.status_code == 400, response.text
    assert response.json()["pointer"] == pointer

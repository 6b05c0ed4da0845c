"""``POST /data/core/ods/decisions`` (decisioning-api.md §2.4) over a library built through
the dps API: Adobe's documented requests, as printed, with their documented headers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from support import example, remap
from support.api import HTML, WEB, Tenant, make_tenant
from support.dps import Dps

ODS = "/data/core/ods/decisions"
REQUEST_TYPE = (
    "application/vnd.adobe.xdm+json; "
    'schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'
)
RESPONSE_TYPE = (
    "application/vnd.adobe.xdm+json; "
    'schema="https://ns.adobe.com/experience/offer-management/decision-response;version=1.0"'
)
#: The documented rule over the request's context data (JO context-data-decisioning).
MOBILE = (
    "select contextData from @{_xdm.context.additionalParameters;version=1} where "
    '!contextData.channel.isNull() AND contextData.channel!="" AND contextData.channel="mobile"'
)
#: The documented decision's AI ranking strategy, which the dps API cannot create.
STRATEGY = "123456789123"


def _headers(tenant: Tenant) -> dict[str, str]:
    return {
        **tenant.headers,
        "Accept": RESPONSE_TYPE,
        "Content-Type": REQUEST_TYPE,
        "x-sandbox-id": "{SANDBOX_ID}",  # as printed: accepted, not read
        "x-request-id": "e9ac8d7e-3e77-4b38-8726-555ef1737b32-example",
    }


def _decision_body(ids: dict[str, str], order: dict[str, Any] | None = None) -> dict[str, Any]:
    rank: dict[str, Any] = {"priority": 0}
    if order is not None:
        rank["order"] = order
    return {
        "name": "Test Offer Decision",
        "status": "live",
        "startDate": "2021-08-23T07:00:00.000+00:00",
        "endDate": "2099-08-25T07:00:00.000+00:00",
        "fallback": ids["fallback"],
        "criteria": [
            {
                "placements": [ids["placement"]],
                "rank": rank,
                "profileConstraint": {"profileConstraintType": "none"},
                "optionSelection": {"filter": ids["collection"]},
            }
        ],
    }


@pytest.fixture
def library(tenant: Tenant) -> dict[str, str]:
    """Through dps: a placement, a mobile-only offer (priority 5), an offer for everyone
    (priority 1), their collection, a fallback and a live decision."""
    dps = Dps(tenant)
    ids: dict[str, str] = {}
    ids["placement"] = dps.create(
        "offer-placement", {"name": "Web banner", "channel": WEB, "componentType": "html"}
    )["id"]
    ids["tag"] = dps.create("tag", {"name": "Sale"})["id"]
    ids["rule"] = dps.create(
        "eligibility-rule",
        {"name": "Mobile", "condition": {"type": "PQL", "format": "pql/text", "value": MOBILE}},
    )["id"]

    def offer(name: str, priority: int, rule: str | None) -> str:
        component = {"type": "html", "format": "text/html", "content": f"<p>{name}</p>"}
        body: dict[str, Any] = {
            "name": name,
            "status": "approved",
            "representations": [
                {"channel": WEB, "placement": ids["placement"], "components": [component]}
            ],
            "rank": {"priority": priority},
            "tags": [ids["tag"]],
        }
        if rule is not None:
            body["selectionConstraint"] = {
                "profileConstraintType": "eligibilityRule",
                "eligibilityRule": rule,
            }
        return str(dps.create("personalized-offer", body)["id"])

    ids["mobile"] = offer("Mobile offer", 5, ids["rule"])
    ids["everyone"] = offer("Everyone offer", 1, None)
    ids["collection"] = dps.create(
        "offer-filter", {"name": "Sale", "filterType": "any-tags", "ids": [ids["tag"]]}
    )["id"]
    ids["fallback"] = dps.create(
        "fallback-offer",
        {
            "name": "Fallback",
            "status": "approved",
            "representations": [
                {
                    "channel": WEB,
                    "placement": ids["placement"],
                    "components": [
                        {"type": "imagelink", "format": "image/png", "deliveryURL": "https://x.io"}
                    ],
                }
            ],
        },
    )["id"]
    ids["decision"] = dps.create("offer-activity", _decision_body(ids))["id"]
    return ids


def _remapped(name: str, ids: dict[str, str]) -> dict[str, Any]:
    body = example(name)
    request = body["xdm:propositionRequests"][0]
    mapping = {
        request["xdm:activityId"]: ids["decision"],
        request["xdm:placementId"]: ids["placement"],
    }
    return dict(remap(body, mapping))


def _decide(tenant: Tenant, body: dict[str, Any]) -> Any:
    response = tenant.client.post(ODS, json=body, headers=_headers(tenant))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == RESPONSE_TYPE
    return response.json()


def _shape(value: Any) -> Any:
    """Keys (recursively) and value types: what "the same shape" compares."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def test_documented_request_answers_the_documented_response_shape(tenant, library):
    answer = _decide(tenant, _remapped("ods-decisions.request.json", library))
    documented = example("ods-decisions.response.json")
    assert list(answer) == list(documented)
    [proposition] = answer["xdm:propositions"]
    want = documented["xdm:propositions"][0]
    assert set(want) <= set(proposition)
    assert proposition["xdm:activity"]["xdm:id"] == library["decision"]
    assert proposition["xdm:activity"]["xdm:id"].startswith("dps:offer-activity:")
    assert proposition["xdm:placement"]["xdm:id"] == library["placement"]
    # The request asks for names: the documented id/etag pair plus xdm:name.
    assert proposition["xdm:activity"]["xdm:name"] == "Test Offer Decision"
    assert proposition["xdm:placement"]["xdm:name"] == "Web banner"
    [option] = proposition["xdm:options"]
    assert _shape({k: option[k] for k in want["xdm:options"][0]}) == _shape(want["xdm:options"][0])
    # No context data: the mobile-only offer is not eligible.
    assert option["xdm:id"] == library["everyone"]
    assert option["xdm:content"] == "<p>Everyone offer</p>"
    assert option["@type"] == HTML
    assert isinstance(answer["ode:createDate"], int)


def test_documented_context_data_decides_with_the_context(tenant, library):
    body = _remapped("ods-decisions-context-data.request.json", library)
    answer = _decide(tenant, body)
    [option] = answer["xdm:propositions"][0]["xdm:options"]
    assert option["xdm:id"] == library["mobile"]  # channel "mobile": priority 5 wins
    elsewhere = copy.deepcopy(body)
    elsewhere["xdm:profiles"][0]["xdm:contextData"][0]["xdm:data"]["xdm:channel"] = "web"
    [option] = _decide(tenant, elsewhere)["xdm:propositions"][0]["xdm:options"]
    assert option["xdm:id"] == library["everyone"]


def test_an_unknown_ranking_strategy_is_kept_reported_and_ranks_by_priority(tenant, library):
    dps = Dps(tenant)
    order = {"orderEvaluationType": "ranking-strategy", "rankingStrategy": STRATEGY}
    decision = dps.create("offer-activity", {**_decision_body(library, order), "name": "AI"})["id"]
    assert dps.get("offer-activity", decision)["criteria"][0]["rank"]["order"] == order
    body = _remapped("ods-decisions-context-data.request.json", library)
    body["xdm:propositionRequests"][0]["xdm:activityId"] = decision
    body["xdm:propositionRequests"][0]["xdm:itemCount"] = 2
    options = _decide(tenant, body)["xdm:propositions"][0]["xdm:options"]
    assert [o["xdm:id"] for o in options] == [library["mobile"], library["everyone"]]
    assert all("xdm:score" not in o for o in options)  # by priority: no score
    diagnostics = tenant.client.get(
        f"/data/core/ode/{tenant.container}/diagnostics", headers=tenant.headers
    ).json()
    text = str(diagnostics)
    assert decision in text and f"ranking strategy '{STRATEGY}' is not in the library" in text


def test_a_decision_created_through_xcore_is_decided_through_ods(tenant, library):
    created = tenant.create(
        "offer-activity",
        {
            "xdm:name": "xcore decision",
            "xdm:status": "live",
            "xdm:fallback": library["fallback"],
            "xdm:criteria": [
                {
                    "xdm:placements": [library["placement"]],
                    "xdm:optionSelection": {"xdm:filter": library["collection"]},
                }
            ],
        },
    )
    body = _remapped("ods-decisions.request.json", library)
    body["xdm:propositionRequests"][0]["xdm:activityId"] = created["@id"]
    proposition = _decide(tenant, body)["xdm:propositions"][0]
    assert proposition["xdm:activity"]["xdm:id"].startswith("xcore:offer-activity:")
    assert proposition["xdm:options"][0]["xdm:id"] == library["everyone"]


def test_ods_and_ode_decide_the_same_library(tenant, library):
    body = _remapped("ods-decisions.request.json", library)
    ods = _decide(tenant, body)
    response = tenant.client.post(
        f"/data/core/ode/{tenant.container}/decisions", json=body, headers=_headers(tenant)
    )
    assert response.status_code == 200
    ode = response.json()
    assert ods["xdm:propositions"][0]["xdm:options"] == ode["xdm:propositions"][0]["xdm:options"]


@pytest.mark.parametrize(
    ("change", "status", "pointer"),
    [
        (
            lambda b, ids: b["xdm:propositionRequests"][0].update(
                {"xdm:activityId": "dps:offer-activity:1"}
            ),
            404,
            "/xdm:propositionRequests/0/xdm:activityId",
        ),
        (lambda b, ids: b.update({"xdm:profiles": []}), 422, "/xdm:profiles"),
        (
            lambda b, ids: b["xdm:propositionRequests"][0].update({"xdm:itemCount": 31}),
            422,
            "/xdm:propositionRequests/0/xdm:itemCount",
        ),
        (
            lambda b, ids: b.update(
                {"xdm:responseFormat": {"xdm:includeMetadata": {"xdm:option": ["size"]}}}
            ),
            422,
            None,
        ),
    ],
    ids=["unknown decision", "no profile", "too many items", "unknown metadata"],
)
def test_bad_requests_are_problems_in_the_ode_shape(tenant, library, change, status, pointer):
    body = _remapped("ods-decisions.request.json", library)
    change(body, library)
    response = tenant.client.post(ODS, json=body, headers=_headers(tenant))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if pointer is not None:
        assert response.json()["pointer"] == pointer


def test_bad_media_type_and_body_are_4xx(tenant, library):
    headers = {**_headers(tenant), "Content-Type": "text/plain"}
    assert tenant.client.post(ODS, content=b"{}", headers=headers).status_code == 415
    response = tenant.client.post(ODS, content=b"{", headers=_headers(tenant))
    assert response.status_code == 400


def test_another_sandbox_cannot_decide_this_library(client, db_url, tenant, library):
    other = make_tenant(client, db_url, "ACME@AdobeOrg", "dev")
    body = _remapped("ods-decisions.request.json", library)
    response = client.post(ODS, json=body, headers=_headers(other))
    assert response.status_code == 404

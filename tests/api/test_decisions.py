"""The Decisions API over HTTP: profiles, events, the pipeline's outcomes, records."""

from __future__ import annotations

import time

import pytest

from support import example, remap
from support.api import HTML, WEB, make_tenant

DECIDE_TYPE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'
RULE = {"xdm:type": "PQL", "xdm:format": "pql/text"}


def rep(placement, text):
    return {
        "xdm:placement": placement,
        "xdm:channel": WEB,
        "xdm:components": [
            {"@type": HTML, "dc:format": "text/html", "dc:language": ["en"], "xdm:content": text}
        ],
    }


class Library:
    def __init__(self, tenant):
        self.tenant = tenant
        create = tenant.create
        self.p1 = create(
            "offer-placement", {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML}
        )["@id"]
        self.p2 = create(
            "offer-placement",
            {"xdm:name": "Sidebar", "xdm:channel": WEB, "xdm:componentType": HTML},
        )["@id"]
        self.tag = create("tag", {"xdm:name": "Sales"})["@id"]
        self.gold_rule = create(
            "eligibility-rule",
            {"xdm:name": "gold", "xdm:condition": {**RULE, "xdm:value": 'tier = "gold"'}},
        )["@id"]
        self.mobile_rule = create(
            "eligibility-rule",
            {
                "xdm:name": "mobile",
                "xdm:condition": {
                    **RULE,
                    "xdm:value": (
                        '@{_xdm.context.additionalParameters;version=1}.channel = "mobile"'
                    ),
                },
            },
        )["@id"]
        self.buyer_rule = create(
            "eligibility-rule",
            {
                "xdm:name": "buyer",
                "xdm:condition": {
                    **RULE,
                    "xdm:value": 'select e from xEvent where e.eventType = "purchase"',
                },
            },
        )["@id"]
        window = {"xdm:startDate": "2020-01-01T00:00:00Z", "xdm:endDate": "2099-01-01T00:00:00Z"}

        def offer(name, priority, rule=None, **extra):
            constraint = {**window, **({"xdm:eligibilityRule": rule} if rule else {})}
            return create(
                "personalized-offer",
                {
                    "xdm:name": name,
                    "xdm:status": "approved",
                    "xdm:rank": {"xdm:priority": priority},
                    "xdm:representations": [
                        rep(self.p1, f"<p>{name}</p>"),
                        rep(self.p2, f"<aside>{name}</aside>"),
                    ],
                    "xdm:selectionConstraint": constraint,
                    "xdm:tags": [self.tag],
                    "xdm:characteristics": {"code": name.upper()},
                    **extra,
                },
            )

        self.gold = offer("gold", 30, self.gold_rule)
        self.mobile = offer("mobile", 20, self.mobile_rule)
        self.buyer = offer("buyer", 25, self.buyer_rule)
        self.capped = offer("capped", 10, None, **{"xdm:cappingConstraint": {"xdm:profileCap": 1}})
        self.fallback = create(
            "fallback-offer",
            {
                "xdm:name": "welcome",
                "xdm:status": "approved",
                "xdm:representations": [
                    rep(self.p1, "<p>welcome</p>"),
                    rep(self.p2, "<aside>welcome</aside>"),
                ],
            },
        )
        self.collection = create(
            "offer-filter",
            {"xdm:name": "sales", "xdm:filterType": "anyTags", "xdm:ids": [self.tag]},
        )["@id"]
        self.decision = create(
            "offer-activity",
            {
                "xdm:name": "Home",
                "xdm:status": "live",
                **window,
                "xdm:criteria": [
                    {
                        "xdm:placements": [self.p1, self.p2],
                        "xdm:optionSelection": {"xdm:filter": self.collection},
                    }
                ],
                "xdm:fallback": self.fallback["@id"],
            },
        )

    def request(self, identity="someone", *, item_count=1, placements=None, **extra):
        return {
            "xdm:propositionRequests": [
                {
                    "xdm:placementId": p,
                    "xdm:activityId": self.decision["@id"],
                    "xdm:itemCount": item_count,
                }
                for p in (placements or [self.p1])
            ],
            "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": identity}]}}],
            "xdm:responseFormat": {
                "xdm:includeContent": True,
                "xdm:includeMetadata": {"xdm:option": ["name"]},
            },
            **extra,
        }

    def post(self, body, content_type=DECIDE_TYPE):
        return self.tenant.client.post(
            f"/data/core/ode/{self.tenant.container}/decisions",
            json=body,
            headers={**self.tenant.headers, "Content-Type": content_type},
        )

    def decide(self, body, expect=200, content_type=DECIDE_TYPE):
        response = self.post(body, content_type)
        assert response.status_code == expect, response.text
        return response.json()

    def profile(self, identity, attributes):
        response = self.tenant.client.post(
            "/data/core/nextoffer/profiles",
            json={"identityMap": {"Email": [{"id": identity}]}, "profile": attributes},
            headers=self.tenant.headers,
        )
        assert response.status_code in (200, 201), response.text

    def events(self, events):
        return self.tenant.client.post(
            "/data/core/nextoffer/events", json={"events": events}, headers=self.tenant.headers
        )


@pytest.fixture
def library(tenant):
    return Library(tenant)


def names(body, index=0):
    proposition = body["xdm:propositions"][index]
    return [o["xdm:name"] for o in proposition.get("xdm:options", [])]


def test_unknown_profile_gets_the_best_unconditional_offer(library):
    body = library.decide(library.request("nobody@example.com"))
    assert names(body) == ["capped"]
    option = body["xdm:propositions"][0]["xdm:options"][0]
    assert (
        option["xdm:content"] == "<p>capped</p>"
        and option["@type"] == HTML
        and option["dc:format"] == "text/html"
    )


def test_profile_attributes_drive_rules(library):
    library.profile("gold@example.com", {"tier": "gold"})
    assert names(library.decide(library.request("gold@example.com", item_count=2))) == [
        "gold",
        "capped",
    ]


def test_context_data_reaches_rules(library):
    request = library.request("ctx")
    request["xdm:profiles"][0]["xdm:contextData"] = [
        {
            "@type": "_xdm.context.additionalParameters;version=1",
            "xdm:data": {"xdm:channel": "mobile"},
        }
    ]
    assert names(library.decide(request)) == ["mobile"]


def test_experience_events_reach_rules(library):
    response = library.events(
        [
            {
                "identityMap": {"Email": [{"id": "buyer@example.com"}]},
                "timestamp": "2026-01-01T00:00:00Z",
                "eventType": "purchase",
                "_id": "ev-1",
            }
        ]
    )
    assert response.status_code == 200 and response.json()["stored"] == 1
    assert names(library.decide(library.request("buyer@example.com"))) == ["buyer"]


def test_profile_cap_moves_to_the_next_offer_and_dry_run_counts_nothing(library):
    dry = library.request("capper", **{"xdm:dryRun": True})
    assert names(library.decide(dry)) == ["capped"]
    assert names(library.decide(dry)) == ["capped"]
    assert names(library.decide(library.request("capper"))) == ["capped"]
    second = library.decide(library.request("capper"))
    assert "xdm:options" not in second["xdm:propositions"][0]
    assert second["xdm:propositions"][0]["xdm:fallback"]["xdm:id"] == library.fallback["@id"]
    # Another profile is not capped.
    assert names(library.decide(library.request("someone-else"))) == ["capped"]


def test_decision_events_are_recorded_except_for_dry_runs(library):
    library.decide(library.request("a", **{"xdm:dryRun": True}))
    body = library.decide(library.request("a"))
    events = library.tenant.client.get(
        f"/data/core/ode/{library.tenant.container}/decision-events", headers=library.tenant.headers
    ).json()
    assert [e["propositionId"] for e in events["events"]] == [body["xdm:propositionId"]]
    recorded = events["events"][0]
    assert recorded["identity"] == {"namespace": "Email", "id": "a"}
    assert recorded["propositions"][0]["options"] == [{"id": library.capped["@id"]}]


def test_duplicates_across_placements_are_avoided_unless_allowed(library):
    library.profile("gold2", {"tier": "gold"})
    request = library.request("gold2", placements=[library.p1, library.p2], **{"xdm:dryRun": True})
    body = library.decide(request)
    assert names(body, 0) == ["gold"] and names(body, 1) == ["capped"]
    request["xdm:allowDuplicatePropositions"] = {
        "xdm:acrossPlacements": True,
        "xdm:acrossActivities": True,
    }
    body = library.decide(request)
    assert names(body, 0) == ["gold"] and names(body, 1) == ["gold"]


def test_explain_names_each_candidates_fate(library):
    request = library.request("explained", **{"xdm:dryRun": True})
    request["xdm:responseFormat"]["nextoffer:explain"] = True
    body = library.decide(request)
    trace = body["xdm:propositions"][0]["nextoffer:explain"]
    reasons = {c["offerId"]: c["reason"] for c in trace["candidates"]}
    assert reasons[library.capped["@id"]] == "selected"
    assert reasons[library.gold["@id"]] == "ruleFalse"
    assert trace["fallbackReason"] is None


def test_write_is_visible_to_the_next_decision_within_a_second(library):
    library.profile("gold3", {"tier": "gold"})
    assert names(library.decide(library.request("gold3", **{"xdm:dryRun": True}))) == ["gold"]
    response = library.tenant.client.patch(
        library.tenant.url(f"/{library.gold['instanceId']}"),
        json=[{"op": "replace", "path": "/_instance/xdm:status", "value": "archived"}],
        headers={
            **library.tenant.headers,
            "Content-Type": "application/vnd.adobe.platform.xcore.patch.hal+json",
        },
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if names(library.decide(library.request("gold3", **{"xdm:dryRun": True}))) != ["gold"]:
            break
        time.sleep(0.05)
    assert names(library.decide(library.request("gold3", **{"xdm:dryRun": True}))) == ["capped"]


def test_documented_request_gets_the_documented_shape(library):
    body = remap(
        example("ode-decisions-v1-2021.request.json"),
        {
            "xcore:offer-placement:ffed0456": library.p1,
            "xcore:offer-activity:ffed0123": library.decision["@id"],
            "xcore:offer-placement:ffed0012": library.p2,
            "xcore:offer-activity:fffc0789": library.decision["@id"],
        },
    )
    documented = example("ode-decisions-v1-2021.response.json")
    answer = library.decide(body)
    assert set(answer) - {"xdm:decisionRequestId"} == set(documented)
    assert answer["xdm:decisionRequestId"] == "0AA00002-0000-1337-c0de-c0fefec0fefe"
    assert isinstance(answer["ode:createDate"], int)
    for proposition in answer["xdm:propositions"]:
        assert set(proposition["xdm:activity"]) == {"xdm:id", "repo:etag", "xdm:name"}
        assert set(proposition["xdm:placement"]) == {"xdm:id", "repo:etag", "xdm:name"}
        assert ("xdm:options" in proposition) != ("xdm:fallback" in proposition)
        for option in proposition.get("xdm:options", []):
            assert {"xdm:id", "repo:etag", "@type", "xdm:content", "xdm:name"} <= set(option)


@pytest.mark.parametrize(
    ("change", "status", "pointer"),
    [
        (
            lambda r: r["xdm:propositionRequests"][0].update(
                {"xdm:activityId": "xcore:offer-activity:0000000000000001"}
            ),
            404,
            "/xdm:propositionRequests/0/xdm:activityId",
        ),
        (
            lambda r: r["xdm:propositionRequests"][0].update(
                {"xdm:placementId": "xcore:offer-placement:0000000000000001"}
            ),
            404,
            "/xdm:propositionRequests/0/xdm:placementId",
        ),
        (
            lambda r: r["xdm:propositionRequests"][0].update({"xdm:itemCount": 31}),
            422,
            "/xdm:propositionRequests/0/xdm:itemCount",
        ),
        (
            lambda r: r["xdm:propositionRequests"][0].update({"xdm:itemCount": "two"}),
            422,
            "/xdm:propositionRequests/0/xdm:itemCount",
        ),
        (
            lambda r: r.update({"xdm:propositionRequests": r["xdm:propositionRequests"] * 31}),
            422,
            "/xdm:propositionRequests",
        ),
        (
            lambda r: r["xdm:profiles"][0].update({"xdm:identityMap": {"Email": "x"}}),
            422,
            "/xdm:profiles/0/xdm:identityMap/Email",
        ),
        (lambda r: r.update({"xdm:profiles": []}), 422, "/xdm:profiles"),
        (
            lambda r: r["xdm:responseFormat"].update(
                {"xdm:includeMetadata": {"xdm:option": ["secret"]}}
            ),
            422,
            "/xdm:responseFormat/xdm:includeMetadata/xdm:option",
        ),
    ],
)
def test_bad_decision_requests_name_the_field(library, change, status, pointer):
    request = library.request("x")
    change(request)
    response = library.post(request)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["pointer"] == pointer


def test_a_refused_item_count_is_quoted_as_the_json_it_was_sent_in(library):
    request = library.request("x")
    request["xdm:propositionRequests"][0]["xdm:itemCount"] = True
    assert library.post(request).json()["detail"].endswith(", got true")  # was "got True"


DECIDE_2019_TYPE = 'application/vnd.adobe.xdm+json; schema="https://ns.adobe.com/experience/offer-management/decision-request;version=0.9"'


def activity_2019(library, placement):
    """A decision in the 2019 flat shape: one placement and one collection."""
    return library.tenant.create(
        "offer-activity",
        {
            "xdm:name": "IVR",
            "xdm:status": "live",
            "xdm:placement": placement,
            "xdm:filter": library.collection,
            "xdm:fallback": library.fallback["@id"],
        },
    )["@id"]


def request_2019(*activities, identity="someone", **extra):
    """The 2019 request (decisioning-api.md §2.1): activities, and the identity map and
    context data at the top level."""
    return {
        "xdm:dryRun": False,
        "xdm:validateContextData": False,
        "xdm:offerActivities": [{"xdm:offerActivity": a} for a in activities],
        "xdm:identityMap": {"Email": [{"xdm:id": identity}]},
        "xdm:profileModel": "_xdm.context.profile",
        **extra,
    }


def decide_2019(library, body, expect=200, content_type=DECIDE_2019_TYPE):
    return library.decide(body, expect, content_type)


@pytest.mark.parametrize("content_type", [DECIDE_2019_TYPE, "application/json"])
def test_the_2019_request_gets_a_proposition_per_activity(library, content_type):
    first = activity_2019(library, library.p1)
    second = activity_2019(library, library.p2)
    library.profile("gold-2019@example.com", {"tier": "gold"})
    context = [
        {
            "@type": "_xdm.context.additionalParameters;version=1",
            "xdm:data": {"xdm:channel": "mobile"},
        }
    ]
    body = decide_2019(
        library,
        request_2019(
            first, second, identity="gold-2019@example.com", **{"xdm:contextData": context}
        ),
        content_type=content_type,
    )
    assert set(body) == {"xdm:propositionId", "xdm:propositions", "ode:createDate"}
    one, two = body["xdm:propositions"]
    assert (one["xdm:activity"]["xdm:id"], one["xdm:placement"]["xdm:id"]) == (first, library.p1)
    assert (two["xdm:activity"]["xdm:id"], two["xdm:placement"]["xdm:id"]) == (second, library.p2)
    # The profile (gold) and the context (mobile) reach the rules; no offer twice across
    # activities (the 2019 default), and each option carries its content.
    [best] = one["xdm:options"]
    [next_best] = two["xdm:options"]
    assert best["xdm:id"] == library.gold["@id"] and best["xdm:content"] == "<p>gold</p>"
    assert next_best["xdm:id"] == library.mobile["@id"]
    assert next_best["xdm:content"] == "<aside>mobile</aside>" and next_best["@type"] == HTML
    allowed = request_2019(
        first,
        second,
        identity="gold-2019@example.com",
        **{"xdm:allowDuplicatePropositions": {"xdm:acrossActivities": True}},
    )
    both = decide_2019(library, allowed)["xdm:propositions"]
    assert [p["xdm:options"][0]["xdm:id"] for p in both] == [library.gold["@id"]] * 2


@pytest.mark.parametrize(
    ("change", "status", "pointer"),
    [
        (lambda r, lib: r.update({"xdm:offerActivities": []}), 422, "/xdm:offerActivities"),
        (
            lambda r, lib: r["xdm:offerActivities"].append({"xdm:offerActivity": 7}),
            422,
            "/xdm:offerActivities/1/xdm:offerActivity",
        ),
        (
            lambda r, lib: r["xdm:offerActivities"].append(
                {"xdm:offerActivity": "xcore:offer-activity:0000000000000001"}
            ),
            404,
            "/xdm:offerActivities/1/xdm:offerActivity",
        ),
        (  # a decision with two placements: a request without placements cannot choose
            lambda r, lib: r["xdm:offerActivities"].append(
                {"xdm:offerActivity": lib.decision["@id"]}
            ),
            422,
            "/xdm:offerActivities/1/xdm:offerActivity",
        ),
        (lambda r, lib: r.pop("xdm:identityMap"), 422, "/xdm:identityMap"),
        (lambda r, lib: r.update({"xdm:contextData": {}}), 422, "/xdm:contextData"),
        (lambda r, lib: r.update({"xdm:dryRun": "no"}), 422, "/xdm:dryRun"),
    ],
)
def test_bad_2019_requests_name_the_field(library, change, status, pointer):
    request = request_2019(activity_2019(library, library.p1))
    change(request, library)
    response = library.post(request, DECIDE_2019_TYPE)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["pointer"] == pointer


def test_placement_the_decision_does_not_cover_is_422(library):
    other = library.tenant.create(
        "offer-placement", {"xdm:name": "x", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]
    library.decide(library.request("x", placements=[other]), expect=422)


def test_diagnostics_and_activity_offers(library, client, db_url):
    diag = client.get(
        f"/data/core/ode/{library.tenant.container}/diagnostics", headers=library.tenant.headers
    ).json()
    assert diag["xdm:operations"]["xdm:decisioningPackageUpdate"]["xdm:errors"] == []
    fresh = make_tenant(client, db_url, "NEW@AdobeOrg", "prod")
    assert client.get(
        f"/data/core/ode/{fresh.container}/diagnostics", headers=fresh.headers
    ).json() == {"xdm:operations": {}}
    offers = client.get(
        f"/data/core/ode/{library.tenant.container}/offers",
        params={"activityId": library.decision["@id"]},
        headers=library.tenant.headers,
    ).json()
    [entry] = offers["xdm:activityOffers"]
    assert entry["xdm:offerActivity"]["@id"] == library.decision["@id"]
    assert {o["@id"] for o in entry["xdm:offers"]} == {
        library.gold["@id"],
        library.mobile["@id"],
        library.buyer["@id"],
        library.capped["@id"],
    }
    assert entry["xdm:fallbackOffer"]["@id"] == library.fallback["@id"]


def test_other_tenants_cannot_decide_in_a_container(library, client, db_url):
    other = make_tenant(client, db_url, "EVIL@AdobeOrg", "prod")
    response = client.post(
        f"/data/core/ode/{library.tenant.container}/decisions",
        json=library.request(),
        headers={**other.headers, "Content-Type": DECIDE_TYPE},
    )
    assert response.status_code == 404
    for path in ("diagnostics", f"offers?activityId={library.decision['@id']}", "decision-events"):
        assert (
            client.get(
                f"/data/core/ode/{library.tenant.container}/{path}", headers=other.headers
            ).status_code
            == 404
        )

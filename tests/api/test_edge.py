"""The Edge Network endpoints in the Server API form, over plain HTTP: datastreams, the
documented request and response shapes, identity, scopes, feedback, CORS and limits."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from nextoffer.errors import Unprocessable
from nextoffer.service.ecid import decode_identity, encode_identity
from nextoffer.service.edge import Edge, EdgeEvent
from nextoffer.service.edge_tcf import decode_tc_string
from nextoffer.service.identities import parse_identity_map
from support import example
from support.api import make_tenant
from support.edge import Library, scope

ORG = "ACME@AdobeOrg"
IDENTITY_COOKIE = "kndctr_ACME_AdobeOrg_identity"
ORIGIN = "https://www.shop.test"


@pytest.fixture
def shop(tenant):
    library = Library(
        tenant.client,
        tenant.headers,
        tenant.container,
        [{"xdm:limit": 1, "xdm:scope": "profile", "xdm:events": ["impression"]}],
    )
    library.datastream = tenant.creds.datastream_id
    return library


def interact(client, datastream, body, *, path="/ee/v1/interact", expect=200, **kw):
    response = client.post(
        path,
        params={"configId": datastream, "requestId": "r-1"},
        content=json.dumps(body),
        headers={"Content-Type": "application/json", **kw.pop("headers", {})},
        **kw,
    )
    if expect is not None:
        assert response.status_code == expect, response.text
    return response


def handles(answer, kind):
    return [h for h in answer["handle"] if h["type"] == kind]


def event(scopes=(), **xdm):
    """A request body with one event: its xdm and decision scopes."""
    query = {"personalization": {"decisionScopes": list(scopes)}}
    return {"events": [{"xdm": xdm, "query": query}]}


# -- datastreams ---------------------------------------------------------------------------


def test_bootstrap_makes_a_datastream_and_the_api_manages_them(tenant, client, db_url):
    url = "/data/core/nextoffer/datastreams"
    listed = client.get(url, headers=tenant.headers).json()
    assert [d["datastreamId"] for d in listed["datastreams"]] == [tenant.creds.datastream_id]
    created = client.post(
        url,
        json={"name": "web", "allowedOrigins": ["https://WWW.Shop.test:8443/"], "rateLimit": 5},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["containerId"] == tenant.container
    assert body["allowedOrigins"] == ["https://www.shop.test:8443"]
    one = f"{url}/{body['datastreamId']}"
    patched = client.patch(one, json={"allowedOrigins": [ORIGIN]}, headers=tenant.headers)
    assert patched.json()["allowedOrigins"] == [ORIGIN] and patched.json()["rateLimit"] == 5
    assert client.get(one, headers=tenant.headers).json() == patched.json()
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    assert client.get(one, headers=other.headers).status_code == 404
    assert client.patch(one, json={"name": "x"}, headers=other.headers).status_code == 404
    assert client.delete(one, headers=other.headers).status_code == 404
    assert client.delete(one, headers=tenant.headers).status_code == 204
    assert client.get(one, headers=tenant.headers).status_code == 404
    assert client.get(url).status_code in (401, 403)


@pytest.mark.parametrize(
    "body",
    [
        {"allowedOrigins": ["ftp://x.test"]},
        {"allowedOrigins": ["https://x.test/path"]},
        {"allowedOrigins": "https://x.test"},
        {"rateLimit": 0},
        {"rateLimit": True},
        {"containerId": "no-such-container"},
        {"colour": "blue"},
        {"name": ""},
        # An unclosed bracket was a 500; the others were kept to match no browser's Origin.
        {"allowedOrigins": ["https://[::1"]},
        {"allowedOrigins": ["https://a]b.test"]},
        {"allowedOrigins": ["https://[v1.x]"]},
        {"allowedOrigins": ["https://[fe80::1%eth0]"]},
        {"allowedOrigins": ["https://*.shop.test"]},
        {"allowedOrigins": ["https://sh%6Fp.test"]},
        {"allowedOrigins": ["https://a\\b.test"]},
        {"allowedOrigins": ["https://sh op.test"]},
    ],
)
def test_bad_datastream_bodies_are_4xx(tenant, client, body):
    response = client.post("/data/core/nextoffer/datastreams", json=body, headers=tenant.headers)
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_an_unknown_datastream_member_is_named_by_its_pointer_and_json(tenant, client):
    # The pointer was "/a/b" (a member "b" inside "a"), the message Python's 'a/b'.
    response = client.post(
        "/data/core/nextoffer/datastreams", json={"a/b": 1}, headers=tenant.headers
    )
    assert response.status_code == 422
    assert response.json()["pointer"] == "/a~1b"
    assert response.json()["detail"].startswith('unknown member "a/b"; a datastream has ["')


# -- decisions in the Edge Network's shapes -------------------------------------------------


def test_documented_request_gets_the_documented_answer_shape(shop, client):
    request = example("edge-decisions-one-scope.request.json")
    request["events"][0]["query"]["personalization"]["decisionScopes"] = [shop.scope]
    answer = interact(client, shop.datastream, request).json()
    assert answer["requestId"] == "r-1"
    [decisions] = handles(answer, "personalization:decisions")
    assert decisions["eventIndex"] == 0
    [payload] = decisions["payload"]
    assert re.fullmatch(r"[0-9a-f-]{36}", payload["id"])
    assert payload["scope"] == shop.scope
    assert payload["activity"]["id"] == shop.decision
    assert payload["placement"]["id"] == shop.placement
    assert isinstance(payload["activity"]["etag"], str)
    [item] = payload["items"]
    assert item["id"] == shop.a
    assert item["schema"].endswith("content-component-html")
    assert item["data"] == {
        "id": shop.a,
        "format": "text/html",
        "language": ["en"],
        "content": "<p>A</p>",
        "characteristics": {"code": "A"},
    }
    # The documented request names its visitor's ECID: it is kept.
    ecid = request["events"][0]["xdm"]["identityMap"]["ECID"][0]["id"]
    [identity] = handles(answer, "identity:result")
    assert identity["payload"] == [{"id": ecid, "namespace": {"code": "ECID"}}]


def test_query_beside_the_events_and_xdm_spelled_scopes(shop, client):
    xdm_scope = scope(shop.decision, shop.placement, xdm=True)
    body = {"events": [{"xdm": {}}], "query": {"personalization": {"decisionScopes": [xdm_scope]}}}
    [decisions] = handles(
        interact(client, shop.datastream, body).json(), "personalization:decisions"
    )
    assert [p["scope"] for p in decisions["payload"]] == [xdm_scope]
    assert decisions["payload"][0]["items"][0]["id"] == shop.a


def test_first_visit_mints_an_ecid_kept_by_state_and_by_cookie(shop, client):
    first = interact(client, shop.datastream, event([shop.scope])).json()
    [identity] = handles(first, "identity:result")
    ecid = identity["payload"][0]["id"]
    assert re.fullmatch(r"[0-9]{38}", ecid)
    [store] = handles(first, "state:store")
    entries = {e["key"]: e for e in store["payload"]}
    assert decode_identity(entries[IDENTITY_COOKIE]["value"]) == ecid
    assert entries["kndctr_ACME_AdobeOrg_cluster"]["value"]
    state = {"entries": [{"key": IDENTITY_COOKIE, "value": entries[IDENTITY_COOKIE]["value"]}]}
    again = interact(client, shop.datastream, {**event([shop.scope]), "meta": {"state": state}})
    assert handles(again.json(), "identity:result")[0]["payload"][0]["id"] == ecid
    client.cookies.set(IDENTITY_COOKIE, entries[IDENTITY_COOKIE]["value"])
    try:
        by_cookie = interact(client, shop.datastream, event([shop.scope])).json()
    finally:
        client.cookies.clear()
    assert handles(by_cookie, "identity:result")[0]["payload"][0]["id"] == ecid
    fresh = interact(client, shop.datastream, event([shop.scope])).json()
    assert handles(fresh, "identity:result")[0]["payload"][0]["id"] != ecid


def test_an_ecid_too_long_for_an_identity_is_not_the_visitor_s(shop, client):
    # An identity is at most 1,024 characters (docs/api.md): an identity map naming a
    # longer ECID is malformed, and the visitor gets the ECID of its state or a new one,
    # as the warning says; the long text is never a profile's identity.
    body = event([shop.scope], identityMap={"ECID": [{"id": "7" * 1025}]})
    answer = interact(client, shop.datastream, body).json()
    [identity] = handles(answer, "identity:result")
    assert re.fullmatch(r"[0-9]{38}", identity["payload"][0]["id"])
    assert [(w["title"], w["report"]) for w in answer["warnings"]] == [
        ("Invalid identity map", {"eventIndex": 0})
    ]
    assert handles(answer, "personalization:decisions")[0]["payload"]
    # The new visitor's profile is under the minted ECID.
    found = client.get(
        "/data/core/nextoffer/profiles",
        params={"namespace": "ECID", "id": identity["payload"][0]["id"]},
        headers=shop.headers,
    )
    assert found.status_code == 200, found.text


def test_an_identity_map_of_many_identities_is_refused_at_once(shop, client):
    # 60,000 distinct identities fit in a 1 MiB public body: deduplicated through a list,
    # reading them on the event loop held every request of the process for half a minute.
    many = {"Email": [{"id": str(n)} for n in range(60_000)]}
    started = time.monotonic()
    answer = interact(client, shop.datastream, event([shop.scope], identityMap=many)).json()
    assert time.monotonic() - started < 5
    assert [w["title"] for w in answer["warnings"]] == ["Invalid identity map"]


def test_adobes_identity_cookie_value_is_read():
    # The kndctr identity value of Adobe's documented Edge response (tests/data/adobe).
    sample = example("edge-decisions-context-data.response.json")
    [store] = [h for h in sample["handle"] if h["type"] == "state:store"]
    value = store["payload"][0]["value"]
    assert decode_identity(value) == "40000822335137559702444726551020104471"


def test_an_identity_state_holding_more_than_an_ecid_holds_none():
    # Field 1 of 38 digits and a newline: a regex's "$" let the newline through, and the
    # visitor's ECID became 39 characters.
    message = b"\n'" + b"1" * 38 + b"\n"
    value = base64.urlsafe_b64encode(message).decode().rstrip("=")
    assert decode_identity(value) is None
    assert decode_identity(encode_identity("1" * 38, created=1, is_new=True, written=1))


def test_an_identity_map_ecid_outside_ascii_is_written_with_its_byte_length():
    # An identity map's ECID is taken as sent: 38 characters that are not 38 bytes were
    # written behind a 38-byte length, and the state could not be read back.
    value = encode_identity("é" * 38, created=1, is_new=False, written=1)
    message = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    assert message[:3] == b"\n\x4c" + "é".encode()[:1]  # field 1, 76 bytes
    assert message[2:78].decode() == "é" * 38


def test_the_primary_identity_is_read_as_the_identity_map_is():
    # An entry with both spellings is the identity of its "xdm:id" (as parse_identity_map
    # reads it); its "primary" flag was looked up under "id", missed, and the first
    # namespace decided instead.
    xdm = {
        "identityMap": {
            "Phone": [{"id": "555"}],
            "Email": [{"id": "old@shop.test", "xdm:id": "a@shop.test", "primary": True}],
        }
    }
    found = Edge._identities(EdgeEvent(xdm=xdm), "1" * 38, 0)
    assert found is not None and found[0] == ("Email", "a@shop.test")


def test_a_refused_namespace_is_quoted_as_json():
    with pytest.raises(Unprocessable) as refused:
        parse_identity_map({"Émail": []}, pointer="/identityMap")
    assert refused.value.detail == 'namespace "Émail" needs a non-empty list of identities'


def test_a_config_id_longer_than_any_datastream_id_is_not_remembered(shop, client):
    # Misses are cached: a flood of distinct long ids held up to 10,000 URLs' worth of
    # text in each process. An id no datastream can have is refused before the cache.
    datastreams = client.app.state.nextoffer.datastreams
    before = len(datastreams._cache)
    for n in range(3):
        missing = interact(client, f"{n}{'x' * 5000}", event([shop.scope]), expect=404)
        assert len(missing.text) < 1000
    assert len(datastreams._cache) == before
    interact(client, "no-such-datastream", event([shop.scope]), expect=404)
    assert len(datastreams._cache) == before + 1


def test_a_config_id_is_matched_whatever_its_case(shop, client):
    # A UUID is case-insensitive on input (RFC 9562): a datastream id configured
    # upper-case (copied from a tool that writes UUIDs so) was a 404.
    datastreams = client.app.state.nextoffer.datastreams
    upper = shop.datastream.upper()
    assert upper != shop.datastream
    for config_id in (upper, shop.datastream, upper.title()):
        answer = interact(client, config_id, event([shop.scope])).json()
        assert handles(answer, "personalization:decisions")[0]["payload"]
    # One spelling in the cache: the lookup is made with the lower-case id alone.
    assert upper not in datastreams._cache and shop.datastream in datastreams._cache
    # A preflight finds it too (answered as for the id as minted, not 404).
    preflights = [
        client.options(
            "/ee/v1/interact",
            params={"configId": config_id},
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        ).status_code
        for config_id in (upper, shop.datastream)
    ]
    assert preflights[0] == preflights[1] != 404, preflights


def test_location_hint_paths_and_v2(shop, client):
    for path in ("/ee/nx1/v1/interact", "/ee/irl1/v1/interact", "/ee/v2/interact"):
        answer = interact(client, shop.datastream, event([shop.scope]), path=path).json()
        assert handles(answer, "personalization:decisions")[0]["payload"]
    interact(client, shop.datastream, event([shop.scope]), path="/ee/v1/other", expect=404)
    interact(client, shop.datastream, event([shop.scope]), path="/ee/a/b/v1/interact", expect=404)


def test_get_identity_before_any_event_acquires_the_visitor_s_ecid(shop, client):
    # The SDK's getIdentity, its first call on a page, posts to identity/acquire (with a
    # location hint once it has one): it was a 404, and the command failed.
    body = {"query": {"identity": {"fetch": ["ECID", "CORE"]}}, "meta": {"state": {}}}
    first = interact(client, shop.datastream, body, path="/ee/v1/identity/acquire").json()
    assert not handles(first, "personalization:decisions")
    [identity] = handles(first, "identity:result")
    ecid = identity["payload"][0]["id"]
    assert re.fullmatch(r"[0-9]{38}", ecid)
    [store] = handles(first, "state:store")
    value = {e["key"]: e["value"] for e in store["payload"]}[IDENTITY_COOKIE]
    assert decode_identity(value) == ecid
    state = {"entries": [{"key": IDENTITY_COOKIE, "value": value}]}
    again = interact(
        client,
        shop.datastream,
        {**body, "meta": {"state": state}},
        path="/ee/nx1/v2/identity/acquire",
    ).json()
    assert handles(again, "identity:result")[0]["payload"][0]["id"] == ecid
    migrated = {**body, "xdm": {"identityMap": {"ECID": [{"id": "4" * 38}]}}}
    taken = interact(client, shop.datastream, migrated, path="/ee/v1/identity/acquire").json()
    assert handles(taken, "identity:result")[0]["payload"][0]["id"] == "4" * 38


def consent(standard="Adobe", version="2.0", value=None):
    value = {"collect": {"val": "y"}} if value is None else value
    return {"consent": [{"standard": standard, "version": version, "value": value}]}


def test_set_consent_answers_the_consent_state_the_sdk_waits_for(shop, client):
    # With defaultConsent "pending" the SDK holds every event until setConsent's answer
    # has stored kndctr_{org}_consent: it was a 404, and the page's events never left.
    answer = interact(client, shop.datastream, consent(), path="/ee/v1/privacy/set-consent")
    [store] = handles(answer.json(), "state:store")
    entries = {e["key"]: e for e in store["payload"]}
    assert entries["kndctr_ACME_AdobeOrg_consent"]["value"] == "general=in"
    assert entries["kndctr_ACME_AdobeOrg_consent"]["maxAge"] == 15_552_000
    assert handles(answer.json(), "identity:result")
    # Hinted, as the SDK calls once it has the cluster state; Adobe's 1.0 form.
    out = interact(
        client,
        shop.datastream,
        consent(version="1.0", value={"general": "out"}),
        path="/ee/nx1/v1/privacy/set-consent",
    ).json()
    # Refused collection: the consent entry alone, no identity made.
    assert out["handle"] == [
        {
            "type": "state:store",
            "payload": [
                {
                    "key": "kndctr_ACME_AdobeOrg_consent",
                    "value": "general=out",
                    "maxAge": 15_552_000,
                }
            ],
        }
    ]
    tcf = {"standard": "IAB TCF", "version": "2.0", "value": {"consentString": "CO"}}
    both = {"consent": [tcf, *consent(value={"collect": {"val": "n"}})["consent"]]}
    read = interact(client, shop.datastream, both, path="/ee/v1/privacy/set-consent").json()
    assert read["handle"][0]["payload"][0]["value"] == "general=out"


def test_set_consent_keeps_a_visitor_s_identity_only_once_consent_is_given(shop, client):
    # A setConsent carrying an identity map made the new visitor's profile while consent
    # was still pending.
    def profile(email):
        return client.get(
            "/data/core/nextoffer/profiles",
            params={"namespace": "Email", "id": email},
            headers=shop.headers,
        ).status_code

    for val, email, found in (("p", "wait@example.com", 404), ("y", "yes@example.com", 200)):
        body = {
            **consent(value={"collect": {"val": val}}),
            "identityMap": {"Email": [{"id": email}]},
        }
        interact(client, shop.datastream, body, path="/ee/v1/privacy/set-consent")
        assert profile(email) == found, (val, email)


#: TC strings written by IAB Tech Lab's reference encoder (``@iabtcf/core`` 1.5.6,
#: ``TCString.encode``): purposes consented, vendors consented. The encoder chooses a bit
#: field or ranges for the vendors, whichever is shorter: both forms are here.
TC_STRINGS = {
    "CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAEawAQEagAAAA.YAAAAAAAAAAA": ({1, 10}, {565}),
    "CQujIwAQujIwAAKABAENCWCgAOBAAAAAAAAAH0QBIAAgAEAjUBeYD6AAAAAA.YAAAAAAAAAAA": (
        {1, 2, 3, 10},
        {1, 2, 565, 755, 1000},
    ),
    "CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAF5wAQF5gAAAA.YAAAAAAAAAAA": ({1, 10}, {755}),
    "CQujIwAQujIwAAKABAENCWCgAIAAAAAAAAAAEawAQEagAAAA.YAAAAAAAAAAA": ({1}, {565}),
    "CQujIwAQujIwAAKABAENCWCgAABAAAAAAAAAEawAQEagAAAA.YAAAAAAAAAAA": ({10}, {565}),
    "CQujIwAQujIwAAKABAENCWCgAAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAAA": (set(), set()),
    "CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAH0QAYAAgfQAAAAAA.YAAAAAAAAAAA": (
        {1, 10},
        set(range(1, 1001)),
    ),
    "CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAH0QAoAAgRpAjYD6AAAAAAAAA.YAAAAAAAAAAA": (
        {1, 10},
        set(range(1, 1001)) - {565},
    ),
    # Adobe's setConsent documentation's example (IAB TCF 2.0 tab).
    "CO052l-O052l-DGAMBFRACBgAIBAAAAABIYgEawAQEagAAAA": ({1, 10}, {565}),
}


@pytest.mark.parametrize(("tc_string", "expected"), TC_STRINGS.items())
def test_a_tc_string_is_read_as_the_reference_encoder_wrote_it(tc_string, expected):
    purposes, vendors = expected
    decoded = decode_tc_string(tc_string)
    assert decoded.purposes == purposes
    assert {v for v in range(1, 1002) if decoded.vendor(v)} == vendors
    assert decoded.collect() == ({1, 10} <= purposes and 565 in vendors)


def tcf(value, **entry):
    return {"consent": [{"standard": "IAB TCF", "version": "2.0", "value": value, **entry}]}


@pytest.mark.parametrize(("tc_string", "expected"), TC_STRINGS.items())
def test_an_iab_tcf_consent_alone_sets_the_consent_state(shop, client, tc_string, expected):
    # A site with a CMP sends only its TC string: that was a 400, and under
    # defaultConsent "pending" the SDK never sent an event. Adobe's Edge Network gives
    # consent for purposes 1 and 10 and vendor 565 (Adobe).
    purposes, vendors = expected
    general = "in" if {1, 10} <= purposes and 565 in vendors else "out"
    body = {**tcf(tc_string, gdprApplies=True), "identityMap": {"Email": [{"id": "t@x.test"}]}}
    answer = interact(client, shop.datastream, body, path="/ee/v1/privacy/set-consent").json()
    [store] = handles(answer, "state:store")
    entries = {e["key"]: e["value"] for e in store["payload"]}
    assert entries["kndctr_ACME_AdobeOrg_consent"] == f"general={general}"
    assert bool(handles(answer, "identity:result")) == (general == "in")


def test_gdpr_not_applying_is_consent_and_an_adobe_entry_decides_beside_a_tc_string(shop, client):
    refused = next(s for s, (p, _) in TC_STRINGS.items() if not p)
    for body, general in (
        (tcf(refused, gdprApplies=False), "in"),
        (tcf("", gdprApplies=False), "in"),
        (tcf(refused), "out"),  # gdprApplies is true unless sent false
        (
            {"consent": [*tcf(refused)["consent"], *consent()["consent"]]},
            "in",
        ),
    ):
        answer = interact(client, shop.datastream, body, path="/ee/v1/privacy/set-consent")
        stored = [e for h in handles(answer.json(), "state:store") for e in h["payload"]]
        assert {"key": "kndctr_ACME_AdobeOrg_consent", "value": f"general={general}"}.items() <= (
            stored[-1].items()
        ), body


@pytest.mark.parametrize(
    ("entry", "pointer", "detail"),
    [
        (tcf(""), "/consent/0/value", "empty"),
        (tcf("not a TC string!"), "/consent/0/value", "base64"),
        (tcf("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"), "/consent/0/value", "TCF version 1"),
        (tcf("CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAEaw"), "/consent/0/value", "ends before"),
        (
            tcf("CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAEawAQEagAAAA", gdprApplies="yes"),
            "/consent/0/gdprApplies",
            "boolean",
        ),
        (tcf({"consentString": "CO"}), "/consent/0", "TC string value"),
        (
            {"consent": [{"standard": "IAB TCF", "version": "1.1", "value": "BO"}]},
            "/consent/0",
            "version 2.0",
        ),
    ],
)
def test_a_malformed_tc_string_is_an_edge_shaped_400(shop, client, entry, pointer, detail):
    refused = interact(
        client, shop.datastream, entry, path="/ee/v1/privacy/set-consent", expect=400
    )
    problem = refused.json()
    assert refused.headers["content-type"] == "application/problem+json"
    assert problem["status"] == 400 and problem["report"] == {
        "requestId": "r-1",
        "pointer": pointer,
    }
    assert detail in problem["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"consent": []},
        {"consent": "in"},
        {"consent": [{"standard": "IAB TCF", "version": "2.0", "value": {}}]},
        {"consent": [{"standard": "IAB", "version": "2.0", "value": "CO"}]},
        consent(version="3.0"),
        consent(value={"collect": {"val": "maybe"}}),
        consent(version="1.0", value={"general": True}),
        [],
        # Unhashable where a name is read: each was a 500 (a set's ``in`` raised).
        consent(version=["1.0"]),
        consent(version={"v": "2.0"}),
        consent(version="1.0", value={"general": ["in"]}),
        {"consent": [{"standard": "IAB TCF", "version": ["2.0"], "value": "CO"}]},
    ],
)
def test_a_consent_that_says_nothing_readable_is_a_400(shop, client, body):
    refused = interact(
        client, shop.datastream, body, path="/ee/v1/privacy/set-consent", expect=400
    ).json()
    assert refused["report"]["requestId"] == "r-1"


def test_every_edge_path_of_the_sdk_answers_a_preflight(tenant, shop, client):
    allow(tenant, client, allowedOrigins=[ORIGIN])
    for path in (
        "/ee/v1/interact",
        "/ee/nx1/v1/interact",
        "/ee/v1/identity/acquire",
        "/ee/nx1/v1/privacy/set-consent",
    ):
        preflight = client.options(
            path,
            params={"configId": shop.datastream},
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204, (path, preflight.text)
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
    for path in ("/ee/v1/identity/other", "/ee/nx1/v1/privacy/acquire", "/ee/a/b/c/interact"):
        interact(client, shop.datastream, event([shop.scope]), path=path, expect=404)


def test_the_server_apis_documented_request_is_served(shop, client):
    # Adobe's Edge Network Server API documents ?dataStreamId= (or datastreamId) and one
    # "event" in the body: both were a 400 (configId required; events required).
    body = {
        "event": {
            "xdm": {
                "identityMap": {"Email_LC_SHA256": [{"id": "0c7e6a40", "primary": True}]},
                "eventType": "web.webpagedetails.pageViews",
                "web": {"webPageDetails": {"URL": "https://shop.test/", "name": "home"}},
            },
            "data": {"prop1": "custom value"},
            "query": {"personalization": {"decisionScopes": [shop.scope]}},
        }
    }
    for name in ("dataStreamId", "datastreamId"):
        answer = client.post(
            "/ee/v2/interact",
            params={name: shop.datastream},
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        [decisions] = handles(answer.json(), "personalization:decisions")
        assert decisions["payload"][0]["items"][0]["id"] == shop.a
    bad = {"event": {"xdm": [], "query": {}}}
    refused = interact(client, shop.datastream, bad, expect=400).json()
    assert refused["report"]["pointer"] == "/event/xdm"


def test_view_scope_is_ignored_and_a_malformed_scope_is_a_warning(shop, client):
    bad = scope(shop.decision, "")  # names no placement
    unknown = scope("xcore:offer-activity:000000000000dead", shop.placement)
    body = event(["__view__", "sample-json-offer", bad, unknown, shop.scope])
    answer = interact(client, shop.datastream, body).json()
    [decisions] = handles(answer, "personalization:decisions")
    assert [p["scope"] for p in decisions["payload"]] == [shop.scope]
    warned = [w["detail"] for w in answer["warnings"]]
    assert len(warned) == 2 and all(w["status"] == 200 for w in answer["warnings"])
    assert "placementId" in warned[0] and "no decision" in warned[1]
    assert warned[0].startswith(f'decision scope "{bad[:100]}": ')  # quoted as JSON
    only_view = interact(client, shop.datastream, event(["__view__"])).json()
    assert handles(only_view, "personalization:decisions")[0]["payload"] == []
    assert "warnings" not in only_view


def test_context_is_stored_so_xevent_rules_see_it(shop, client):
    # Journey Optimizer's context-data example: the event's context decides the offer.
    request = example("edge-decisions-context-data.request.json")
    request["query"]["personalization"]["decisionScopes"] = [shop.scope]
    answer = interact(client, shop.datastream, request).json()
    [payload] = handles(answer, "personalization:decisions")[0]["payload"]
    assert payload["items"][0]["id"] == shop.iphone
    android = {"customerId": [{"id": "0000158217", "primary": True}]}
    other = event(
        [shop.scope],
        identityMap=android,
        _experienceplatform={"offerContextData": {"deviceType": "android"}},
    )
    [payload] = handles(
        interact(client, shop.datastream, other).json(), "personalization:decisions"
    )[0]["payload"]
    assert payload["items"][0]["id"] == shop.a


# -- feedback ----------------------------------------------------------------------------------


def test_display_and_click_count_once_per_event_id_in_the_sdks_proposition_form(shop, client):
    first = interact(client, shop.datastream, event([shop.scope])).json()
    ecid = handles(first, "identity:result")[0]["payload"][0]["id"]
    [payload] = handles(first, "personalization:decisions")[0]["payload"]
    assert payload["items"][0]["id"] == shop.a
    named = [{"id": payload["id"], "scope": payload["scope"], "scopeDetails": {}}]
    identity = {"ECID": [{"id": ecid}]}

    def feedback(kind, event_id, path="/ee/v1/interact"):
        xdm = {
            "_id": event_id,
            "timestamp": "2026-12-05T09:00:00Z",
            "eventType": kind,
            "identityMap": identity,
            "_experience": {"decisioning": {"propositions": named}},
        }
        expect = 204 if path.endswith("collect") else 200
        interact(client, shop.datastream, {"events": [{"xdm": xdm}]}, path=path, expect=expect)

    feedback("decisioning.propositionDisplay", "display-1")
    feedback("decisioning.propositionDisplay", "display-1")  # the same event again
    feedback("decisioning.propositionInteract", "click-1", path="/ee/v1/collect")
    totals = shop.report()[shop.a]
    assert (totals["impressions"], totals["clicks"]) == (1, 1)
    assert shop.b not in shop.report() or shop.report()[shop.b]["impressions"] == 0
    # The impression cap (1 per profile) is reached: A is not proposed to this visitor.
    trace = shop.explain("ECID", ecid)
    assert trace["xdm:options"][0]["xdm:id"] == shop.b
    assert any(
        c["offerId"] == shop.a and c["reason"] == "profileCapReached"
        for c in trace["nextoffer:explain"]["candidates"]
    ), trace
    again = interact(client, shop.datastream, event([shop.scope], identityMap=identity)).json()
    assert handles(again, "personalization:decisions")[0]["payload"][0]["items"][0]["id"] == shop.b


def test_a_proposition_named_again_in_one_event_counts_once(shop, client):
    # One public display event naming a real proposition 50 times added 50 impressions:
    # enough to use up another visitor's global cap with one request.
    first = interact(client, shop.datastream, event([shop.scope])).json()
    ecid = handles(first, "identity:result")[0]["payload"][0]["id"]
    [payload] = handles(first, "personalization:decisions")[0]["payload"]
    named = [{"id": payload["id"], "scope": payload["scope"]}] * 50
    xdm = {
        "_id": "display-repeated",
        "eventType": "decisioning.propositionDisplay",
        "identityMap": {"ECID": [{"id": ecid}]},
        "_experience": {"decisioning": {"propositions": named}},
    }
    interact(client, shop.datastream, {"events": [{"xdm": xdm}]})
    assert shop.report()[shop.a]["impressions"] == 1


def test_collect_takes_a_text_plain_beacon(shop, client):
    body = {"events": [{"xdm": {"eventType": "web.webpagedetails.pageViews", "web": {}}}]}
    response = client.post(
        "/ee/v1/collect",
        params={"configId": shop.datastream},
        content=json.dumps(body),
        headers={"Content-Type": "text/plain; charset=UTF-8"},
    )
    assert response.status_code == 204 and response.content == b""


# -- public endpoint: CORS, rate, limits, errors --------------------------------------------------


def allow(tenant, client, **fields):
    response = client.patch(
        f"/data/core/nextoffer/datastreams/{tenant.creds.datastream_id}",
        json=fields,
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text


def test_the_management_api_reads_a_datastream_id_in_any_case(tenant, shop, client):
    # The Edge endpoints match a configId whatever its case; the management API did not
    # (404), and a change made through an upper-case id left the Edge endpoints' cached
    # record (kept 5 s) as it was.
    upper = f"/data/core/nextoffer/datastreams/{shop.datastream.upper()}"
    interact(client, shop.datastream, event([shop.scope]), headers={"Origin": ORIGIN}, expect=403)
    got = client.get(upper, headers=tenant.headers)
    assert got.status_code == 200 and got.json()["datastreamId"] == shop.datastream
    patched = client.patch(upper, json={"allowedOrigins": [ORIGIN]}, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["datastreamId"] == shop.datastream
    interact(client, shop.datastream, event([shop.scope]), headers={"Origin": ORIGIN})
    assert client.delete(upper, headers=tenant.headers).status_code == 204
    interact(client, shop.datastream, event([shop.scope]), expect=404)


def test_cors_allows_the_datastreams_origins_with_credentials(tenant, shop, client):
    refused = interact(
        client, shop.datastream, event([shop.scope]), headers={"Origin": ORIGIN}, expect=403
    )
    assert "access-control-allow-origin" not in refused.headers
    assert refused.json()["report"]["requestId"] == "r-1"
    allow(tenant, client, allowedOrigins=[ORIGIN])
    allowed = interact(client, shop.datastream, event([shop.scope]), headers={"Origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    preflight = client.options(
        "/ee/v1/interact",
        params={"configId": shop.datastream},
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    other = client.options(
        "/ee/v1/interact",
        params={"configId": shop.datastream},
        headers={"Origin": "https://evil.test"},
    )
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


def test_rate_limit_answers_429_with_retry_after(tenant, shop, client, monkeypatch):
    allow(tenant, client, rateLimit=2)
    # The bucket's clock stands still, so however slow the machine, no token comes back
    # between the requests: the first two pass and every later one is refused.
    now = time.monotonic()
    monkeypatch.setattr(client.app.state.nextoffer.datastreams, "_monotonic", lambda: now)
    codes = [
        interact(client, shop.datastream, event([shop.scope]), expect=None).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 429, 429]
    limited = interact(client, shop.datastream, event([shop.scope]), expect=429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["status"] == 429


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("not json", 400),
        ([], 400),
        ({"events": []}, 400),
        ({"events": [{"xdm": []}]}, 400),
        ({"events": [{"xdm": {}}] * 101}, 413),
        ({"events": [{"xdm": {}, "query": {"personalization": {"decisionScopes": "x"}}}]}, 400),
    ],
)
def test_bad_bodies_are_edge_shaped_4xx(shop, client, body, status):
    response = client.post(
        "/ee/v1/interact",
        params={"configId": shop.datastream},
        content=body if isinstance(body, str) else json.dumps(body),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["status"] == status and problem["type"] and problem["report"]["requestId"]


def test_too_many_scopes_too_large_and_unknown_datastream(shop, client):
    many = [scope(shop.decision, shop.placement, n=n) for n in range(31)]
    interact(client, shop.datastream, event(many), expect=400)
    huge = event([shop.scope], blob="x" * (1024 * 1024 + 1))
    interact(client, shop.datastream, huge, expect=413)
    missing = interact(client, "no-such-datastream", event([shop.scope]), expect=404)
    assert missing.json()["title"] == "Not Found"
    assert client.post("/ee/v1/interact", content="{}").status_code == 400


def test_server_form_feedback_for_a_visitor_without_profile_caps_the_next_decision(shop, client):
    # A Server API caller names an ECID nextoffer has never seen: the decision is made for
    # that identity; the display event names the same ECID and counts under it.
    identity = {"ECID": [{"id": "12345678901234567890123456789012345678"}]}
    first = interact(client, shop.datastream, event([shop.scope], identityMap=identity)).json()
    [payload] = handles(first, "personalization:decisions")[0]["payload"]
    assert payload["items"][0]["id"] == shop.a
    display = {
        "_id": "server-display-1",
        "eventType": "decisioning.propositionDisplay",
        "identityMap": identity,
        "_experience": {
            "decisioning": {"propositions": [{"id": payload["id"], "scope": payload["scope"]}]}
        },
    }
    interact(client, shop.datastream, {"events": [{"xdm": display}]})
    again = interact(client, shop.datastream, event([shop.scope], identityMap=identity)).json()
    assert handles(again, "personalization:decisions")[0]["payload"][0]["items"][0]["id"] == shop.b
    assert shop.report()[shop.a]["impressions"] == 1


def test_feedback_naming_too_many_propositions_is_refused(shop, client):
    # Each named proposition is looked up while the event's transaction is open: a public
    # body naming 40,000 held every decision recorded meanwhile for seconds.
    def display(n, event_id, *, xdm_form=False):
        named = [{"id": f"proposition-{event_id}-{i}"} for i in range(n)]
        xdm = {"_id": event_id, "eventType": "decisioning.propositionDisplay"}
        if xdm_form:
            xdm["https://ns.adobe.com/experience/decisioning/propositions"] = named
        else:
            xdm["_experience"] = {"decisioning": {"propositions": named}}
        return {"xdm": xdm}

    interact(client, shop.datastream, {"events": [display(100, "d-ok")]})
    refused = interact(client, shop.datastream, {"events": [display(101, "d-1")]}, expect=413)
    assert (
        refused.json()["report"]["pointer"] == "/events/0/xdm/_experience/decisioning/propositions"
    )
    refused = interact(
        client, shop.datastream, {"events": [display(101, "d-2", xdm_form=True)]}, expect=413
    )
    assert refused.json()["report"]["pointer"] == (
        "/events/0/xdm/https:~1~1ns.adobe.com~1experience~1decisioning~1propositions"
    )
    many = {"events": [display(100, f"d-{n}") for n in range(11)]}
    interact(client, shop.datastream, many, path="/ee/v1/collect", expect=413)


def test_dry_run_flagged_feedback_counts_nothing(shop, client):
    first = interact(client, shop.datastream, event([shop.scope])).json()
    ecid = handles(first, "identity:result")[0]["payload"][0]["id"]
    [payload] = handles(first, "personalization:decisions")[0]["payload"]
    display = {
        "_id": "dry-display-1",
        "eventType": "decisioning.propositionDisplay",
        "identityMap": {"ECID": [{"id": ecid}]},
        "_experience": {
            "decisioning": {"propositions": [{"id": payload["id"], "scope": payload["scope"]}]}
        },
    }
    dry = {"__adobe": {"ajo": {"dryRun": True}}}
    interact(client, shop.datastream, {"events": [{"xdm": display, "data": dry}]})
    assert shop.report()[shop.a]["impressions"] == 0


def test_several_scopes_of_one_event_share_one_proposition_id(shop, client):
    # As in Adobe's multi-scope example: one payload per scope, one id for all of them.
    request = example("edge-decisions-multi-scope.request.json")
    two = [shop.scope, scope(shop.decision, shop.placement, itemCount=2)]
    request["events"][0]["query"]["personalization"]["decisionScopes"] = two
    [decisions] = handles(
        interact(client, shop.datastream, request).json(), "personalization:decisions"
    )
    assert [p["scope"] for p in decisions["payload"]] == two
    assert len({p["id"] for p in decisions["payload"]}) == 1
    assert all(p["items"] for p in decisions["payload"])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/ee/v2/interact", 405),
        ("HEAD", "/ee/v1/interact", 405),
        ("POST", "/ee/v1/interact/", 404),
        ("POST", "/ee/v1/interact/extra/segments/here", 404),
    ],
)
def test_a_path_or_method_the_edge_does_not_serve_answers_in_its_problem_shape(
    shop, client, method, path, status
):
    # They came back in the authenticated APIs' shape, while docs/api.md says every Edge
    # error has the Edge Network's (report.requestId).
    response = client.request(
        method, path, params={"configId": shop.datastream, "requestId": "r-9"}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    if method != "HEAD":
        body = response.json()
        assert body["status"] == status and body["report"] == {"requestId": "r-9"}, body
    if status == 405:
        assert response.headers["allow"] == "OPTIONS, POST"

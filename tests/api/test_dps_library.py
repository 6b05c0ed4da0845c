"""One library, two views: every object created through one API form is read, updated,
listed and deleted through the other; tenancy and bad input on the dps form."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from support import PATCH_TYPE, schema
from support.api import HTML, WEB, Tenant, make_tenant
from support.dps import BASE, READ, RESOURCES, WRITE, Dps, item_url


@pytest.fixture
def dps(tenant: Tenant) -> Dps:
    return Dps(tenant)


def _xcore_placement(tenant: Tenant) -> str:
    body = {"xdm:name": "P", "xdm:channel": WEB, "xdm:componentType": HTML}
    return str(tenant.create("offer-placement", body)["@id"])


def _dps_placement(dps: Dps) -> str:
    body = {"name": "P", "channel": WEB, "componentType": "html"}
    return str(dps.create("offer-placement", body)["id"])


#: Per kind: the xcore body and the dps body of the same object, given a placement, a tag,
#: a rule, an offer, a fallback and a collection (``refs``) that already exist.
def _bodies(kind: str, refs: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    pql = {"type": "PQL", "format": "pql/text", "value": "true"}
    xpql = {f"xdm:{k}": v for k, v in pql.items()}
    component = {"type": "html", "format": "text/html", "content": "<b>x</b>"}
    xcomponent = {"@type": HTML, "dc:format": "text/html", "xdm:content": "<b>x</b>"}
    p, t = refs["placement"], refs["tag"]
    offer = {
        "name": "O",
        "status": "approved",
        "representations": [{"channel": WEB, "placement": p, "components": [component]}],
        "selectionConstraint": {"eligibilityRule": refs["rule"]},
        "rank": {"priority": 3},
        "tags": [t],
    }
    xoffer = {
        "xdm:name": "O",
        "xdm:status": "approved",
        "xdm:representations": [
            {"xdm:channel": WEB, "xdm:placement": p, "xdm:components": [xcomponent]}
        ],
        "xdm:selectionConstraint": {"xdm:eligibilityRule": refs["rule"]},
        "xdm:rank": {"xdm:priority": 3},
        "xdm:tags": [t],
    }
    table: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "offer-placement": (
            {"xdm:name": "P", "xdm:channel": WEB, "xdm:componentType": HTML, "xdm:itemCount": 2},
            {"name": "P", "channel": WEB, "componentType": "html", "itemCount": 2},
        ),
        "tag": ({"xdm:name": "T"}, {"name": "T"}),
        "eligibility-rule": (
            {"xdm:name": "R", "xdm:condition": xpql},
            {"name": "R", "condition": pql},
        ),
        "ranking-function": (
            {"xdm:name": "F", "xdm:expression": {**xpql, "xdm:value": "1"}},
            {"name": "F", "expression": {**pql, "value": "1"}},
        ),
        "ranking-strategy": (
            {"xdm:name": "S", "xdm:strategyType": "auto-optimization"},
            {"name": "S", "strategyType": "auto-optimization"},
        ),
        "personalized-offer": (xoffer, offer),
        "fallback-offer": (
            {k: v for k, v in xoffer.items() if k in ("xdm:name", "xdm:status")}
            | {"xdm:representations": xoffer["xdm:representations"]},
            {k: v for k, v in offer.items() if k in ("name", "status", "representations")},
        ),
        "offer-filter": (
            {"xdm:name": "C", "xdm:filterType": "allTags", "xdm:ids": [t]},
            {"name": "C", "filterType": "all-tags", "ids": [t]},
        ),
        "offer-activity": (
            {
                "xdm:name": "D",
                "xdm:status": "draft",
                "xdm:fallback": refs["fallback"],
                "xdm:criteria": [
                    {
                        "xdm:placements": [p],
                        "xdm:ranking": {"xdm:priority": 1},
                        "xdm:optionSelection": {"xdm:filter": refs["collection"]},
                    }
                ],
            },
            {
                "name": "D",
                "status": "draft",
                "fallback": refs["fallback"],
                "criteria": [
                    {
                        "placements": [p],
                        "rank": {"priority": 1},
                        "optionSelection": {"filter": refs["collection"]},
                    }
                ],
            },
        ),
    }
    return table[kind]


def _refs(tenant: Tenant, dps: Dps) -> dict[str, str]:
    """Dependencies, made through both forms (references cross the forms too)."""
    refs = {"placement": _xcore_placement(tenant), "tag": dps.create("tag", {"name": "t"})["id"]}
    refs["rule"] = tenant.create(
        "eligibility-rule",
        {"xdm:name": "r", "condition": {"type": "PQL", "format": "pql/text", "value": "true"}},
    )["@id"]
    representation = {
        "placement": refs["placement"],
        "components": [{"type": "html", "format": "text/html"}],
    }
    refs["fallback"] = dps.create(
        "fallback-offer",
        {"name": "fb", "status": "approved", "representations": [representation]},
    )["id"]
    refs["collection"] = tenant.create(
        "offer-filter", {"xdm:name": "c", "xdm:filterType": "anyTags", "xdm:ids": [refs["tag"]]}
    )["@id"]
    return refs


def _xcore_instance(tenant: Tenant, kind: str, at_id: str) -> dict[str, Any]:
    page = tenant.client.get(
        tenant.url(),
        params={"schema": schema(kind, None), "id": at_id},
        headers=tenant.headers,
    ).json()
    [resource] = page["_embedded"]["results"]
    return dict(resource)


def _xcore_patch(tenant: Tenant, kind: str, instance_id: str, ops: list[Any]) -> Any:
    response = tenant.client.patch(
        tenant.url(f"/{instance_id}"),
        content=json.dumps(ops),
        headers={**tenant.headers, "Content-Type": PATCH_TYPE.format(schema=schema(kind))},
    )
    assert response.status_code == 200, response.text
    return response.json()


KINDS = list(RESOURCES)


@pytest.mark.parametrize("kind", KINDS)
def test_created_through_xcore_is_read_updated_listed_and_deleted_through_dps(tenant, dps, kind):
    xbody, dbody = _bodies(kind, _refs(tenant, dps))
    receipt = tenant.create(kind, xbody)
    at_id = receipt["@id"]
    assert at_id.startswith(f"xcore:{kind}:")  # the xcore id is kept (migrated data)
    read = dps.get(kind, at_id)
    assert read["id"] == at_id and read["etag"] == 1
    assert {k: read[k] for k in dbody} == dbody
    updated = dps.patch(kind, at_id, [{"op": "replace", "path": "/name", "value": "via dps"}])
    assert updated["etag"] == 2  # the same etag, bumped
    assert _xcore_instance(tenant, kind, at_id)["_instance"]["xdm:name"] == "via dps"
    assert _xcore_instance(tenant, kind, at_id)["repo:etag"] == 2
    listed = dps.list(f"/{RESOURCES[kind]}&property=id=={at_id}".replace("s&", "s?", 1))
    assert [item["id"] for item in listed["results"]] == [at_id]
    assert dps.delete(kind, at_id).content == b""
    dps.get(kind, at_id, expect=404)
    response = tenant.client.get(tenant.url(f"/{receipt['instanceId']}"), headers=tenant.headers)
    assert response.status_code == 404


@pytest.mark.parametrize("kind", KINDS)
def test_created_through_dps_is_read_updated_listed_and_deleted_through_xcore(tenant, dps, kind):
    xbody, dbody = _bodies(kind, _refs(tenant, dps))
    receipt = dps.create(kind, dbody)
    at_id = receipt["id"]
    assert at_id.startswith(f"dps:{kind}:")
    resource = _xcore_instance(tenant, kind, at_id)
    assert resource["_instance"] == {**xbody, "@id": at_id}
    assert resource["repo:etag"] == 1
    xreceipt = _xcore_patch(
        tenant,
        kind,
        resource["instanceId"],
        [{"op": "replace", "path": "/_instance/xdm:name", "value": "via xcore"}],
    )
    assert xreceipt["repo:etag"] == 2
    assert dps.get(kind, at_id)["name"] == "via xcore"
    # A passing test alone changes nothing: the etag stays (a PATCH that writes bumps it).
    assert dps.patch(kind, at_id, [{"op": "test", "path": "/etag", "value": 2}])["etag"] == 2
    url = tenant.url(f"/{resource['instanceId']}")
    response = tenant.client.delete(url, headers=tenant.headers)
    assert response.status_code == 202, response.text
    dps.get(kind, at_id, expect=404)
    assert tenant.client.get(url, headers=tenant.headers).status_code == 404


def test_an_if_match_from_one_form_guards_a_write_through_the_other(tenant, dps):
    at_id = _dps_placement(dps)
    etag = tenant.client.get(
        tenant.url(f"/{_xcore_instance(tenant, 'offer-placement', at_id)['instanceId']}"),
        headers=tenant.headers,
    ).headers["etag"]
    dps.patch("offer-placement", at_id, [{"op": "replace", "path": "/name", "value": "x"}])
    response = tenant.client.patch(
        item_url("offer-placement", at_id),
        json=[{"op": "replace", "path": "/name", "value": "y"}],
        headers={**tenant.headers, **WRITE, "If-Match": etag},
    )
    assert response.status_code == 409  # stale: the dps write bumped the shared etag
    response = tenant.client.get(
        item_url("offer-placement", at_id), headers={**tenant.headers, "If-None-Match": '"2"'}
    )
    assert response.status_code == 304


def test_a_reference_across_forms_keeps_a_dps_object_from_being_deleted(tenant, dps):
    placement = _dps_placement(dps)
    tenant.create(
        "personalized-offer",
        {
            "xdm:name": "uses it",
            "xdm:status": "draft",
            "xdm:representations": [{"xdm:placement": placement, "xdm:components": []}],
        },
    )
    response = dps.delete("offer-placement", placement, expect=409)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["referencedBy"][0]["@id"].startswith("xcore:personalized-offer:")


def test_a_refused_delete_links_each_referrer_on_the_dps_api(dps):
    # The href was the xcore path (/{container}/instances/{uuid}): appended to the dps API
    # as the pages' links are, it named nothing.
    placement = _dps_placement(dps)
    representation = {"placement": placement, "components": []}
    fallback = dps.create(
        "fallback-offer", {"name": "f", "status": "draft", "representations": [representation]}
    )["id"]
    [referrer] = dps.delete("offer-placement", placement, expect=409).json()["referencedBy"]
    assert referrer["id"] == referrer["@id"] == fallback
    assert referrer["href"] == f"/offers/{fallback}?offer-type=fallback"
    response = dps.client.get(BASE + referrer["href"], headers={**dps.tenant.headers, **READ})
    assert response.status_code == 200 and response.json()["id"] == fallback


# -- tenancy ------------------------------------------------------------------------------


@pytest.fixture
def stranger(client, db_url) -> Tenant:
    return make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")


@pytest.fixture
def sibling(client, db_url) -> Tenant:
    return make_tenant(client, db_url, "ACME@AdobeOrg", "dev")


@pytest.mark.parametrize("who", ["stranger", "sibling"])
def test_another_org_or_sandbox_sees_nothing_of_a_dps_object(tenant, dps, request, who):
    other: Tenant = request.getfixturevalue(who)
    at_id = _dps_placement(dps)
    url = item_url("offer-placement", at_id)
    them = {**other.headers, **WRITE}
    assert other.client.get(url, headers=them).status_code == 404
    ops = [{"op": "replace", "path": "/name", "value": "mine"}]
    assert other.client.patch(url, json=ops, headers=them).status_code == 404
    assert other.client.delete(url, headers=them).status_code == 404
    page = other.client.get(f"{BASE}/placements", headers=them).json()
    assert page["results"] == [] and page["total"] == 0
    # References into another tenant's library do not resolve either.
    representation = {"placement": at_id, "components": []}
    body = {"name": "o", "status": "draft", "representations": [representation]}
    response = other.client.post(f"{BASE}/offers?offer-type=fallback", json=body, headers=them)
    assert response.status_code == 422
    assert response.json()["pointer"] == "/representations/0/placement"
    # And the owner's object is untouched.
    assert dps.get("offer-placement", at_id)["etag"] == 1


def test_an_id_of_another_kind_is_not_found_on_this_resource(dps):
    at_id = _dps_placement(dps)
    response = dps.client.get(f"{BASE}/tags/{at_id}", headers={**dps.tenant.headers, **READ})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    personalized = dps.create("personalized-offer", {"name": "o", "status": "draft"})["id"]
    dps.get("fallback-offer", personalized, expect=404)


# -- bad input ----------------------------------------------------------------------------

Call = Callable[[Dps, str], Any]


def _post(path: str, body: Any, headers: dict[str, str] | None = None) -> Call:
    def call(dps: Dps, _at_id: str) -> Any:
        content = body if isinstance(body, str) else json.dumps(body)
        return dps.client.post(
            BASE + path, content=content, headers={**dps.tenant.headers, **WRITE, **(headers or {})}
        )

    return call


def _patch(ops: Any, headers: dict[str, str] | None = None) -> Call:
    def call(dps: Dps, at_id: str) -> Any:
        return dps.client.patch(
            item_url("offer-placement", at_id),
            content=json.dumps(ops),
            headers={**dps.tenant.headers, **WRITE, **(headers or {})},
        )

    return call


def _get(path: str) -> Call:
    def call(dps: Dps, _at_id: str) -> Any:
        return dps.client.get(BASE + path, headers={**dps.tenant.headers, **READ})

    return call


#: (what, the request, status, the pointer of one of the errors, or a message, or None)
BAD_INPUT: list[tuple[str, Call, int, str | None]] = [
    (
        "offers without offer-type",
        _post("/offers", {"name": "o", "status": "draft"}),
        400,
        "offer-type",
    ),
    ("unknown offer-type", _get("/offers?offer-type=special"), 400, "offer-type"),
    ("unknown resource", _get("/activities"), 404, None),
    ("malformed JSON", _post("/tags", "{"), 400, None),
    ("an array body", _post("/tags", [{"name": "t"}]), 400, "/"),
    ("no content type", _post("/tags", {"name": "t"}, {"Content-Type": ""}), 400, None),
    (
        "a HAL content type",
        _post("/tags", {"name": "t"}, {"Content-Type": "text/plain"}),
        415,
        None,
    ),
    ("an id on create", _post("/tags", {"id": "dps:tag:1", "name": "t"}), 422, "/id"),
    # It pointed at /id, a member the client did not send.
    ("an @id on create", _post("/tags", {"@id": "dps:tag:1", "name": "t"}), 422, "/@id"),
    (
        "offer-type given as two types",
        _get("/offers?offer-type=personalized&offer-type=fallback"),
        400,
        "offer-type",
    ),
    ("a missing name", _post("/tags", {"description": "d"}), 422, "'name' is required"),
    # A member the schema takes in either spelling was told as "… is not valid under any of
    # the given schemas", quoting the stored form.
    ("a rule without a condition", _post("/offer-rules", {"name": "r"}), 422, "'condition' is"),
    (
        "a decision without criteria",
        _post("/offer-decisions", {"name": "d", "status": "draft"}),
        422,
        "'criteria' is",
    ),
    (
        "a negative priority",
        _post(
            "/offers?offer-type=personalized",
            {"name": "o", "status": "draft", "rank": {"priority": -1}},
        ),
        422,
        "/rank/priority",
    ),
    (
        "an unknown status",
        _post(
            "/offer-decisions", {"name": "d", "status": "on", "fallback": "dps:fallback-offer:1"}
        ),
        422,
        "/status",
    ),
    (
        "a missing reference",
        _post("/offer-collections", {"name": "c", "filterType": "any-tags", "ids": ["dps:tag:1"]}),
        422,
        "/ids/0",
    ),
    (
        "invalid PQL",
        _post(
            "/offer-rules",
            {"name": "r", "condition": {"type": "PQL", "format": "pql/text", "value": "a =="}},
        ),
        422,
        "/condition/value",
    ),
    ("a patch of the id", _patch([{"op": "replace", "path": "/id", "value": "x"}]), 422, "/id"),
    ("a patch of the etag", _patch([{"op": "replace", "path": "/etag", "value": 9}]), 422, "/etag"),
    ("a failed test", _patch([{"op": "test", "path": "/name", "value": "other"}]), 409, None),
    ("a patch that is not a list", _patch({"op": "add"}), 400, "/"),
    ("a stale If-Match", _patch([], {"If-Match": '"7"'}), 409, None),
    ("a bad property operator", _get("/placements?property=name=%3Cx"), 400, "property"),
    ("a bad regular expression", _get("/placements?property=name~(a%2B)%2B"), 400, "property"),
    ("limit 0", _get("/placements?limit=0"), 400, "limit"),
    ("a bad cursor", _get("/placements?start=x"), 400, "start"),
    ("orderby twice", _get("/placements?orderby=name&orderby=id"), 400, "orderby"),
    ("orderby a field no placement has", _get("/placements?orderby=-title"), 400, "orderby"),
    ("orderby a field no tag has", _get("/tags?orderby=name,-bogus.x"), 400, "orderby"),
    ("an unknown id", _get("/placements/dps:offer-placement:1"), 404, None),
]


@pytest.mark.parametrize(
    ("query", "told"),
    [
        ("/offers?offer-type=personalized&property=rank.priority=5", "'rank.priority=5'"),
        ("/offers?offer-type=personalized&orderby=rank..priority", "'rank..priority'"),
    ],
)
def test_a_bad_list_parameter_is_told_in_the_dps_names_sent(dps, query, told):
    # It named the stored xcore path ('_instance.xdm:rank..priority'), never sent.
    response = _get(query)(dps, None)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert told in detail and "_instance" not in detail and "xdm:" not in detail, detail


@pytest.mark.parametrize(
    ("what", "call", "status", "pointer"), BAD_INPUT, ids=[case[0] for case in BAD_INPUT]
)
def test_bad_input_is_a_clear_4xx_problem(dps, what, call, status, pointer):
    at_id = _dps_placement(dps)
    response = call(dps, at_id)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["detail"]
    if pointer is not None and pointer.startswith("'"):
        assert any(pointer in e["message"] for e in problem["errors"]), problem
    elif pointer is not None:
        found = [problem["pointer"], *(e["pointer"] for e in problem.get("errors", []))]
        assert pointer in found, problem
    assert dps.get("offer-placement", at_id)["etag"] == 1  # nothing changed


def test_offer_type_given_as_two_types_deletes_nothing(dps):
    # The first one won: which offers a DELETE removed hung on the order of the parameters.
    fallback = dps.create("fallback-offer", {"name": "f", "status": "draft"})["id"]
    response = dps.client.delete(
        f"{BASE}/offers/{fallback}?offer-type=fallback&OFFER-TYPE=Personalized",
        headers={**dps.tenant.headers, **WRITE},
    )
    assert response.status_code == 400, response.text
    assert response.json()["pointer"] == "offer-type"
    assert dps.get("fallback-offer", fallback)["etag"] == 1
    # The same type twice (any case), or beside an empty one, is that type.
    for query in ("offer-type=fallback&offer-type=FALLBACK", "offer-type=&offer-type=fallback"):
        response = dps.client.get(
            f"{BASE}/offers/{fallback}?{query}", headers={**dps.tenant.headers, **READ}
        )
        assert response.status_code == 200, (query, response.text)


@pytest.mark.parametrize(
    ("constraint", "pointer", "told"),
    [
        ({"limit": 1e308}, "/frequencyCappingConstraints/0/limit", "limit must be"),
        ({"limit": 1, "repeat": {}}, "/frequencyCappingConstraints/0/repeat/unit", "repeat/unit"),
    ],
)
def test_a_refused_member_is_named_in_dps_terms(dps, constraint, pointer, told):
    # The messages named xdm:limit and xdm:repeat/xdm:unit, members the client never sent.
    body = {
        "name": "o",
        "status": "draft",
        "frequencyCappingConstraints": [
            {"enabled": True, "scope": "global", "entity": "offer", **constraint}
        ],
    }
    response = _post("/offers?offer-type=personalized", body)(dps, "")
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["pointer"] == pointer
    assert told in problem["detail"] and "xdm:" not in json.dumps(problem), problem


# -- list parameters on the database ------------------------------------------------------


def test_property_filters_negation_commas_and_orderby_run_on_the_database(dps):
    for name, description in (("alpha", "first"), ("beta", None), ("gamma", "third")):
        body = {"name": name} | ({"description": description} if description else {})
        dps.create("tag", body)

    def names(query: str) -> list[str]:
        return [item["name"] for item in dps.list(f"/tags?{query}")["results"]]

    assert names("orderby=name&property=description") == ["alpha", "gamma"]
    assert names("orderby=name&property=!description") == ["beta"]
    assert names("orderby=-name&property=name!=alpha") == ["gamma", "beta"]
    assert names("orderby=name&property=name~.*a.*,description") == ["alpha", "gamma"]
    assert names("orderby=name&property=name~.*a.*&property=!name==gamma") == ["alpha", "beta"]
    ids = [item["id"] for item in dps.list("/tags?orderby=-id&property=id~dps:tag:.*")["results"]]
    assert len(ids) == 3 and ids == sorted(ids, reverse=True)
    page = dps.list("/tags?orderby=name&limit=1&property=name~.*a")
    assert page["count"] == 1 and page["total"] == 3
    second = dps.list(page["_links"]["next"]["href"])
    assert [i["name"] for i in second["results"]] == ["beta"] and second["total"] == 3


def test_xcore_members_spelt_like_the_dps_envelope_survive_a_dps_update(tenant, dps):
    body = {"xdm:name": "T", "etag": "theirs", "created": 5, "offerui:x": {"y": 1}}
    receipt = tenant.create("tag", body)
    read = dps.get("tag", receipt["@id"])
    assert read["etag"] == 1 and read["created"] != 5 and read["offerui:x"] == {"y": 1}
    dps.patch("tag", receipt["@id"], [{"op": "replace", "path": "/name", "value": "U"}])
    stored = _xcore_instance(tenant, "tag", receipt["@id"])["_instance"]
    assert stored == {**body, "xdm:name": "U", "@id": receipt["@id"]}


def test_a_dps_update_keeps_what_an_xcore_client_stored_as_it_was_spelt(tenant, dps):
    # A dps PATCH deleted the bare `name` stored beside `xdm:name` (the document shows only
    # the prefixed one) and respelt Adobe's documented bare rule members (`condition` became
    # `xdm:condition`), so an xcore client no longer found what it wrote.
    tag = tenant.create("tag", {"xdm:name": "A", "name": "legacy", "description": "bare"})
    dps.patch("tag", tag["@id"], [{"op": "add", "path": "/labels", "value": ["core/C1"]}])
    stored = _xcore_instance(tenant, "tag", tag["@id"])["_instance"]
    assert stored["name"] == "legacy" and stored["description"] == "bare"
    assert "xdm:description" not in stored
    pql = {"type": "PQL", "format": "pql/text", "value": "true"}
    rule = tenant.create("eligibility-rule", {"xdm:name": "R", "condition": pql})
    dps.patch("eligibility-rule", rule["@id"], [{"op": "replace", "path": "/name", "value": "S"}])
    stored = _xcore_instance(tenant, "eligibility-rule", rule["@id"])["_instance"]
    assert stored == {"xdm:name": "S", "condition": pql, "@id": rule["@id"]}


#: Patches that write nothing: an empty one, and tests alone.
_NO_WRITE = [
    [],
    [{"op": "test", "path": "/name", "value": "O"}],
    [{"op": "test", "path": "/name", "value": "O"}, {"op": "test", "path": "/etag", "value": 1}],
]


def _xcore_ops(operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same operations on the xcore resource (``/name`` is ``xdm:name`` there)."""
    paths = {"/name": "/_instance/xdm:name", "/etag": "/repo:etag"}
    return [{**op, "path": paths[op["path"]]} for op in operations]


@pytest.mark.parametrize("kind", ["personalized-offer", "tag", "offer-activity"])
@pytest.mark.parametrize("made_by", ["dps", "xcore"])
def test_a_patch_that_writes_nothing_keeps_the_etag_and_date_through_either_form(
    tenant, dps, kind, made_by
):
    # An empty PATCH bumped the etag and the modification date of an unchanged object
    # (and kept a revision that changed nothing), so caches and If-Match holders lost it.
    xbody, body = _bodies(kind, _refs(tenant, dps))
    made = {
        "dps": lambda: dps.create(kind, {**body, "name": "O"})["id"],
        "xcore": lambda: tenant.create(kind, {**xbody, "xdm:name": "O"})["@id"],
    }
    at_id = made[made_by]()
    before = dps.get(kind, at_id)
    instance_id = _xcore_instance(tenant, kind, at_id)["instanceId"]
    for operations in _NO_WRITE:
        receipt = dps.patch(kind, at_id, operations)
        assert (receipt["etag"], receipt["lastModifiedDate"][:23]) == (
            1,
            before["modified"][:23],
        ), operations
        xreceipt = _xcore_patch(tenant, kind, instance_id, _xcore_ops(operations))
        assert (xreceipt["repo:etag"], xreceipt["repo:lastModifiedDate"][:23]) == (
            1,
            before["modified"][:23],
        ), operations
    assert dps.get(kind, at_id) == before
    revisions = tenant.client.get(
        tenant.url(f"/{instance_id}/revisions"), headers=tenant.headers
    ).json()["revisions"]
    assert len(revisions) == 1
    # A stale If-Match is still a conflict, though nothing would be written.
    stale = tenant.client.patch(
        item_url(kind, at_id), json=[], headers={**tenant.headers, **WRITE, "If-Match": '"6"'}
    )
    assert stale.status_code == 409, stale.text
    # A patch that writes is a write, even of the value already there: Adobe's
    # fallback-offer update receipt (a replace of status "approved" by "approved") has
    # etag 2 and a new modification date.
    same = [{"op": "replace", "path": "/name", "value": "O"}]
    assert dps.patch(kind, at_id, same)["etag"] == 2
    assert _xcore_patch(tenant, kind, instance_id, _xcore_ops(same))["repo:etag"] == 3

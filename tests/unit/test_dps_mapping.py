"""The dps form as a mapping over the stored (xcore) form: bodies, pointers, list queries."""

from __future__ import annotations

import json

import pytest

from nextoffer.errors import BadRequest
from nextoffer.repository import dps
from nextoffer.repository.dps_fields import PATHS, RESOURCES, Resource, markdown
from nextoffer.repository.dps_query import parse_list
from nextoffer.repository.query import Op
from support import ROOT, example

BY_NAME = {(r.path, r.offer_type): r for r in RESOURCES}
OFFERS = BY_NAME["offers", "personalized"]
PLACEMENTS = BY_NAME["placements", None]
COLLECTIONS = BY_NAME["offer-collections", None]
RULES = BY_NAME["offer-rules", None]
DECISIONS = BY_NAME["offer-decisions", None]

CREATES = [
    (PLACEMENTS, "dps-placement-create.request.json"),
    (OFFERS, "dps-personalized-offer-create.request.json"),
    (BY_NAME["offers", "fallback"], "dps-fallback-create.request.json"),
    (COLLECTIONS, "dps-collection-create.request.json"),
    (RULES, "dps-decision-rule-create.request.json"),
    (BY_NAME["tags", None], "dps-tag-create.request.json"),
    (DECISIONS, "dps-decision-create.request.json"),
]


@pytest.mark.parametrize(("resource", "name"), CREATES, ids=[c[1] for c in CREATES])
def test_every_documented_dps_body_survives_the_stored_form(resource: Resource, name: str):
    body = example(name)
    assert dps.to_dps(resource, dps.to_xcore(resource, body)) == body


def test_documented_bodies_store_in_the_xcore_spelling():
    decision = dps.to_xcore(DECISIONS, example("dps-decision-create.request.json"))
    [criterion] = decision["xdm:criteria"]
    assert criterion["xdm:ranking"] == {
        "xdm:priority": 0,
        "xdm:order": {
            "xdm:orderEvaluationType": "rankingStrategy",
            "xdm:rankingStrategy": "123456789123",
        },
    }
    assert criterion["xdm:profileConstraints"] == {"xdm:profileConstraintType": "none"}
    assert criterion["xdm:optionSelection"] == {"xdm:filter": "offerCollection1234"}
    rule = dps.to_xcore(RULES, example("dps-decision-rule-create.request.json"))
    assert rule["xdm:definedOn"]["profile"]["xdm:schema"]["$ref"].endswith("profile_union")
    assert dps.to_xcore(COLLECTIONS, {"filterType": "all-tags"}) == {"xdm:filterType": "allTags"}


def test_xcore_bodies_read_in_the_dps_spelling_bare_names_included():
    # Adobe's own xcore rule example writes description and condition without xdm:.
    rule = dps.to_dps(RULES, example("xcore-decision-rule-create.request.json"))
    assert rule["name"] == "Sales rule" and rule["description"] == "Decisioning rule for sales"
    assert rule["condition"]["value"].startswith("profile.person")
    assert rule["definedOn"]["profile"]["schema"]["ref"].endswith("profile_union")
    placement = dps.to_dps(PLACEMENTS, example("xcore-placement-create.request.json"))
    assert placement["componentType"] == "html"
    # Prefixed beats bare; members the table does not name are kept as they are.
    assert dps.to_dps(PLACEMENTS, {"xdm:name": "a", "name": "b", "offerui:x": 1}) == {
        "name": "a",
        "offerui:x": 1,
    }
    assert "@id" not in dps.to_dps(PLACEMENTS, {"@id": "xcore:offer-placement:1"})


@pytest.mark.parametrize(
    ("resource", "stored", "sent"),
    [
        (OFFERS, "/xdm:rank/xdm:priority", "/rank/priority"),
        (
            OFFERS,
            "/xdm:representations/0/xdm:components/1/@type",
            "/representations/0/components/1/type",
        ),
        (RULES, "/xdm:condition/xdm:value", "/condition/value"),
        (RULES, "/condition/value", "/condition/value"),
        (RULES, "/xdm:definedOn/profile/xdm:schema/$ref", "/definedOn/profile/schema/ref"),
        (
            DECISIONS,
            "/xdm:criteria/2/xdm:ranking/xdm:order/xdm:function",
            "/criteria/2/rank/order/function",
        ),
        (DECISIONS, "/@id", "/id"),
        (PLACEMENTS, "/offerui:x/y", "/offerui:x/y"),
        (PLACEMENTS, "/", "/"),
    ],
)
def test_errors_point_into_the_body_the_client_sent(resource, stored, sent):
    assert dps.dps_pointer(resource, stored) == sent


def test_a_list_query_filters_and_orders_the_stored_paths():
    query = parse_list(
        COLLECTIONS,
        [("property", "name!=abc,id~.*12,34.*,description"), ("property", "!filterType==any-tags")],
    )
    texts = [
        (f.path.text, f.op, f.literal.text if f.literal else None, f.negated) for f in query.filters
    ]
    assert texts == [
        ("_instance.xdm:name", Op.NE, "abc", False),
        ("_instance.@id", Op.MATCH, ".*12,34.*", False),  # a comma inside a value stays in it
        ("_instance.xdm:description", Op.EXISTS, None, False),
        ("_instance.xdm:filterType", Op.EQ, "anyTags", True),  # dps spelling → stored spelling
    ]
    assert query.order_text() == "-repo:lastModifiedDate,instanceId"  # default -modified
    assert not query.count_from_start
    ordered = parse_list(OFFERS, [("orderBy", "-rank.priority,created"), ("limit", "5")])
    assert ordered.order_text() == "-_instance.xdm:rank.xdm:priority,repo:createdDate,instanceId"
    assert ordered.limit == 5


@pytest.mark.parametrize(
    "pairs",
    [
        [("property", "name=<x")],
        [("limit", "0")],
        [("orderby", "a"), ("orderby", "b")],
        [("start", "1")],
    ],
)
def test_bad_list_parameters_are_400s(pairs):
    with pytest.raises(BadRequest):
        parse_list(PLACEMENTS, pairs)


def test_docs_print_the_field_table_as_the_code_has_it():
    # Regenerate with markdown() (docs/api.md, "Every field, dps ↔ xcore", says how).
    assert markdown() in (ROOT / "docs" / "api.md").read_text()


def test_the_openapi_document_names_every_dps_resource_of_the_table():
    document = json.loads((ROOT / "src" / "nextoffer" / "api" / "openapi.json").read_text())
    for path in ("/data/core/dps/{resource}", "/data/core/dps/{resource}/{id}"):
        for operation in document["paths"][path].values():
            [resource] = [p for p in operation["parameters"] if p["name"] == "resource"]
            assert resource["schema"]["enum"] == list(PATHS)

"""Terse builders of stored xcore instances for engine unit tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nextoffer.engine import Catalog, CatalogInstance, build_catalog
from nextoffer.engine import catalog as schemas
from unit.engine import engine_fakepql

HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"


def representation(placement_id: str, content: str = "") -> dict[str, Any]:
    return {
        "xdm:placement": placement_id,
        "xdm:components": [
            {"@type": HTML, "dc:format": "text/html", "xdm:content": content or placement_id}
        ],
    }


def instance(schema: str, at_id: str, body: Mapping[str, Any], etag: int = 1) -> CatalogInstance:
    return CatalogInstance(schema, at_id, f"inst-{at_id}", etag, dict(body))


def placement(at_id: str = "P1") -> CatalogInstance:
    return instance(schemas.PLACEMENT, at_id, {"xdm:name": at_id, "xdm:componentType": HTML})


def offer(
    at_id: str,
    *,
    priority: int = 0,
    placements: Iterable[str] = ("P1",),
    status: str = "approved",
    rule: str | None = None,
    tags: Iterable[str] = (),
    start: str | None = None,
    end: str | None = None,
    global_cap: int | None = None,
    profile_cap: int | None = None,
    characteristics: Mapping[str, str] | None = None,
    selection: Mapping[str, Any] | None = None,
) -> CatalogInstance:
    constraint: dict[str, Any] = dict(selection or {})
    if start:
        constraint["xdm:startDate"] = start
    if end:
        constraint["xdm:endDate"] = end
    if rule:
        constraint["xdm:eligibilityRule"] = rule
    body: dict[str, Any] = {
        "xdm:name": f"name of {at_id}",
        "xdm:status": status,
        "xdm:representations": [representation(p) for p in placements],
        "xdm:selectionConstraint": constraint,
        "xdm:rank": {"xdm:priority": priority},
        "xdm:tags": list(tags),
        "xdm:characteristics": dict(characteristics or {}),
    }
    caps = {}
    if global_cap is not None:
        caps["xdm:globalCap"] = global_cap
    if profile_cap is not None:
        caps["xdm:profileCap"] = profile_cap
    if caps:
        body["xdm:cappingConstraint"] = caps
    return instance(schemas.PERSONALIZED_OFFER, at_id, body)


def fallback(at_id: str = "F1", placements: Iterable[str] = ("P1",)) -> CatalogInstance:
    body = {
        "xdm:name": at_id,
        "xdm:status": "approved",
        "xdm:representations": [representation(p) for p in placements],
    }
    return instance(schemas.FALLBACK_OFFER, at_id, body)


def collection(at_id: str, ids: Iterable[str], filter_type: str = "offers") -> CatalogInstance:
    body = {"xdm:name": at_id, "xdm:filterType": filter_type, "xdm:ids": list(ids)}
    return instance(schemas.COLLECTION, at_id, body)


def rule(at_id: str, source: str, *, prefixed: bool = True) -> CatalogInstance:
    if prefixed:
        condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": source}
        return instance(
            schemas.ELIGIBILITY_RULE, at_id, {"xdm:name": at_id, "xdm:condition": condition}
        )
    condition = {"type": "PQL", "format": "pql/text", "value": source}
    return instance(schemas.ELIGIBILITY_RULE, at_id, {"xdm:name": at_id, "condition": condition})


def formula(at_id: str, source: str) -> CatalogInstance:
    expression = {"type": "PQL", "format": "pql/text", "value": source}
    return instance(schemas.RANKING_FORMULA, at_id, {"name": at_id, "expression": expression})


def criterion(
    collection_id: str,
    *,
    placements: Iterable[str] = (),
    group: int | None = None,
    constraint: Mapping[str, Any] | None = None,
    formula_id: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "xdm:placements": list(placements),
        "xdm:optionSelection": {"xdm:filter": collection_id},
    }
    ranking: dict[str, Any] = {}
    if group is not None:
        ranking["xdm:priority"] = group
    if formula_id is not None:
        ranking["xdm:order"] = {
            "xdm:orderEvaluationType": "scoringFunction",
            "xdm:function": formula_id,
        }
    if ranking:
        spec["xdm:ranking"] = ranking
    if constraint is not None:
        spec["xdm:profileConstraints"] = dict(constraint)
    return spec


def decision(
    at_id: str = "D1",
    criteria: Iterable[Mapping[str, Any]] = (),
    *,
    fallback_id: str = "F1",
    status: str = "live",
    start: str | None = None,
    end: str | None = None,
) -> CatalogInstance:
    body: dict[str, Any] = {
        "xdm:name": at_id,
        "xdm:status": status,
        "xdm:criteria": [dict(c) for c in criteria],
        "xdm:fallback": fallback_id,
    }
    if start:
        body["xdm:startDate"] = start
    if end:
        body["xdm:endDate"] = end
    return instance(schemas.DECISION, at_id, body)


def simple_library(
    *offers: CatalogInstance, extra: Iterable[CatalogInstance] = ()
) -> list[CatalogInstance]:
    """P1, F1, collection C1 of the given offers, decision D1 over C1."""
    ids = [o.at_id for o in offers]
    return [
        placement("P1"),
        fallback("F1"),
        *offers,
        collection("C1", ids),
        decision("D1", [criterion("C1")]),
        *extra,
    ]


def build(instances: Iterable[CatalogInstance]) -> Catalog:
    return build_catalog(instances, compile_rule=engine_fakepql.compile)

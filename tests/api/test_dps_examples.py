"""Every documented dps request body is accepted and answered in the documented shape.

The bodies are Adobe's (``tests/data/adobe/examples/dps-*``, sources in its README). Their
placeholder ids (``offerPlacement1234``, …) are remapped to objects this test creates first
through the dps API; everything else is sent as printed.
"""

from __future__ import annotations

from typing import Any

import pytest

from support import example, remap
from support.dps import DOCUMENT_DATE, RECEIPT_DATE, Dps

#: Documented create bodies: (xcore type name, request file, response file).
CREATES = [
    ("offer-placement", "dps-placement-create.request.json", "dps-placement-create.response.json"),
    ("tag", "dps-tag-create.request.json", "dps-tag-create.response.json"),
    (
        "eligibility-rule",
        "dps-decision-rule-create.request.json",
        "dps-decision-rule-create.response.json",
    ),
    (
        "personalized-offer",
        "dps-personalized-offer-create.request.json",
        "dps-personalized-offer-create.response.json",
    ),
    ("fallback-offer", "dps-fallback-create.request.json", "dps-fallback-create.response.json"),
    ("offer-filter", "dps-collection-create.request.json", "dps-collection-create.response.json"),
    ("offer-activity", "dps-decision-create.request.json", "dps-decision-create.response.json"),
]
#: Documented updates: (type, the create body of the object patched, the update's prefix).
UPDATES = [
    ("offer-placement", "dps-placement-create.request.json", "dps-placement-update"),
    (
        "personalized-offer",
        "dps-personalized-offer-create.request.json",
        "dps-personalized-offer-update",
    ),
    ("fallback-offer", "dps-fallback-create.request.json", "dps-fallback-update"),
    ("offer-filter", "dps-collection-create.request.json", "dps-collection-update"),
    ("offer-activity", "dps-decision-create.request.json", "dps-decision-update"),
]
#: Documented lookups (type, response file): the object is created from its own members.
LOOKUPS = [
    ("offer-placement", "dps-placement-lookup.response.json"),
    ("offer-filter", "dps-collection-lookup.response.json"),
    ("eligibility-rule", "dps-decision-rule-lookup.response.json"),
    ("personalized-offer", "dps-personalized-offer-lookup.response.json"),
    ("fallback-offer", "dps-fallback-lookup.response.json"),
]
#: Documented list pages: (type, response file, the documented request's path and query).
LISTS = [
    ("offer-placement", "dps-placement-list.response.json", "/placements?limit=2"),
    ("offer-filter", "dps-collection-list.response.json", "/offer-collections?limit=2"),
    ("eligibility-rule", "dps-decision-rule-list.response.json", "/offer-rules?limit=2"),
    ("tag", "dps-tag-list.response.json", "/tags?limit=2"),
    (
        "personalized-offer",
        "dps-personalized-offer-list.response.json",
        "/offers?offer-type=personalized&limit=2",
    ),
    ("fallback-offer", "dps-fallback-list.response.json", "/offers?offer-type=fallback&limit=2"),
    ("offer-activity", "dps-decision-list.response.json", "/offer-decisions?limit=2"),
    (
        "ranking-function",
        "dps-ranking-formulas-list.response.json",
        "/ranking-formulas?property=exdFunction%3D%3Dtrue&limit=2",
    ),
]
#: The envelope every documented document carries before the object's members.
ENVELOPE = ("created", "modified", "etag", "schemas", "createdBy", "lastModifiedBy", "id")
#: Members of Adobe's receipts that nextoffer does not have (docs/api.md, "The dps form").
NOT_ANSWERED = {"datasetId"}

WEB = "https://ns.adobe.com/xdm/channel-types/web"
EMAIL = "https://ns.adobe.com/xdm/channel-types/email"


def _placement(dps: Dps, name: str, channel: str = WEB) -> str:
    body = {"name": name, "componentType": "html", "channel": channel}
    return str(dps.create("offer-placement", body)["id"])


@pytest.fixture
def dps(tenant) -> Dps:
    return Dps(tenant)


@pytest.fixture
def library(dps: Dps) -> dict[str, str]:
    """An object (created through dps) for every placeholder id the documented bodies name."""
    ids: dict[str, str] = {}
    ids["offerPlacement1234"] = _placement(dps, "Placement 1234")
    ids["offerPlacement5678"] = _placement(dps, "Placement 5678")
    ids["tag1234"] = dps.create("tag", {"name": "Sneakers"})["id"]
    ids["tag5678"] = dps.create("tag", {"name": "Black Friday"})["id"]
    components = [{"type": "html", "format": "text/html", "content": "<p>hi</p>"}]
    for name in ("personalizedOffer1234", "personalizedOffer5678"):
        ids[name] = dps.create(
            "personalized-offer",
            {
                "name": name,
                "status": "approved",
                "representations": [
                    {
                        "channel": WEB,
                        "placement": ids["offerPlacement1234"],
                        "components": components,
                    }
                ],
                "tags": [ids["tag1234"]],
            },
        )["id"]
    both = [
        {"channel": WEB, "placement": ids[p], "components": components}
        for p in ("offerPlacement1234", "offerPlacement5678")
    ]
    for name in ("fallbackOffer1234", "fallbackOffer5678"):
        ids[name] = dps.create(
            "fallback-offer", {"name": name, "status": "approved", "representations": both}
        )["id"]
    ids["offerCollection1234"] = dps.create(
        "offer-filter", {"name": "tagged", "filterType": "any-tags", "ids": [ids["tag1234"]]}
    )["id"]
    ids["offerCollection5678"] = dps.create(
        "offer-filter",
        {"name": "listed", "filterType": "offers", "ids": [ids["personalizedOffer1234"]]},
    )["id"]
    return ids


def assert_receipt_like(receipt: dict[str, Any], documented: dict[str, Any], *, etag: int) -> None:
    assert set(receipt) == set(documented) - NOT_ANSWERED
    assert receipt["etag"] == etag
    assert RECEIPT_DATE.fullmatch(receipt["createdDate"])
    assert RECEIPT_DATE.fullmatch(receipt["lastModifiedDate"])
    assert receipt["lastModifiedDate"] >= receipt["createdDate"]


def members(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ENVELOPE}


def assert_document_like(got: dict[str, Any], documented: dict[str, Any]) -> None:
    """Envelope in the documented form, the object's members exactly as documented."""
    assert list(got)[: len(ENVELOPE)] == list(ENVELOPE)
    assert DOCUMENT_DATE.fullmatch(got["created"]) and DOCUMENT_DATE.fullmatch(got["modified"])
    # One version per type (the pages show two for fallback offers, none on one formula).
    assert [s.split(";")[0] for s in got["schemas"]] == [
        s.split(";")[0] for s in documented["schemas"]
    ]
    assert isinstance(got["etag"], int)
    assert members(got) == members(documented)


@pytest.mark.parametrize(("type_name", "request_file", "response_file"), CREATES)
def test_documented_create_is_accepted_with_the_documented_receipt(
    dps, tenant, library, type_name, request_file, response_file
):
    receipt = dps.create(type_name, remap(example(request_file), library))
    # The fallback page shows etag 2 on a create (a documentation defect, INDEX.md).
    assert_receipt_like(receipt, example(response_file), etag=1)
    assert receipt["id"].startswith(f"dps:{type_name}:")
    assert receipt["sandboxId"] == tenant.container
    assert receipt["createdBy"] == tenant.creds.user
    assert receipt["createdByClientId"] == tenant.creds.api_key
    read = dps.get(type_name, receipt["id"])
    assert members(read) == remap(example(request_file), library)


@pytest.mark.parametrize(("type_name", "create_file", "prefix"), UPDATES)
def test_documented_update_is_accepted_with_the_documented_receipt(
    dps, library, type_name, create_file, prefix
):
    created = dps.create(type_name, remap(example(create_file), library))
    operations = example(f"{prefix}.request.json")
    receipt = dps.patch(type_name, created["id"], operations)
    assert_receipt_like(receipt, example(f"{prefix}.response.json"), etag=2)
    read = dps.get(type_name, created["id"])
    for op in operations:  # each a replace of a top-level member, /description included
        assert read[op["path"].lstrip("/")] == op["value"]
    assert read["etag"] == 2


@pytest.mark.parametrize(("type_name", "response_file"), LOOKUPS)
def test_documented_lookup_answers_the_documented_document(dps, library, type_name, response_file):
    documented = remap(example(response_file), library)
    created = dps.create(type_name, members(documented))
    assert_document_like(dps.get(type_name, created["id"]), documented)


@pytest.mark.parametrize(("type_name", "response_file", "url"), LISTS)
def test_documented_list_answers_the_documented_page(dps, library, type_name, response_file, url):
    documented = remap(example(response_file), library)
    # Pages come newest first (-modified): create the documented last item first.
    for item in reversed(documented["results"]):
        dps.create(type_name, members(item))
    page = dps.list(url)
    assert list(page) == ["results", "count", "total", "_links"]
    everything = dps.list(url.replace("limit=2", "limit=1000"))
    assert page["total"] == everything["count"] == everything["total"]
    assert page["count"] == len(page["results"]) == min(2, page["total"])
    # The library's own objects come after the documented ones (created earlier).
    for got, want in zip(page["results"], documented["results"], strict=False):
        assert_document_like(got, want)
    path = url.split("?")[0]
    assert page["_links"]["self"] == {"href": url, "type": "application/json"}
    if page["total"] > page["count"]:
        assert page["_links"]["next"]["type"] == "application/json"
        assert page["_links"]["next"]["href"].startswith(path + "?")
    else:
        assert "next" not in page["_links"]


def test_documented_paging_walks_every_offer_once_by_its_next_links(dps, library):
    """dps-list-paging-next: ``orderby=-modified&limit=2&offer-type=PERSONALIZED``."""
    fragment = example("dps-list-paging-next.response-fragment.json")
    url = fragment["_links"]["self"]["href"]
    for n in range(3):
        dps.create(
            "personalized-offer",
            {"name": f"paged {n}", "status": "draft", "rank": {"priority": n}},
        )
    expected = dps.list("/offers?offer-type=personalized&limit=1000")
    seen: list[str] = []
    page = dps.list(url)
    assert page["_links"]["self"] == fragment["_links"]["self"]
    while True:
        assert page["total"] == expected["total"]
        seen += [item["id"] for item in page["results"]]
        following = page["_links"].get("next")
        if following is None:
            break
        href = following["href"]
        # The documented shape: the request's parameters, and the cursor in start.
        assert href.startswith("/offers?orderby=-modified&limit=2&offer-type=PERSONALIZED&start=")
        page = dps.list(href)
    assert seen == [item["id"] for item in expected["results"]]
    modified = [item["modified"] for item in expected["results"]]
    assert modified == sorted(modified, reverse=True)

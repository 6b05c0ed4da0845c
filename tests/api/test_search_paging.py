"""Keyset paging: walking ``next`` links yields every item exactly once (spec §5.1)."""

from __future__ import annotations

import json
from itertools import pairwise
from urllib.parse import quote

import pytest

from nextoffer.ids import epoch_micros, parse_datetime
from support import schema
from support.dps import Dps

BASE = "/data/core/xcore"
TAG = schema("tag")
OFFER = schema("personalized-offer")
#: Priorities whose number PostgreSQL's jsonb writes back without an exponent, an integer
#: past 64 bits to whoever reads it (1e20 as 100000000000000000000), beside ordinary ones.
#: Sent as JSON numbers with an exponent: an integer past 64 bits is refused (400).
HUGE = [1e30, 1e20, 7, 2**63, 1e25, 3]


@pytest.fixture
def tags(tenant) -> list[dict]:
    # Five names repeat five times each: sorting by name meets ties at every boundary.
    made = []
    for n in range(25):
        receipt = tenant.create("tag", {"xdm:name": f"tag {n % 5}"})
        made.append({**receipt, "name": f"tag {n % 5}"})
    return made


def walk(tenant, url: str) -> list[dict]:
    seen: list[dict] = []
    expected_total = None
    while url:
        response = tenant.client.get(url, headers=tenant.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        embedded = body["_embedded"]
        if expected_total is None:
            expected_total = embedded["total"]
        # total counts the items from this page on.
        assert embedded["total"] == expected_total - len(seen)
        assert embedded["count"] == len(embedded["results"]) <= 2
        seen.extend(embedded["results"])
        more = embedded["total"] > embedded["count"]
        assert ("next" in body["_links"]) == more
        url = BASE + body["_links"]["next"]["href"] if more else ""
    return seen


def sort_key(item: dict, order: str):
    keys = []
    for part in order.split(","):
        name = part.lstrip("+-")
        if name == "repo:createdDate":
            value = epoch_micros(parse_datetime(item["repo:createdDate"])) // 1000
        elif name == "_instance.xdm:name":
            value = item["_instance"]["xdm:name"]
        else:
            value = item[name]
        keys.append((value, part.startswith("-")))
    return keys


@pytest.mark.parametrize(
    "order",
    [
        None,
        "",  # an empty orderby is no order (its next link named orderby twice: a 400)
        "instanceId",
        "-instanceId",
        "repo:createdDate",
        "-repo:createdDate",
        "_instance.xdm:name",
        "-_instance.xdm:name,-repo:createdDate",
        "+repo:lastModifiedDate",
        "-repo:etag",
    ],
)
@pytest.mark.parametrize("endpoint", ["queries/core/search", "instances"])
def test_walking_next_links_gets_each_item_once_in_order(tenant, tags, order, endpoint):
    url = f"{BASE}/{tenant.container}/{endpoint}?schema={TAG}&limit=2"
    if order is not None:
        url += f"&orderby={quote(order)}"
    seen = walk(tenant, url)
    ids = [item["instanceId"] for item in seen]
    assert len(ids) == len(set(ids)) == 25
    assert set(ids) == {t["instanceId"] for t in tags}
    full = (order or "instanceId") + ("" if (order or "").endswith("instanceId") else ",instanceId")

    for before, after in pairwise(seen):
        a, b = sort_key(before, full), sort_key(after, full)
        for (va, desc), (vb, _) in zip(a, b, strict=True):
            if va != vb:
                assert (va > vb) if desc else (va < vb), (before, after)
                break
        else:
            pytest.fail("two items with the same sort values")


def test_next_link_formats(tenant, tags):
    body = tenant.client.get(
        f"{BASE}/{tenant.container}/queries/core/search?schema={TAG}&limit=2",
        headers=tenant.headers,
    ).json()
    last = body["_embedded"]["results"][-1]["instanceId"]
    assert body["_links"]["next"]["href"] == (
        f"/{tenant.container}/queries/core/search?start={last}&orderby=instanceId&schema={TAG}&limit=2"
    )
    body = tenant.client.get(
        f"{BASE}/{tenant.container}/queries/core/search?schema={TAG}&orderby=-repo:createdDate&limit=2",
        headers=tenant.headers,
    ).json()
    last = body["_embedded"]["results"][-1]
    ms = epoch_micros(parse_datetime(last["repo:createdDate"])) // 1000
    assert body["_links"]["next"]["href"] == (
        f"/{tenant.container}/queries/core/search?start={ms}%2C{last['instanceId']}&schema={TAG}"
        "&orderby=-repo%3AcreatedDate%2CinstanceId&limit=2"
    )


def test_default_limit_is_20_and_a_full_last_page_has_no_next(tenant, tags):
    body = tenant.client.get(
        f"{BASE}/{tenant.container}/instances?schema={TAG}", headers=tenant.headers
    ).json()
    assert body["_embedded"]["count"] == 20 and body["_embedded"]["total"] == 25
    body = tenant.client.get(
        f"{BASE}/{tenant.container}/instances?schema={TAG}&limit=25", headers=tenant.headers
    ).json()
    assert body["_embedded"]["count"] == 25 and "next" not in body["_links"]


def test_a_deleted_item_does_not_break_the_walk(tenant, tags):
    url = f"{BASE}/{tenant.container}/instances?schema={TAG}&limit=5"
    first = tenant.client.get(url, headers=tenant.headers).json()
    cursor_item = first["_embedded"]["results"][-1]["instanceId"]
    deleted = tenant.client.delete(tenant.url(f"/{cursor_item}"), headers=tenant.headers)
    assert deleted.status_code == 202
    rest = walk_all(tenant, BASE + first["_links"]["next"]["href"])
    assert len(rest) == 20
    assert cursor_item not in rest


def walk_all(tenant, url: str) -> list[str]:
    out: list[str] = []
    while url:
        body = tenant.client.get(url, headers=tenant.headers).json()
        out.extend(r["instanceId"] for r in body["_embedded"]["results"])
        url = BASE + body["_links"]["next"]["href"] if "next" in body["_links"] else ""
    return out


@pytest.fixture
def huge_offers(tenant) -> dict[str, str]:
    """instanceId → @id of offers ranked by :data:`HUGE`."""
    made = {}
    for n, priority in enumerate(HUGE):
        receipt = tenant.create(
            "personalized-offer",
            {
                "xdm:name": f"huge {n}",
                "xdm:status": "draft",
                "xdm:rank": {"xdm:priority": priority},
            },
        )
        made[receipt["instanceId"]] = receipt["@id"]
    return made


@pytest.mark.parametrize(
    "order", ["-_instance.xdm:rank.xdm:priority", "_instance.xdm:rank.xdm:priority"]
)
def test_paging_by_a_priority_past_64_bits_gets_each_offer_once(tenant, huge_offers, order):
    url = f"{BASE}/{tenant.container}/instances?schema={OFFER}&limit=2&orderby={quote(order)}"
    seen = walk(tenant, url)
    ids = [item["instanceId"] for item in seen]
    assert len(ids) == len(set(ids)) and set(ids) == set(huge_offers)
    priorities = [item["_instance"]["xdm:rank"]["xdm:priority"] for item in seen]
    assert priorities == sorted(priorities, reverse=order.startswith("-"))


@pytest.mark.parametrize("order", ["-rank.priority", "rank.priority"])
def test_dps_paging_by_a_priority_past_64_bits_gets_each_offer_once(tenant, huge_offers, order):
    dps = Dps(tenant)
    page = dps.list(f"/offers?offer-type=personalized&limit=2&orderby={quote(order)}")
    seen: list[dict] = []
    while True:
        seen += page["results"]
        following = page["_links"].get("next")
        if following is None:
            break
        page = dps.list(following["href"])
    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)) and set(ids) == set(huge_offers.values())
    priorities = [item["rank"]["priority"] for item in seen]
    assert priorities == sorted(priorities, reverse=order.startswith("-"))


#: A free property of placements holding every kind of JSON value, in the order it sorts
#: ascending (docs/api.md, "orderby"): missing and null first (between them by
#: instanceId), then numbers with booleans as 0 and 1, then strings by code point, an
#: object or array among them as its JSON text ("[1]" after "A", "{…}" after "b").
MIXED = [-1, True, 3, "A", [1], "b", {"k": 1}]
PLACEMENT = schema("offer-placement")


@pytest.fixture
def mixed_placements(tenant) -> dict[str, object]:
    """instanceId → the value of ``offerui:v`` (``...`` when missing)."""
    made: dict[str, object] = {}
    for n, value in enumerate([..., None, *reversed(MIXED)]):
        body = {"xdm:name": f"mixed {n}", "xdm:channel": "web", "xdm:componentType": "html"}
        if value is not ...:
            body["offerui:v"] = value
        made[tenant.create("offer-placement", body)["instanceId"]] = value
    return made


@pytest.mark.parametrize("descending", [False, True])
def test_every_kind_of_value_sorts_alike_on_both_backends(tenant, mixed_placements, descending):
    order = ("-" if descending else "") + "_instance.offerui:v"
    url = f"{BASE}/{tenant.container}/instances?schema={PLACEMENT}&limit=2&orderby={quote(order)}"
    seen = [item["instanceId"] for item in walk(tenant, url)]
    assert len(seen) == len(set(seen)) == len(mixed_placements)
    values = [mixed_placements[i] for i in seen]
    lowest = sorted(i for i, v in mixed_placements.items() if v in (None, ...))
    expected = [mixed_placements[i] for i in lowest] + MIXED
    if descending:  # the values reversed, missing and null still ordered by instanceId
        expected = MIXED[::-1] + [mixed_placements[i] for i in lowest]
    assert values == expected


def test_objects_sort_as_their_compact_text_in_the_order_sent_on_both_backends(tenant):
    # jsonb writes the first {"a": 2, "bb": 1} (its keys reordered, with spaces), which
    # sorts before {"a": 3}; as sent, compact, it is {"bb":1,"a":2}, after {"a":3}.
    values = [{"bb": 1, "a": 2}, {"a": 3}, [1, {"z": 0, "y": 1}], [1, {"y": 2}]]
    made = {}
    for n, value in enumerate(values):
        body = {"xdm:name": f"o{n}", "xdm:channel": "web", "xdm:componentType": "html"}
        made[tenant.create("offer-placement", {**body, "offerui:v": value})["instanceId"]] = n
    url = f"{BASE}/{tenant.container}/instances?schema={PLACEMENT}&limit=1"
    url += "&orderby=_instance.offerui:v"
    order = [made[item["instanceId"]] for item in walk(tenant, url)]
    expected = sorted(made.values(), key=lambda n: json.dumps(values[n], separators=(",", ":")))
    assert order == expected == [3, 2, 1, 0]


@pytest.mark.parametrize(
    "order", ["_instance.xdm:rank", "-_instance.xdm:rank", "_instance.xdm:representations"]
)
def test_paging_by_an_object_or_array_gets_each_offer_once(tenant, huge_offers, order):
    url = f"{BASE}/{tenant.container}/instances?schema={OFFER}&limit=2&orderby={quote(order)}"
    ids = [item["instanceId"] for item in walk(tenant, url)]
    assert len(ids) == len(set(ids)) and set(ids) == set(huge_offers)

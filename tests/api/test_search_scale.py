"""How search runs at scale, and that it answers what it answered before (issue 22).

The page tests an index filter either per instance the sort walks (probing) or as a set
built once (materialising), chosen by the count (``storage/search.py``): both must give
the same pages. The index keeps one row per distinct value of an instance and numbers
its rows by document (``storage/search_index.py``): counts stay exact and ``q`` finds
what it found before.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from nextoffer.repository.query import parse_query
from nextoffer.storage import search, search_index
from support import schema
from support.api import HTML

BASE = "/data/core/xcore"
OFFER = schema("personalized-offer")
WORDS = ["gold", "silver", "bronze", "mortgage", "travel", "bonus"]


@pytest.fixture
def library(tenant, placement) -> list[dict]:
    """Thirty offers: statuses, priorities, dates and words in names and contents."""
    made = []
    for n in range(30):
        words = [WORDS[n % 6], WORDS[(n * 5 + 1) % 6]]
        body = {
            "xdm:name": f"Offer {n:02d} {words[0]}",
            "xdm:status": ["approved", "draft", "archived"][n % 3],
            "xdm:rank": {"xdm:priority": n % 10},
            "xdm:selectionConstraint": {
                "xdm:startDate": f"2024-{n % 12 + 1:02d}-01T00:00:00Z",
                "xdm:endDate": "2030-01-01T00:00:00Z",
            },
            "xdm:representations": [
                {
                    "xdm:placement": placement,
                    "xdm:components": [
                        {"@type": HTML, "dc:format": "text/html", "xdm:content": w} for w in words
                    ],
                }
            ],
        }
        tenant.create("personalized-offer", body)
        made.append(body)
    return made


def walk(tenant, params: list[tuple[str, str]], limit: int = 4) -> tuple[list[str], list[int]]:
    """Every name along the ``next`` links, and each page's ``total``."""
    url = f"{BASE}/{tenant.container}/queries/core/search?" + urlencode(
        [("schema", OFFER), ("limit", str(limit)), *params]
    )
    found: list[str] = []
    totals: list[int] = []
    while True:
        response = tenant.client.get(url, headers=tenant.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        found += [r["_instance"]["xdm:name"] for r in body["_embedded"]["results"]]
        totals.append(body["_embedded"]["total"])
        if "next" not in body["_links"]:
            return found, totals
        url = BASE + body["_links"]["next"]["href"]


QUERIES = [
    [],  # no filter: the kept count, minus the items up to the cursor
    [("orderby", "-repo:createdDate")],
    [("orderby", "-xdm:rank.xdm:priority")],  # a body property may be missing: counted
    [("property", "_instance.xdm:status==approved"), ("orderby", "-repo:createdDate")],
    [("property", "_instance.xdm:status==draft")],
    [
        ("property", "_instance.xdm:rank.xdm:priority>=5"),
        ("property", "_instance.xdm:selectionConstraint.xdm:startDate>=2024-06-01T00:00:00Z"),
        ("orderby", "repo:lastModifiedDate"),
    ],
    [("q", "gold")],
    [("q", "gold silver"), ("qop", "AND"), ("orderby", "-repo:createdDate")],
    [("q", "gold mortgage"), ("qop", "OR"), ("property", "_instance.xdm:status!=draft")],
    [("q", "bonus"), ("field", "_instance.xdm:representations")],
    [("q", "bro*"), ("orderby", "-xdm:name")],
]


@pytest.mark.parametrize("params", QUERIES)
def test_probing_and_materialising_give_the_same_pages(tenant, library, monkeypatch, params):
    # Three ways to read a page: the ids read with the count, a walk of the sort order
    # testing each instance, membership in the id sets.
    monkeypatch.setattr(search, "_few", lambda *_: 10**6)
    from_ids = walk(tenant, params)
    monkeypatch.setattr(search, "_few", lambda *_: 0)
    monkeypatch.setattr(search, "_should_probe", lambda *_: True)
    probed = walk(tenant, params)
    monkeypatch.setattr(search, "_should_probe", lambda *_: False)
    in_sets = walk(tenant, params)
    assert from_ids == probed == in_sets
    names, totals = probed
    assert names, "the query should keep something"
    assert len(set(names)) == len(names)  # no item twice along the walk
    assert totals[0] == len(names)  # the first page's total is the whole list
    assert totals == [len(names) - 4 * k for k in range(len(totals))]  # then what remains


def test_the_count_decides_which_way_the_page_is_read():
    # limit × stored < total²: many matches probe, few are read by their ids.
    assert search._few(parse_query([("schema", OFFER)]), stored=100_000) == 1414
    assert search._few(parse_query([("schema", OFFER), ("limit", "1000")]), 10**6) == 5000
    by_date = parse_query([("schema", OFFER), ("orderby", "-repo:createdDate")])
    by_name = parse_query([("schema", OFFER), ("orderby", "xdm:name")])
    assert search._should_probe(by_date, total=33_000, stored=100_000)
    assert not search._should_probe(by_date, total=800, stored=100_000)
    assert not search._should_probe(by_date, total=0, stored=100_000)
    # Sorting by a property of the body reads every instance anyway: never probe.
    assert not search._should_probe(by_name, total=33_000, stored=100_000)


def test_a_value_repeated_in_an_array_counts_once(tenant, placement):
    component = {"@type": HTML, "dc:format": "text/html", "xdm:content": "winter bonus"}
    body = {
        "xdm:name": "Twice",
        "xdm:status": "approved",
        "xdm:representations": [
            {"xdm:placement": placement, "xdm:components": [component, dict(component)]}
        ],
    }
    tenant.create("personalized-offer", body)
    tenant.create("personalized-offer", {**body, "xdm:name": "Again"})
    for params in (
        [("property", "_instance.xdm:representations.xdm:components.dc:format==text/html")],
        [("q", "bonus")],
        [("q", '"winter bonus"'), ("field", "_instance.xdm:representations")],
    ):
        names, totals = walk(tenant, params, limit=1)
        assert sorted(names) == ["Again", "Twice"]
        assert totals == [2, 1]


def test_a_phrase_never_spans_two_strings_and_words_may(tenant, placement):
    tenant.create(
        "personalized-offer",
        {"xdm:name": "Winter", "xdm:status": "approved", "xdm:characteristics": {"a": "bonus"}},
    )
    assert walk(tenant, [("q", '"winter bonus"')])[0] == []
    assert walk(tenant, [("q", "winter bonus"), ("qop", "AND")])[0] == ["Winter"]
    assert walk(tenant, [("q", "winter nothing"), ("qop", "AND")])[0] == []
    assert walk(tenant, [("q", "win* nothing"), ("qop", "OR")])[0] == ["Winter"]


def test_an_instance_with_more_rows_than_the_index_numbers_is_a_413(tenant, monkeypatch):
    monkeypatch.setattr(search_index, "MAX_ROWS", 8)
    body = {"xdm:name": "Wide", "xdm:status": "draft", "xdm:characteristics": {}}
    body["xdm:characteristics"] = {f"k{n}": str(n) for n in range(10)}
    response = tenant.create("personalized-offer", body, expect=413)
    assert "at most 8" in response["detail"]
    assert walk(tenant, [("q", "wide")])[0] == []  # nothing stored half-way

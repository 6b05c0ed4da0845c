"""Every documented list, lookup and empty-list response, reproduced for equivalent data.

Each documented request (the ``self`` link of the documented response) is replayed
against a library holding the documented names and, for id lookups, instances standing in
for the documented ids. The answer must have the same keys at every level and links in
the same formats (spec offer-api-xcore §4.4, §5.1).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest

from nextoffer.ids import epoch_micros, parse_datetime
from support import EXAMPLES, example
from support.api import HTML, WEB

RESULTS = "https://ns.adobe.com/experience/xcore/hal/results"
BASE = "/data/core/xcore"
DOCUMENTED = [
    *sorted(
        p.name
        for p in EXAMPLES.glob("xcore-*.response.json")
        if re.search(r"-(list|lookup)\.response\.json$", p.name) and "containers" not in p.name
    ),
    "xcore-generic-list-empty.response.json",
]
TYPE_OF = {
    "placement": "offer-placement",
    "tag": "tag",
    "decision-rule": "eligibility-rule",
    "personalized-offer": "personalized-offer",
    "fallback": "fallback-offer",
    "collection": "offer-filter",
    "decision": "offer-activity",
}
#: Optional per-result members (spec §4.4): Adobe shows sandboxName on some results only.
OPTIONAL = {"sandboxName"}


def _names_in(href: str) -> list[str]:
    return [unquote(m) for m in re.findall(r"[?&]name=([^&]+)", href)]


@pytest.fixture
def library(tenant) -> dict[str, list[dict[str, Any]]]:
    """Three instances of every type, named after every documented lookup name."""
    names = [n for f in DOCUMENTED for n in _names_in(example(f)["_links"]["self"]["href"])]
    made: dict[str, list[dict[str, Any]]] = {}

    def create(type_name: str, body: dict[str, Any]) -> dict[str, Any]:
        receipt = tenant.create(type_name, body)
        made.setdefault(type_name, []).append(receipt)
        return receipt

    placements = [
        create("offer-placement", {"xdm:name": n, "xdm:channel": WEB, "xdm:componentType": HTML})
        for n in ["Sales and Promotions Placement", "P2", "P3"]
    ]
    reps = [
        {"xdm:placement": p["@id"], "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
        for p in placements
    ]
    tags = [create("tag", {"xdm:name": n}) for n in ["Holiday sales and promotions", "T2", "T3"]]
    for n in ["Sales rule", "R2", "R3"]:
        create(
            "eligibility-rule",
            {
                "xdm:name": n,
                "xdm:condition": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": "true"},
            },
        )
    for n in ["Discount offer", "O2", "O3"]:
        create(
            "personalized-offer",
            {"xdm:name": n, "xdm:status": "approved", "xdm:representations": reps[:1]},
        )
    fallbacks = [
        create(
            "fallback-offer", {"xdm:name": n, "xdm:status": "approved", "xdm:representations": reps}
        )
        for n in ["F1", "F2", "F3"]
    ]
    filters = [
        create(
            "offer-filter",
            {"xdm:name": n, "xdm:filterType": "anyTags", "xdm:ids": [tags[0]["@id"]]},
        )
        for n in ["C1", "C2", "C3"]
    ]
    for n in ["A1", "A2", "A3"]:
        create(
            "offer-activity",
            {
                "xdm:name": n,
                "xdm:status": "draft",
                "xdm:criteria": [
                    {
                        "xdm:placements": [placements[0]["@id"]],
                        "xdm:optionSelection": {"xdm:filter": filters[0]["@id"]},
                    }
                ],
                "xdm:fallback": fallbacks[0]["@id"],
            },
        )
    assert set(names) == {
        "Sales and Promotions Placement",
        "Holiday sales and promotions",
        "Sales rule",
        "Discount offer",
    }
    return made


def _replay_href(documented: dict[str, Any], tenant, library, file: str) -> str:
    href = documented["_links"]["self"]["href"]
    href = href.replace(documented["containerId"], tenant.container)
    if file == "xcore-generic-list-empty.response.json":
        return href  # an id no instance has
    type_name = TYPE_OF[re.match(r"xcore-(.+)-(list|lookup)\.response\.json", file).group(1)]
    for at_id in re.findall(r"xcore:[a-z-]+:[0-9a-f]+", href):
        href = href.replace(at_id, library[type_name][0]["@id"])
    return href


def _same_keys(ours: Any, documented: Any, where: str) -> None:
    if isinstance(documented, dict) and where.endswith("_instance"):
        return  # the instance itself is the equivalent data, not the same data
    if isinstance(documented, dict):
        assert isinstance(ours, dict), where
        expected = set(documented)
        if where.endswith("results[]"):
            assert expected - OPTIONAL <= set(ours) <= expected | OPTIONAL, where
        else:
            assert set(ours) == expected, (where, sorted(ours), sorted(expected))
        for key in set(ours) & expected:
            _same_keys(ours[key], documented[key], f"{where}.{key}")
    elif isinstance(documented, list) and documented and ours:
        for item in ours:
            _same_keys(item, documented[0], f"{where}[]")
    else:
        assert type(ours) is type(documented) or {type(ours), type(documented)} <= {int, float}, (
            where
        )


@pytest.mark.parametrize("file", DOCUMENTED)
def test_documented_results_page_is_reproduced(tenant, library, file):
    documented = example(file)
    href = _replay_href(documented, tenant, library, file)
    response = tenant.client.get(BASE + href, headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert (
        response.headers["content-type"]
        == f'application/vnd.adobe.platform.xcore.hal+json; schema="{RESULTS}"'
    )
    ours = response.json()
    _same_keys(ours, documented, "")
    assert ours["containerId"] == tenant.container
    assert ours["schemaNs"] == re.search(r"schema=([^&]+)", href).group(1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ours["requestTime"])
    assert ours["_links"]["self"] == {"href": href, "@type": RESULTS}
    embedded = ours["_embedded"]
    assert embedded["count"] == len(embedded["results"])
    for result in embedded["results"]:
        versioned = result["schemas"][0]
        assert result["_links"]["self"] == {
            "name": f"{versioned}#{result['instanceId']}",
            "href": f"/{tenant.container}/instances/{result['instanceId']}",
            "@type": versioned,
        }
        assert ("_score" in result) == ("/instances?" in href)
    if "next" in documented["_links"]:
        # Same format: the documented next link with our cursor in place of theirs.
        last = embedded["results"][-1]
        doc_next = documented["_links"]["next"]["href"].replace(
            documented["containerId"], tenant.container
        )
        doc_start = re.search(r"start=([^&]+)", doc_next).group(1)
        if "%2C" in doc_start:  # <createdDate in epoch ms>,<instanceId>
            ms = epoch_micros(parse_datetime(last["repo:createdDate"])) // 1000
            ours_start = f"{ms}%2C{last['instanceId']}"
        else:
            ours_start = last["instanceId"]
        assert ours["_links"]["next"] == {
            "href": doc_next.replace(doc_start, ours_start),
            "@type": RESULTS,
        }
        assert embedded["total"] > embedded["count"]
    else:
        assert embedded["total"] == embedded["count"]


def test_empty_list_has_no_results_and_no_next(tenant, library):
    documented = example("xcore-generic-list-empty.response.json")
    href = _replay_href(documented, tenant, library, "xcore-generic-list-empty.response.json")
    body = tenant.client.get(BASE + href, headers=tenant.headers).json()
    assert body["_embedded"] == {"results": [], "total": 0, "count": 0}
    assert list(body["_links"]) == ["self"]

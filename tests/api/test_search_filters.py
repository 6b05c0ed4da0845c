"""Filters, wildcards, regular expressions, full-text search, bad input and tenancy."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from support import schema
from support.api import HTML, make_tenant

BASE = "/data/core/xcore"
OFFER = schema("personalized-offer")
PROBLEM = "application/problem+json"


@pytest.fixture
def offers(tenant, placement) -> dict[str, dict]:
    """Five offers with strings, numbers, dates, arrays and nested objects to filter on."""
    tag_a = tenant.create("tag", {"xdm:name": "Gold"})["@id"]
    tag_b = tenant.create("tag", {"xdm:name": "Silver"})["@id"]
    rep = [
        {
            "xdm:placement": placement,
            "xdm:components": [
                {
                    "@type": HTML,
                    "dc:format": "text/html",
                    "xdm:content": "<p>Save big on Checking</p>",
                }
            ],
        }
    ]
    specs = {
        "alpha": (
            "Alpha Checking Offer",
            "approved",
            1,
            "2020-01-01T00:00:00Z",
            [tag_a],
            "Spring sale on checking",
        ),
        "beta": (
            "Beta savings offer",
            "draft",
            5,
            "2020-06-01T12:00:00.000Z",
            [tag_a, tag_b],
            "Summer promotions",
        ),
        "gamma": (
            "Gamma Card",
            "approved",
            10,
            "2021-01-01T00:00:00+01:00",
            [tag_b],
            "Café crème deals",
        ),
        "delta": (
            "delta card",
            "archived",
            10,
            "2022-03-04T05:06:07.123456Z",
            [],
            "Checking, savings & more",
        ),
        "epsilon": ("Epsilon?", "draft", 0, None, [], None),
    }
    made = {}
    for key, (name, status, priority, start, tags, description) in specs.items():
        body = {
            "xdm:name": name,
            "xdm:status": status,
            "xdm:rank": {"xdm:priority": priority},
            "xdm:representations": rep,
            "xdm:tags": tags,
        }
        if start:
            body["xdm:selectionConstraint"] = {
                "xdm:startDate": start,
                "xdm:endDate": "2030-01-01T00:00:00Z",
            }
        if description:
            body["xdm:characteristics"] = {"description": description}
        made[key] = tenant.create("personalized-offer", body)
    made["tags"] = {"gold": tag_a, "silver": tag_b}
    return made


def names(
    tenant, params: list[tuple[str, str]], endpoint: str = "queries/core/search"
) -> list[str]:
    query = urlencode([("schema", OFFER), *params])
    response = tenant.client.get(
        f"{BASE}/{tenant.container}/{endpoint}?{query}", headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["_embedded"]["count"] == body["_embedded"]["total"]
    return sorted(r["_instance"]["xdm:name"] for r in body["_embedded"]["results"])


def problem(
    tenant, params: list[tuple[str, str]], pointer: str, endpoint: str = "instances"
) -> dict:
    query = urlencode(params)
    response = tenant.client.get(
        f"{BASE}/{tenant.container}/{endpoint}?{query}", headers=tenant.headers
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["pointer"] == pointer, body
    return body


ALL = ["Alpha Checking Offer", "Beta savings offer", "Epsilon?", "Gamma Card", "delta card"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("_instance.xdm:status==approved", ["Alpha Checking Offer", "Gamma Card"]),
        ("_instance.xdm:status!=approved", ["Beta savings offer", "Epsilon?", "delta card"]),
        ("_instance.xdm:status==Approved", []),  # case-sensitive
        ("_instance.xdm:name<Beta", ["Alpha Checking Offer"]),
        ("_instance.xdm:name>=Gamma Card", ["Gamma Card", "delta card"]),  # code-point order
        ("_instance.xdm:rank.xdm:priority==10", ["Gamma Card", "delta card"]),
        ("_instance.xdm:rank.xdm:priority==10.0", ["Gamma Card", "delta card"]),
        (
            "_instance.xdm:rank.xdm:priority!=10",
            ["Alpha Checking Offer", "Beta savings offer", "Epsilon?"],
        ),
        ("_instance.xdm:rank.xdm:priority<5", ["Alpha Checking Offer", "Epsilon?"]),
        (
            "_instance.xdm:rank.xdm:priority<=5",
            ["Alpha Checking Offer", "Beta savings offer", "Epsilon?"],
        ),
        ("_instance.xdm:rank.xdm:priority>5", ["Gamma Card", "delta card"]),
        ("_instance.xdm:rank.xdm:priority>=0", ALL),
        # Dates compare as instants whatever their offset or precision.
        (
            "_instance.xdm:selectionConstraint.xdm:startDate>=2020-06-01T12:00:00Z",
            ["Beta savings offer", "Gamma Card", "delta card"],
        ),
        ("_instance.xdm:selectionConstraint.xdm:startDate==2020-12-31T23:00:00Z", ["Gamma Card"]),
        (
            "_instance.xdm:selectionConstraint.xdm:startDate<2020-06-01T12:00:00.000001Z",
            ["Alpha Checking Offer", "Beta savings offer"],
        ),
        # Arrays: any element.
        ("_instance.xdm:tags==TAG_GOLD", ["Alpha Checking Offer", "Beta savings offer"]),
        ("_instance.xdm:tags!=TAG_GOLD", ["Gamma Card"]),
        # A bare path: the property is present (even as an empty array).
        (
            "_instance.xdm:selectionConstraint",
            ["Alpha Checking Offer", "Beta savings offer", "Gamma Card", "delta card"],
        ),
        (
            "_instance.xdm:characteristics.description",
            ["Alpha Checking Offer", "Beta savings offer", "Gamma Card", "delta card"],
        ),
        ("_instance.xdm:tags", ALL),
        ("_instance.nope", []),
        # Paths through arrays of objects.
        ("_instance.xdm:representations.xdm:components.dc:format==text/html", ALL),
    ],
)
def test_property_operators(tenant, offers, expression, expected):
    expression = expression.replace("TAG_GOLD", offers["tags"]["gold"])
    assert names(tenant, [("property", expression)]) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("alpha.*", ["Alpha Checking Offer"]),  # case-insensitive
        ("checking", []),  # must match the whole value
        (".*checking.*", ["Alpha Checking Offer"]),
        (".*CARD", ["Gamma Card", "delta card"]),
        ("[a-z]+ card", ["Gamma Card", "delta card"]),
        ("epsilon\\?", ["Epsilon?"]),
        # Read alike by Python's re (SQLite) and PostgreSQL's engine: flags in effect anyway,
        # word boundaries (a backspace to PostgreSQL) and two-digit hex escapes.
        ("(?i)alpha.*", ["Alpha Checking Offer"]),
        ("(?is).*\\bcard", ["Gamma Card", "delta card"]),
        ("alpha\\b.*", ["Alpha Checking Offer"]),
        ("alpha\\B.*", []),
        ("\\x42eta.*", ["Beta savings offer"]),
        ("[\\x61-\\x64]elta card", ["delta card"]),
    ],
)
def test_regular_expressions_match_the_whole_value_ignoring_case(tenant, offers, pattern, expected):
    assert names(tenant, [("property", f"_instance.xdm:name~{pattern}")]) == expected


def test_several_property_filters_are_anded(tenant, offers):
    params = [
        ("property", "_instance.xdm:status==approved"),
        ("property", "_instance.xdm:rank.xdm:priority>1"),
    ]
    assert names(tenant, params) == ["Gamma Card"]


def test_envelope_properties(tenant, offers):
    alpha = offers["alpha"]
    assert names(tenant, [("property", f"instanceId=={alpha['instanceId']}")]) == [
        "Alpha Checking Offer"
    ]
    assert names(tenant, [("property", f"repo:createdDate>={alpha['repo:createdDate']}")]) == ALL
    assert names(tenant, [("property", f"repo:createdDate<{alpha['repo:createdDate']}")]) == []
    assert names(tenant, [("property", "repo:lastModifiedDate>=2019-02-23T16:30:00.000Z")]) == ALL
    assert names(tenant, [("property", "repo:etag==1")]) == ALL
    assert names(tenant, [("property", "repo:etag>1")]) == []
    assert names(tenant, [("property", f"repo:createdBy=={alpha['repo:createdBy']}")]) == ALL
    assert names(tenant, [("property", "repo:createdByClientId~.*")]) == ALL


def test_updates_and_deletes_keep_the_index_in_step(tenant, offers):
    import json

    from support import PATCH_TYPE

    alpha = offers["alpha"]["instanceId"]
    response = tenant.client.patch(
        tenant.url(f"/{alpha}"),
        content=json.dumps(
            [{"op": "replace", "path": "/_instance/xdm:status", "value": "archived"}]
        ),
        headers={**tenant.headers, "Content-Type": PATCH_TYPE.format(schema=OFFER)},
    )
    assert response.status_code == 200, response.text
    assert names(tenant, [("property", "_instance.xdm:status==archived")]) == [
        "Alpha Checking Offer",
        "delta card",
    ]
    assert names(tenant, [("property", "repo:etag==2")]) == ["Alpha Checking Offer"]
    tenant.client.delete(tenant.url(f"/{offers['delta']['instanceId']}"), headers=tenant.headers)
    assert names(tenant, [("property", "_instance.xdm:status==archived")]) == [
        "Alpha Checking Offer"
    ]
    assert names(tenant, [("q", "delta")]) == []


def test_id_lookup(tenant, offers):
    ids = [("id", offers["alpha"]["@id"]), ("id", offers["gamma"]["@id"])]
    assert names(tenant, ids, "instances") == ["Alpha Checking Offer", "Gamma Card"]
    assert names(tenant, [("id", "xcore:personalized-offer:0")], "instances") == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Gamma Card", ["Gamma Card"]),
        ("gamma card", []),  # exact, with capitalisation
        ("*card", ["delta card"]),
        ("*Card", ["Gamma Card"]),
        ("?amma*", ["Gamma Card"]),
        ("*Offer", ["Alpha Checking Offer"]),
        ("Epsilon?", ["Epsilon?"]),  # ? is one character
        ("Epsilon\\?", ["Epsilon?"]),  # an escaped wildcard is itself
        ("Epsilon\\*", []),
        ("*", ALL),
        ("[A]*", []),  # brackets are plain characters
    ],
)
def test_name_matches_exactly_with_wildcards(tenant, offers, name, expected):
    assert names(tenant, [("name", name)], "instances") == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            [("q", "checking")],
            ["Alpha Checking Offer", "Beta savings offer", "Epsilon?", "Gamma Card", "delta card"],
        ),
        ([("q", "checking"), ("field", "_instance.xdm:name")], ["Alpha Checking Offer"]),
        (
            [("q", "checking"), ("field", "_instance.xdm:characteristics")],
            ["Alpha Checking Offer", "delta card"],
        ),
        ([("q", "card savings")], ["Beta savings offer", "Gamma Card", "delta card"]),
        (
            [("q", "card savings"), ("qop", "OR")],
            ["Beta savings offer", "Gamma Card", "delta card"],
        ),
        ([("q", "card savings"), ("qop", "AND")], ["delta card"]),
        ([("q", "card savings"), ("qop", "and"), ("field", "_instance.xdm:name")], []),
        ([("q", "cafe creme")], ["Gamma Card"]),  # accents folded
        ([("q", "CAFÉ")], ["Gamma Card"]),
        ([("q", '"summer promotions"')], ["Beta savings offer"]),
        ([("q", '"promotions summer"')], []),  # a phrase keeps its order
        ([("q", "promo*")], ["Beta savings offer"]),
        (
            [("q", "sav* gamma"), ("qop", "OR"), ("field", "_instance.xdm:name")],
            ["Beta savings offer", "Gamma Card"],
        ),
        ([("q", "savings\\&")], ["Beta savings offer", "delta card"]),
        (
            [("q", "checking"), ("property", "_instance.xdm:status==draft")],
            ["Beta savings offer", "Epsilon?"],
        ),
        (
            [
                ("q", "checking"),
                ("field", "_instance.xdm:name,_instance.xdm:characteristics.description"),
            ],
            ["Alpha Checking Offer", "delta card"],
        ),
    ],
)
def test_full_text_search(tenant, offers, params, expected):
    assert names(tenant, params) == expected


def test_schema_versions_and_quoting(tenant, offers):
    for text in [
        OFFER,
        schema("personalized-offer", "0.1"),
        schema("personalized-offer", None),
        f'"{OFFER}"',
    ]:
        query = urlencode([("schema", text), ("limit", "1")])
        body = tenant.client.get(
            f"{BASE}/{tenant.container}/instances?{query}", headers=tenant.headers
        ).json()
        assert body["_embedded"]["total"] == 5
        assert body["schemaNs"] == text
    other = urlencode([("schema", schema("tag"))])
    body = tenant.client.get(
        f"{BASE}/{tenant.container}/instances?{other}", headers=tenant.headers
    ).json()
    assert body["_embedded"]["total"] == 2


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ([], "schema"),
        ([("schema", "https://example.com/nope")], "schema"),
        ([("schema", schema("tag", "9.9"))], "schema"),
        ([("schema", OFFER), ("property", "_instance.xdm:name=x")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name<>x")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name===x")], "property"),
        ([("schema", OFFER), ("property", "xdm:name==x")], "property"),
        ([("schema", OFFER), ("property", "repo:createdDate>=yesterday")], "property"),
        ([("schema", OFFER), ("property", "repo:etag==one")], "property"),
        ([("schema", OFFER), ("property", "repo:etag~1")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name~(a+)+")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name~(a|aa)*b")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name~[unclosed")], "property"),
        # What Python's re and PostgreSQL's engine read differently.
        ([("schema", OFFER), ("property", "_instance.xdm:name~(?P<x>a).*")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name~[[:alpha:]]+")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name~(?i:a).*")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name~(?#note)a.*")], "property"),
        ([("schema", OFFER), ("property", "_instance.xdm:name~[\\N{DIGIT ONE}]")], "property"),
        (
            [("schema", OFFER), ("property", "_instance.xdm:name~\\N{LATIN SMALL LETTER A}.*")],
            "property",
        ),
        ([("schema", OFFER), ("property", "_instance.xdm:name~" + "a" * 300)], "property"),
        ([("schema", OFFER), ("id", "xcore:tag:1"), ("name", "x")], "name"),
        ([("schema", OFFER), ("limit", "0")], "limit"),
        ([("schema", OFFER), ("limit", "-1")], "limit"),
        ([("schema", OFFER), ("limit", "1001")], "limit"),
        ([("schema", OFFER), ("limit", "ten")], "limit"),
        ([("schema", OFFER), ("start", "a,b")], "start"),
        ([("schema", OFFER), ("orderby", "-repo:createdDate"), ("start", "yesterday,x")], "start"),
        ([("schema", OFFER), ("orderby", "_instance.xdm:name"), ("start", "{bad,x")], "start"),
        ([("schema", OFFER), ("orderby", "title")], "orderby"),
        ([("schema", OFFER), ("orderby", "repo:name")], "orderby"),
        ([("schema", OFFER), ("orderby", ",")], "orderby"),
        ([("schema", OFFER), ("orderby", "instanceId"), ("orderBy", "instanceId")], "orderby"),
        ([("schema", OFFER), ("q", '"open')], "q"),
        ([("schema", OFFER), ("q", "&& ||")], "q"),
        ([("schema", OFFER), ("q", "x"), ("qop", "XOR")], "qop"),
        ([("schema", OFFER), ("q", "x"), ("field", "repo:createdBy")], "field"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(tenant, offers, params, pointer):
    problem(tenant, params, pointer)
    problem(tenant, params, pointer, endpoint="queries/core/search")


#: Every list and search parameter, empty, as Adobe's Postman collections send them.
EMPTY = [
    (name, "")
    for name in ("q", "qop", "field", "id", "name", "property", "orderby", "start", "limit")
]


@pytest.mark.parametrize("endpoint", ["instances", "queries/core/search"])
def test_an_empty_parameter_is_an_absent_one(tenant, offers, endpoint):
    assert names(tenant, EMPTY, endpoint) == ALL
    beta = offers["beta"]["@id"]
    assert names(tenant, [*EMPTY, ("id", beta)], endpoint) == ["Beta savings offer"]
    assert names(tenant, [("id", ""), ("name", "Gamma Card")], endpoint) == ["Gamma Card"]
    drafts = [("property", ""), ("property", "_instance.xdm:status==draft")]
    assert names(tenant, drafts, endpoint) == ["Beta savings offer", "Epsilon?"]
    assert names(tenant, [("q", "card"), ("qop", ""), ("field", "")], endpoint) == [
        "Gamma Card",
        "delta card",
    ]
    page = tenant.client.get(
        f"{BASE}/{tenant.container}/{endpoint}?{urlencode([('schema', OFFER), *EMPTY])}",
        headers=tenant.headers,
    ).json()
    # No order named: the default one (instanceId), on one page of the default size.
    ids = [r["instanceId"] for r in page["_embedded"]["results"]]
    assert ids == sorted(ids) and len(ids) == 5 and "next" not in page["_links"]


BY_NAME_DESCENDING = sorted(ALL, reverse=True)  # code-point order: "delta card" first
BY_PRIORITY_THEN_NAME = [
    "Epsilon?",
    "Alpha Checking Offer",
    "Beta savings offer",
    "delta card",
    "Gamma Card",
]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("-xdm:name", BY_NAME_DESCENDING),
        ("-_instance.xdm:name", BY_NAME_DESCENDING),
        ("xdm:rank.xdm:priority,-xdm:name", BY_PRIORITY_THEN_NAME),
        ("_instance.xdm:rank.xdm:priority,-_instance.xdm:name", BY_PRIORITY_THEN_NAME),
    ],
)
def test_orderby_names_an_instance_property_bare_or_under_instance(tenant, offers, order, expected):
    query = urlencode([("schema", OFFER), ("orderby", order), ("limit", "2")])
    url = f"{BASE}/{tenant.container}/queries/core/search?{query}"
    got = []
    while url:  # across pages: the cursor of a bare key works like any other
        body = tenant.client.get(url, headers=tenant.headers).json()
        got += [r["_instance"]["xdm:name"] for r in body["_embedded"]["results"]]
        url = BASE + body["_links"]["next"]["href"] if "next" in body["_links"] else ""
    assert got == expected


def test_another_tenants_container_is_404_on_both_endpoints(client, db_url, tenant, offers):
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    query = urlencode([("schema", OFFER)])
    for endpoint in ("instances", "queries/core/search"):
        response = client.get(
            f"{BASE}/{tenant.container}/{endpoint}?{query}", headers=other.headers
        )
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == PROBLEM
        own = client.get(f"{BASE}/{other.container}/{endpoint}?{query}", headers=other.headers)
        assert own.status_code == 200 and own.json()["_embedded"]["total"] == 0


def test_home_document_filters_containers_by_property_and_product(tenant):
    def containers(query: str) -> int:
        response = tenant.client.get(f"{BASE}/?{query}", headers=tenant.headers)
        assert response.status_code == 200, response.text
        return len(response.json()["_embedded"]["https://ns.adobe.com/experience/xcore/container"])

    assert containers("product=acp&property=_instance.containerType==decisioning") == 1
    assert containers("property=_instance.containerType==other") == 0
    assert containers("property=_instance.containerType~DECISION.*") == 1
    assert containers("property=_instance.containerType") == 1
    assert containers("property=repo:createdDate>=2000-01-01T00:00:00Z") == 1
    assert containers("product=nope") == 0
    # Empty parameters are absent ones (Adobe's Postman collection sends all four).
    assert containers("product=&start=&limit=&property=") == 1
    assert containers("product=&property=_instance.containerType==decisioning") == 1
    response = tenant.client.get(
        f"{BASE}/?property=_instance.containerType=decisioning", headers=tenant.headers
    )
    assert response.status_code == 400 and response.json()["pointer"] == "property"

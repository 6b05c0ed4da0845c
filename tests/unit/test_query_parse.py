"""The query-parameter grammar of list and search, without a database."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextoffer.errors import BadRequest
from nextoffer.repository.query import (
    DEFAULT_LIMIT,
    INSTANCE_ID,
    Kind,
    Op,
    SortKey,
    TermKind,
    format_cursor,
    matches,
    parse_cursor,
    parse_filter,
    parse_order,
    parse_query,
    parse_text,
    tokens,
)

SCHEMA = "https://ns.adobe.com/experience/offer-management/tag;version=0.1"


def query(*pairs: tuple[str, str]):
    return parse_query([("schema", SCHEMA), *pairs])


def test_defaults():
    q = query()
    assert (
        q.limit == DEFAULT_LIMIT and q.order == (SortKey(INSTANCE_ID),) and not q.ordered_by_client
    )
    assert q.filters == () and q.text is None and q.start is None


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [
        ("_instance.a==b", Op.EQ, "b"),
        ("_instance.a!=b", Op.NE, "b"),
        ("_instance.a<b", Op.LT, "b"),
        ("_instance.a<=b", Op.LE, "b"),
        ("_instance.a>b", Op.GT, "b"),
        ("_instance.a>=b", Op.GE, "b"),
        ("_instance.a~b.*", Op.MATCH, "b.*"),
        ("_instance.a==", Op.EQ, ""),
        ("_instance.a==x<y", Op.EQ, "x<y"),
        (" _instance.a ==b c", Op.EQ, "b c"),
    ],
)
def test_operators(text, op, value):
    flt = parse_filter(text)
    assert flt.op is op and flt.literal is not None and flt.literal.text == value
    assert flt.path.parts == ("a",)


def test_literal_reads_as_number_and_instant():
    flt = parse_filter("_instance.a>=2020-01-01T00:00:00+01:00")
    assert flt.literal.instant_us == 1577833200000000 and flt.literal.number is None
    flt = parse_filter("_instance.a<-1.5e2")
    assert flt.literal.number == -150.0
    flt = parse_filter("repo:createdDate>1603395515489")  # epoch ms, as in cursors
    assert flt.literal.instant_us == 1603395515489000


def test_bare_path_is_exists():
    flt = parse_filter("_instance.xdm:rank.xdm:priority")
    assert flt.op is Op.EXISTS and flt.path.dotted == "xdm:rank.xdm:priority"


@pytest.mark.parametrize(
    "text",
    [
        "_instance.a=b",
        "_instance.a<>b",
        "_instance.a===b",
        "_instance.a!==b",
        "_instance.a=<b",
        "xdm:name==a",
        "_instance",
        "_instance..a==b",
        '_instance.a"b==c',
        "repo:etag==x",
        "repo:createdDate==x",
        "repo:createdDate~x",
        "_instance.a~(x+)+",
        "_instance.a~(",
    ],
)
def test_bad_filters(text):
    with pytest.raises(BadRequest) as info:
        parse_filter(text)
    assert info.value.pointer == "property"


def test_order_appends_instance_id_and_reads_plus_as_space():
    assert [k.text() for k in parse_order("-repo:createdDate")] == [
        "-repo:createdDate",
        "instanceId",
    ]
    assert [k.text() for k in parse_order(" repo:etag,-instanceId")] == ["repo:etag", "-instanceId"]
    assert [k.text() for k in parse_order("+_instance.xdm:name")] == [
        "_instance.xdm:name",
        "instanceId",
    ]
    assert [k.text() for k in parse_order("instanceId,repo:etag")] == ["instanceId"]
    for bad in ["", "a", "title", "repo:name", ":x", "repo:etag,repo:etag", ","]:
        with pytest.raises(BadRequest):
            parse_order(bad)


def test_order_names_an_instance_property_by_its_bare_name():
    assert [k.text() for k in parse_order("-xdm:name,xdm:rank.xdm:priority")] == [
        "-_instance.xdm:name",
        "_instance.xdm:rank.xdm:priority",
        "instanceId",
    ]
    with pytest.raises(BadRequest):
        parse_order("xdm:name,_instance.xdm:name")  # the same key twice


def test_an_empty_parameter_is_an_absent_one():
    empty = query(
        *((name, "") for name in ("id", "name", "property", "orderby", "start")),
        ("limit", ""),
        ("q", ""),
        ("qop", ""),
        ("field", ""),
    )
    assert empty == query()


def test_orderby_in_either_spelling():
    assert query(("orderBy", "-repo:etag")).order[0].descending
    with pytest.raises(BadRequest):
        query(("orderBy", "repo:etag"), ("orderby", "repo:etag"))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200)
@given(name=scalars, ms=st.integers(0, 2**45), who=st.text(max_size=20), iid=st.uuids())
def test_cursor_round_trips(name, ms, who, iid):
    order = parse_order("_instance.xdm:name,-repo:createdDate,repo:createdBy")
    values = (name, ms, who, str(iid))
    assert parse_cursor(format_cursor(order, values), order) == values


def test_cursor_errors_name_start():
    order = parse_order("-repo:createdDate")
    for bad in ["1", "x,y", "1,2,3"]:
        with pytest.raises(BadRequest) as info:
            parse_cursor(bad, order)
        assert info.value.pointer == "start"


def test_text_query_terms():
    terms = parse_text('Summer  "big sale" promo* check-in \\"quoted\\" café')
    assert [(t.kind, t.tokens) for t in terms] == [
        (TermKind.WORD, ("summer",)),
        (TermKind.PHRASE, ("big", "sale")),
        (TermKind.PREFIX, ("promo",)),
        (TermKind.PHRASE, ("check", "in")),
        (TermKind.WORD, ("quoted",)),
        (TermKind.WORD, ("cafe",)),
    ]
    assert tokens("Ünïcode_Wörds 42") == ["unicode", "words", "42"]
    for bad in ['"open', "&& ||", "x" * 2000]:
        with pytest.raises(BadRequest):
            parse_text(bad)


def test_full_query():
    q = query(
        ("property", "_instance.xdm:status==approved"),
        ("id", "xcore:tag:1"),
        ("id", "xcore:tag:1"),
        ("limit", "5"),
        ("q", "x y"),
        ("qop", "and"),
        ("field", "_instance.xdm:name,_instance.b"),
        ("orderby", "-repo:createdDate"),
        ("start", "1603395515489,abc"),
        ("unknown", "ignored"),
    )
    assert q.ids == ("xcore:tag:1",) and q.limit == 5 and q.text.require_all
    assert [f.text for f in q.text.fields] == ["_instance.xdm:name", "_instance.b"]
    assert q.start == (1603395515489, "abc") and q.ordered_by_client
    assert q.order_text() == "-repo:createdDate,instanceId"


def test_name_wildcards_and_escapes():
    assert query(("name", "a*")).name_wildcard
    q = query(("name", "a\\*"))
    assert not q.name_wildcard and q.name == "a*"


def test_matches_on_a_document():
    doc = {
        "repo:etag": 3,
        "repo:createdDate": "2020-01-01T00:00:00.000000Z",
        "_instance": {"a": [{"b": 1}, {"b": "x"}], "c": None, "d": []},
    }
    assert matches(parse_filter("_instance.a.b==1"), doc)
    assert matches(parse_filter("_instance.a.b==x"), doc)
    assert matches(parse_filter("_instance.a.b~X"), doc)
    assert not matches(parse_filter("_instance.a.b!=x"), doc)
    assert matches(parse_filter("_instance.c"), doc) and matches(parse_filter("_instance.d"), doc)
    assert not matches(parse_filter("_instance.c==null"), doc)
    assert matches(parse_filter("repo:etag>=3"), doc)
    assert matches(parse_filter("repo:createdDate<2020-01-01T00:00:00.000001Z"), doc)
    assert parse_filter("repo:createdDate").path.kind is Kind.DATE

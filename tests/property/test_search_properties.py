"""Random libraries, random filters: SQL answers what a plain-Python reference answers.

The reference below is written from the documented semantics (docs/api.md, "Search and
listing"), independently of ``nextoffer.repository.query.matches``.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextoffer.errors import BadRequest
from nextoffer.repository.objects import TAG
from nextoffer.repository.query import parse_query
from nextoffer.repository.records import Audit, InstanceRecord
from nextoffer.storage import search
from nextoffer.storage.search_postgres import dialect_for
from nextoffer.storage.store import Store
from support.backends import fresh_database

KEYS = ["a", "xdm:c"]
WORDS = ["red", "Red", "blue", "green", "b", "10", "2", "x y", "Ça", "ca"]
DATES = ["2020-01-01T00:00:00Z", "2020-01-01T01:00:00+01:00", "2021-06-01T12:00:00.5Z"]
NUMBERS = [0, 1, 2, 10, -3, 2.5]
PATTERNS = ["red", "r.*", ".*e.*", "[a-c]+", "ca", "x y", "2.*", "\\d+"]
OPS = ["==", "!=", "<", "<=", ">", ">=", "~", ""]

scalar = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(DATES),
    st.sampled_from(NUMBERS),
    st.booleans(),
    st.none(),
)
value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
body = st.dictionaries(st.sampled_from(KEYS), value, min_size=1, max_size=2)
path = st.one_of(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=1),
    st.lists(st.sampled_from(KEYS), min_size=2, max_size=2),
)
literal = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(DATES),
    st.sampled_from([str(n) for n in NUMBERS]),
    st.sampled_from(["true", "false", "null", "2020-01-01T00:30:00+00:30"]),
)


@st.composite
def a_filter(draw: Any) -> tuple[list[str], str, str]:
    op = draw(st.sampled_from(OPS))
    text = draw(st.sampled_from(PATTERNS)) if op == "~" else ("" if op == "" else draw(literal))
    return draw(path), op, text


# -- the reference -----------------------------------------------------------------


def values_at(node: Any, parts: list[str]) -> list[Any] | None:
    """Every value at ``parts`` (arrays flattened), or None when the property is absent."""
    if not parts:
        return flatten_arrays(node)  # present, even as an empty array
    if isinstance(node, list):
        found = [values_at(item, parts) for item in node]
        hits = [v for f in found if f is not None for v in f]
        return hits if any(f is not None for f in found) else None
    if isinstance(node, dict) and parts[0] in node:
        return values_at(node[parts[0]], parts[1:])
    return None


def flatten_arrays(node: Any) -> list[Any]:
    if isinstance(node, list):
        return [v for item in node for v in flatten_arrays(item)]
    return [node]


def instant(text: str) -> float | None:
    if len(text) < 20 or text[10] != "T":
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def number(text: str) -> float | None:
    return float(text) if re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?", text) else None


def compare(op: str, a: Any, b: Any) -> bool:
    return {"==": a == b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def one(op: str, text: str, v: Any) -> bool:
    if isinstance(v, bool):
        return compare(op, "true" if v else "false", text)
    if isinstance(v, int | float):
        n = number(text)
        return n is not None and compare(op, float(v), n)
    if isinstance(v, str):
        lit_instant, val_instant = instant(text), instant(v)
        if lit_instant is not None and val_instant is not None:
            return compare(op, val_instant, lit_instant)
        return compare(op, v, text)
    return False


def reference(body: dict[str, Any], parts: list[str], op: str, text: str) -> bool:
    found = values_at(body, parts)
    if found is None:
        return False
    if op == "":
        return True
    scalars = [v for v in found if isinstance(v, str | int | float | bool) and v is not None]
    if op == "~":
        return any(isinstance(v, str) and re.fullmatch(text, v, re.I | re.S) for v in scalars)
    if op == "!=":
        return bool(scalars) and not any(one("==", text, v) for v in scalars)
    return any(one(op, text, v) for v in scalars)


def words(text: str) -> list[str]:
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", folded.casefold())


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    if isinstance(node, dict):
        return [s for item in node.values() for s in strings(item)]
    return []


def text_reference(body: dict[str, Any], terms: list[str], require_all: bool) -> bool:
    present = {w for s in strings(body) for w in words(s)}
    hits = [any(t == w for w in present) for term in terms for t in words(term)]
    return all(hits) if require_all else any(hits)


# -- the property ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory):
    # On PostgreSQL too: its jsonb orders and returns values in its own way (objects,
    # strings below numbers, numbers without an exponent), which the sort key evens out.
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(fresh_database())
        else:
            url = f"sqlite:///{tmp_path_factory.mktemp('search') / 'p.db'}"
        store = Store.open(url)
        stack.callback(store.close)
        search.install(store.engine)
        yield store


def load(store: Store, bodies: list[dict[str, Any]]) -> tuple[str, list[str]]:
    container_id = str(uuid.uuid4())
    ids: list[str] = []
    stamp = "2020-01-01T00:00:00.000000Z"
    with store.session(write=True) as session:
        for n, item in enumerate(bodies):
            record = InstanceRecord(
                instance_id=str(uuid.uuid1()),
                container_id=container_id,
                schema_id=TAG.schema_id,
                at_id=f"xcore:tag:{n + 1:x}",
                etag=1,
                audit=Audit(stamp, stamp, "u", "u", "c", "c"),
                body=item,
                created_us=1577836800000000 + n,
                modified_us=1577836800000000 + n,
            )
            session.insert_instance(record, [])
            ids.append(record.instance_id)
    return container_id, ids


def run(store: Store, container_id: str, pairs: list[tuple[str, str]]) -> list[str]:
    query = parse_query([("schema", TAG.versioned_schema), ("limit", "1000"), *pairs])
    with store.session() as session:
        page = search.find(session.conn, container_id, query, dialect=dialect_for(session.conn))
    assert page.total == len(page.records)
    return [r.instance_id for r in page.records]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(body, max_size=8), filters=st.lists(a_filter(), min_size=1, max_size=2))
def test_property_filters_agree_with_the_reference(store, bodies, filters):
    container_id, ids = load(store, bodies)
    pairs = [("property", "_instance." + ".".join(p) + op + text) for p, op, text in filters]
    try:
        got = run(store, container_id, pairs)
    except BadRequest:
        pytest.fail(f"valid filters refused: {pairs}")
    expected = [
        iid
        for iid, b in zip(ids, bodies, strict=True)
        if all(reference(b, p, op, t) for p, op, t in filters)
    ]
    assert sorted(got) == sorted(expected), pairs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(body, max_size=8),
    terms=st.lists(
        st.sampled_from(["red", "blue", "ca", "x", "2020", "b", "10"]), min_size=1, max_size=3
    ),
    require_all=st.booleans(),
)
def test_full_text_agrees_with_the_reference(store, bodies, terms, require_all):
    container_id, ids = load(store, bodies)
    pairs = [("q", " ".join(terms)), ("qop", "AND" if require_all else "OR")]
    got = run(store, container_id, pairs)
    expected = [
        iid for iid, b in zip(ids, bodies, strict=True) if text_reference(b, terms, require_all)
    ]
    assert sorted(got) == sorted(expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(body, min_size=1, max_size=8),
    key=st.sampled_from(KEYS),
    descending=st.booleans(),
    limit=st.integers(1, 3),
)
def test_paging_by_any_property_visits_every_item_once(store, bodies, key, descending, limit):
    container_id, ids = load(store, bodies)
    from nextoffer.repository.query import format_cursor

    order = ("-" if descending else "") + "_instance." + key
    seen: list[str] = []
    start: list[tuple[str, str]] = []
    for _ in range(len(bodies) + 1):
        query = parse_query(
            [("schema", TAG.versioned_schema), ("limit", str(limit)), ("orderby", order), *start]
        )
        with store.session() as session:
            page = search.find(session.conn, container_id, query, dialect=dialect_for(session.conn))
        assert page.total == len(bodies) - len(seen)
        seen.extend(r.instance_id for r in page.records)
        if page.total <= len(page.records):
            break
        start = [("start", format_cursor(query.order, page.sort_values[-1]))]
    assert sorted(seen) == sorted(ids)

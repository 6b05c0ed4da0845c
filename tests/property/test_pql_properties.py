"""Properties of the PQL front end: totality, error spans, printer round-trip."""

from __future__ import annotations

import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextoffer import pql
from nextoffer.errors import PQLError
from nextoffer.pql import ast as A
from nextoffer.pql.parser import parse
from nextoffer.pql.printer import to_text

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    "and",
    "or",
    "not",
    "!",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    ":",
    "^",
    "$1",
    "=>",
    "in",
    "notIn",
    "like",
    "matches",
    "occurs",
    "between",
    "before",
    "after",
    "from",
    "last",
    "this",
    "month",
    "days",
    "3",
    "today",
    "now",
    "select",
    "exists",
    "forall",
    "where",
    "let",
    "sum",
    "over",
    "X",
    "xEvent",
    "age",
    "person.name",
    '"a"',
    '"x\\"y"',
    "1.5",
    "-2",
    "true",
    "null",
    "if",
    "date(2024, 1, 31)",
    ".count()",
    '.get("k")',
    "@{ctx;v=1}",
    "chain",
    "WHAT",
    "WHEN",
    "COUNT",
    "this",
    "offer.rank.priority",
    "'",
    "==",
    "\n",
]

text_inputs = st.one_of(
    st.text(alphabet=string.printable + "éß→\u2028\x85", max_size=40),
    st.lists(st.sampled_from(TOKENS), max_size=14).map(" ".join),
)

PROFILE = {
    "age": 30,
    "person": {"name": "Ann", "tags": ["a", "b"]},
    "X": [1, 2],
    "k": {"k": 1},
    "segmentMembership": {"ups": {"s": {"status": "realized"}}},
}
EVENTS = [
    {"timestamp": "2024-06-14T10:00:00Z", "eventType": "a", "price": 3},
    {"timestamp": 1718445600000, "eventType": "b"},
]


def evaluate(source: str) -> object:
    return pql.evaluate(
        source,
        profile=PROFILE,
        events=EVENTS,
        now="2024-06-15T12:00:00Z",
        context={"ctx;v=1": {"a": 1}},
        variables={"offer": {"rank": {}}},
    )


@SETTINGS
@given(text_inputs)
def test_any_text_evaluates_or_raises_pqlerror(source: str) -> None:
    try:
        value = evaluate(source)
    except PQLError:
        return
    assert value is None or isinstance(value, bool | int | float)


@SETTINGS
@given(text_inputs)
def test_error_positions_lie_inside_the_input(source: str) -> None:
    try:
        evaluate(source)
    except PQLError as exc:
        lines = re.split(r"\r\n|\r|\n", source)  # only these end a line, as in editors
        assert 1 <= exc.line <= len(lines)
        assert 1 <= exc.column <= len(lines[exc.line - 1]) + 1
        assert pql.render_error(exc).endswith("^")


# ---- printer round trip over generated trees ---------------------------------------------

NAMES = st.sampled_from(["a", "b", "age", "xEvent", "person", "offer", "_x1", "Item"])
FIELDS = st.sampled_from(["city", "price", "last", "from", "count", "_id", "rank"])
numbers = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
literals = st.one_of(
    numbers.map(A.Literal),
    st.text(max_size=8).map(A.Literal),
    st.sampled_from([True, False, None]).map(A.Literal),
)
leaves = st.one_of(
    literals,
    NAMES.map(A.Name),
    st.just(A.This()),
    st.just(A.Param(1)),
    st.just(A.Context("_xdm.ctx;version=1")),
)
TIME_REFS = st.one_of(
    st.sampled_from(["now", "today", "yesterday"]).map(A.RelTime),
    st.tuples(
        st.sampled_from(["this", "last", "next"]), st.sampled_from(["day", "week", "month", "year"])
    ).map(lambda t: A.Period(*t)),
)


def extend(inner: st.SearchStrategy[A.Node]) -> st.SearchStrategy[A.Node]:
    args = st.lists(inner, max_size=2).map(tuple)
    spec = st.one_of(
        TIME_REFS.map(lambda t: A.OccursSpec("on", (t,))),
        st.tuples(TIME_REFS, TIME_REFS).map(lambda t: A.OccursSpec("between", t)),
        st.tuples(
            st.sampled_from(["<", "<=", "=", ">"]),
            st.integers(0, 9),
            st.sampled_from(["day", "hour", "month"]),
            st.sampled_from(["before", "after"]),
            TIME_REFS,
        ).map(
            lambda t: A.OccursSpec(
                "distance", (t[4],), op=t[0], amount=t[1], unit=t[2], direction=t[3]
            )
        ),
    )
    return st.one_of(
        st.tuples(inner, FIELDS).map(lambda t: A.Field(*t)),
        st.tuples(inner, st.sampled_from(["count", "head", "isNull"])).map(
            lambda t: A.Method(t[0], t[1], ())
        ),
        st.tuples(inner, st.sampled_from(["get", "contains", "includes"]), inner).map(
            lambda t: A.Method(t[0], t[1], (t[2],))
        ),
        st.tuples(inner, inner, inner).map(lambda t: A.Call("if", t)),
        st.tuples(
            st.sampled_from(["+", "-", "*", "/", "%", "=", "!=", "<", ">=", "in", "like"]),
            inner,
            inner,
        ).map(lambda t: A.Binary(*t)),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: A.BoolOp(t[0], tuple(t[1]))
        ),
        inner.map(lambda x: A.Unary("not", x)),
        st.tuples(inner, inner).map(lambda t: A.Filter(*t)),
        args.map(A.ListLit),
        st.tuples(inner, spec).map(lambda t: A.Occurs(*t)),
        st.tuples(NAMES, inner, st.one_of(st.none(), inner)).map(
            lambda t: A.Select("select", (A.Binding(t[0], A.Name("xEvent"), t[2]),))
        ),
        st.tuples(NAMES, inner, inner).map(lambda t: A.Let(*t)),
        st.tuples(st.sampled_from(["sum", "max"]), inner, NAMES).map(
            lambda t: A.Aggregate(t[0], t[1], (A.Binding(t[2], A.Name("xEvent"), None),))
        ),
    )


trees = st.recursive(leaves, extend, max_leaves=12)


@SETTINGS
@given(trees)
def test_printing_then_parsing_gives_the_same_tree(tree: A.Node) -> None:
    text = to_text(tree)
    assert parse(text) == tree, text


@SETTINGS
@given(trees)
def test_generated_trees_evaluate_or_raise_pqlerror(tree: A.Node) -> None:
    try:
        value = evaluate(to_text(tree))
    except PQLError:
        return
    assert value is None or isinstance(value, bool | int | float)


def _holds(rule: pql.CompiledRule) -> bool:
    try:
        return rule.evaluate(
            profile=PROFILE,
            events=EVENTS,
            now="2024-06-15T12:00:00Z",
            context={"ctx;v=1": {"a": 1}},
            variables={"offer": {"rank": {}}},
        )
    except PQLError:
        return False


@SETTINGS
@given(st.lists(trees, min_size=2, max_size=4))
def test_a_rule_holds_only_when_every_conjunct_holds_alone(parts: list[A.Node]) -> None:
    """What the engine relies on to skip a collection when a shared part is false."""
    try:
        rule = pql.compile(to_text(A.BoolOp("and", tuple(parts))))
    except PQLError:
        return
    assert len(rule.conjuncts) >= 2
    if not _holds(rule):
        return
    for text in rule.conjuncts:
        try:
            alone = pql.compile(text)
        except PQLError:
            continue  # the engine checks only the parts that compile alone
        assert _holds(alone), text

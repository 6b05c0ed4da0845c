"""The PQL parser: precedence, the special forms, spans and syntax errors."""

from __future__ import annotations

import pytest

from nextoffer.errors import PQLError
from nextoffer.pql import ast as A
from nextoffer.pql.parser import parse
from nextoffer.pql.printer import to_text


def test_and_binds_tighter_than_or_and_chains_flatten():
    tree = parse("a = 1 or b = 2 and c = 3 or d = 4")
    assert isinstance(tree, A.BoolOp) and tree.op == "or"
    assert len(tree.operands) == 3
    assert isinstance(tree.operands[1], A.BoolOp) and tree.operands[1].op == "and"


def test_not_applies_to_the_whole_comparison():
    tree = parse('not homeAddress.countryISO = "CA"')
    assert isinstance(tree, A.Unary) and isinstance(tree.operand, A.Binary)


def test_arithmetic_precedence_and_left_associativity():
    assert parse("10 - 4 - 3") == A.Binary(
        "-", A.Binary("-", A.Literal(10), A.Literal(4)), A.Literal(3)
    )
    assert parse("1 + 2 * 3") == A.Binary(
        "+", A.Literal(1), A.Binary("*", A.Literal(2), A.Literal(3))
    )


def test_unary_minus_on_a_literal_is_folded():
    assert parse("-201") == A.Literal(-201)
    assert parse("-x") == A.Unary("-", A.Name("x"))


def test_keywords_are_case_insensitive_but_names_after_a_dot_are_fields():
    assert parse("a AND b") == parse("a and b")
    assert parse("x.last.from") == A.Field(A.Field(A.Name("x"), "last"), "from")


def test_paths_methods_filters():
    tree = parse('xEvent[productListItems[SKU = "PS"]].count()')
    assert isinstance(tree, A.Method) and tree.name == "count"
    assert isinstance(tree.obj, A.Filter)


def test_lambda_header_and_lambdas_in_arguments():
    tree = parse("(Profile) => Profile.a = 1")
    assert isinstance(tree, A.Lambda) and tree.params == ("Profile",)
    call = parse("numbers.map((X) => X * X)")
    assert isinstance(call, A.Method) and isinstance(call.args[0], A.Lambda)


def test_select_with_two_bindings_and_colon_condition():
    tree = parse('select A from xEvent where A.x = 1, B from A.items : B.sku = "PS"')
    assert isinstance(tree, A.Select) and [b.var for b in tree.bindings] == ["A", "B"]
    assert tree.bindings[1].range == A.Field(A.Name("A"), "items")


def test_let_binds_an_additive_value():
    tree = parse("let S = (sum X.p over X from xEvent) in (S > 100 and S < 1000)")
    assert isinstance(tree, A.Let) and isinstance(tree.value, A.Aggregate)


def test_aggregate_short_form():
    tree = parse("sum X from integerArray where X > 0")
    assert tree == A.Aggregate(
        "sum",
        None,
        (A.Binding("X", A.Name("integerArray"), A.Binary(">", A.Name("X"), A.Literal(0))),),
    )


def test_occurs_forms():
    on = parse("t occurs date(2017, 10, 1)")
    assert isinstance(on, A.Occurs) and on.spec.form == "on"
    between = parse("t occurs between last month and last week")
    assert between.spec.times == (A.Period("last", "month"), A.Period("last", "week"))
    dist = parse("t occurs <= 24 hours after now")
    assert (dist.spec.op, dist.spec.amount, dist.spec.unit, dist.spec.direction) == (
        "<=",
        24,
        "hour",
        "after",
    )


def test_chain_steps():
    tree = parse(
        'CHAIN(xEvent, timestamp, [A: WHAT(eventType = "x") WHEN(today) COUNT(5), B: WHAT(true)])'
    )
    assert isinstance(tree, A.Chain) and tree.ts_field == "timestamp"
    assert tree.steps[0].count == 5 and tree.steps[0].when.form == "on"


def test_up_operator_with_and_without_dot():
    assert parse("^^.person") == parse("^^person") == A.Field(A.Up(2), "person")


def test_context_reference_spellings():
    assert parse("@{s}.weather") == A.Field(A.Context("s"), "weather")
    assert parse("@event{s}.weather").obj.event_form is True


def test_spans_cover_the_node():
    source = 'a = 1 and b.c("x")'
    tree = parse(source)
    method = tree.operands[1]
    assert source[method.span.offset : method.span.end] == 'b.c("x")'
    assert (method.span.line, method.span.column) == (1, 11)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("homeAddress.countryISO =", "unexpected end of input; expected an expression", 25),
        ("a = b = c", "comparisons do not chain", 7),
        ("(a = 1", "expected ')'", 7),
        ("a = 1 b", "unexpected 'b' after the end of the expression", 7),
        ("t occurs < 3 parsecs before now", "expected a time unit", 14),
        ("{1: 2}", "object keys must be string literals", 2),
        ("select from xEvent", "expected a variable name, found 'from'", 8),
    ],
)
def test_syntax_errors(text, message, column):
    with pytest.raises(PQLError) as err:
        parse(text)
    assert message in err.value.message
    assert err.value.column == column


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(PQLError, match="nested too deeply"):
        parse("(" * 200 + "1" + ")" * 200)
    with pytest.raises(PQLError, match="nested too deeply"):
        parse("1" + " + 1" * 400)


def test_printer_round_trips_documented_shapes():
    for text in [
        'if( offer.characteristics.get("city") = homeAddress.city, '
        "offer.rank.priority * 2, offer.rank.priority)",
        "not (a = 1) and (b or c)",
        "(a.b).c",
        "-(1 + 2) * 3",
        "x[^.y = 1]",
        "exists E from xEvent : E.t = 1",
    ]:
        assert parse(to_text(parse(text))) == parse(text)

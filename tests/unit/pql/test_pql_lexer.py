"""The PQL lexer: tokens, literals, escapes, positions and lexical errors."""

from __future__ import annotations

import pytest

from nextoffer.errors import PQLError
from nextoffer.pql.lexer import tokenize


def kinds(source: str) -> list[tuple[str, object]]:
    return [(t.kind, t.value) for t in tokenize(source)][:-1]


def test_operators_prefer_the_longest_match():
    assert kinds("a != b <= c >= d => !e") == [
        ("ident", "a"),
        ("op", "!="),
        ("ident", "b"),
        ("op", "<="),
        ("ident", "c"),
        ("op", ">="),
        ("ident", "d"),
        ("op", "=>"),
        ("op", "!"),
        ("ident", "e"),
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("412", 412),
        ("0", 0),
        ("3.14", 3.14),
        (".45", 0.45),
        ("2.02E12", 2.02e12),
        ("2.02E-12", 2.02e-12),
        ("1e3", 1000.0),
    ],
)
def test_numbers(text, value):
    [(kind, got)] = kinds(text)
    assert kind == "num"
    assert got == value and type(got) is type(value)


def test_dot_after_a_value_is_member_access_not_a_number():
    assert kinds("a.b") == [("ident", "a"), ("op", "."), ("ident", "b")]
    assert kinds("x[0].y")[-2:] == [("op", "."), ("ident", "y")]


def test_string_escapes():
    [(kind, value)] = kinds(r'"say \"hi\" \\w \n \u00e9 \/"')
    assert kind == "str"
    assert value == 'say "hi" \\w \n é /'


def test_param_and_context_tokens():
    assert kinds("$1") == [("param", 1)]
    assert kinds("@{_xdm.context.additionalParameters;version=1}") == [
        ("ctx", ("_xdm.context.additionalParameters;version=1", False))
    ]
    assert kinds("@event{s;version=1}") == [("ctx", ("s;version=1", True))]


def test_spans_track_lines_and_columns():
    tokens = tokenize('a = 1 and\n  b = "x"')
    b = tokens[4]
    assert b.value == "b"
    assert (b.span.line, b.span.column, b.span.offset, b.span.end) == (2, 3, 12, 13)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ('a = "CA', "unterminated string literal", 5),
        ("a = 'CA'", "single-quoted strings are not PQL", 5),
        ("a == 1", "'==' is not PQL", 3),
        ("a = #", "unexpected character '#'", 5),
        ('a = "\\q"', "unknown escape sequence", 6),
        ("a = 12abc", "malformed number", 5),
        ("$x", "expected digits after '$'", 1),
        ("@{", "malformed context reference", 1),
        ("1e999", "malformed number", 1),
        ("99999999999999999999", "malformed number", 1),
    ],
)
def test_lexical_errors_point_at_the_problem(text, message, column):
    with pytest.raises(PQLError) as err:
        tokenize(text)
    assert message in err.value.message
    assert (err.value.line, err.value.column) == (1, column)

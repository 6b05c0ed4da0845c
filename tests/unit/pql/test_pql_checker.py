"""The checker and the guardrails: every static error names what is wrong and where."""

from __future__ import annotations

import pytest

from nextoffer import pql
from nextoffer.errors import PQLError


@pytest.mark.parametrize(
    ("source", "message", "column"),
    [
        ("person.name.fake()", "unsupported function 'fake'", 13),
        ("fake(1)", "unsupported function 'fake'", 1),
        ('if(a = "CA", 1)', "function 'if' takes 3 argument(s), got 2", 1),
        ("a.startsWith()", "function 'startsWith' takes 1 to 2 argument(s), got 0", 1),
        ("$2.a = 1", "only $1 (the profile) is available, found $2", 1),
        ("^a = 1", "'^' reaches above the outermost level", 1),
        ("xEvent[^^.a = 1]", "'^^' reaches above the outermost level", 8),
        ('"a" + 1 > 0', "an operand of '+' must be a number, got a string", 1),
        ("a in 5", "the right side of 'in' must be an array, got a number", 6),
        ("5 occurs today", "the subject of 'occurs' must be a timestamp, got a number", 1),
        ('"x" occurs today', "the subject of 'occurs' must be a timestamp, got a string", 1),
        ('date("2020", 1, 1) = a', "an argument of date() must be a number, got a string", 6),
        ('a.matches("(a+)+")', "nested quantifiers", 11),
        ('a matches "(x|xy)*z"', "nested quantifiers", 11),
        ('a.matches("(")', "invalid regular expression", 11),
        ("(A, B) => A.x", "a lambda header must be one parameter", 1),
    ],
)
def test_checker_errors(source, message, column):
    with pytest.raises(PQLError) as err:
        pql.compile(source)
    assert message in err.value.message
    assert err.value.column == column


def test_regex_length_limit():
    with pytest.raises(PQLError, match="regular expression longer than 512"):
        pql.compile('a.matches("' + "a" * 600 + '")')


def test_size_limits_depend_on_kind():
    formula = "[" + ", ".join(["1"] * 3000) + "].count()"  # 9 KB
    assert pql.compile(formula, kind="rule").kind == "rule"
    with pytest.raises(PQLError, match="formula is 9008 bytes of UTF-8; the limit is 8000"):
        pql.compile(formula, kind="formula")
    with pytest.raises(PQLError, match="the limit is 15000 bytes"):
        pql.compile('a = "' + "é" * 7600 + '"')  # 15 KB of UTF-8, fewer characters


def test_nesting_limit_counts_open_brackets():
    ok = "(" * 30 + "a" + ")" * 30
    assert pql.compile(ok).profile_paths == ("a",)
    with pytest.raises(PQLError) as err:
        pql.compile("(" * 31 + "a" + ")" * 31)
    assert "nesting depth 31 exceeds the limit of 30" in err.value.message
    assert err.value.column == 31


def test_the_nesting_limit_is_reported_before_parse_errors():
    with pytest.raises(PQLError) as err:
        pql.compile("(" * 31 + "a = ")  # unclosed and incomplete too
    assert "nesting depth 31 exceeds the limit of 30" in err.value.message


def test_distinct_profile_attribute_limit():
    rule = " and ".join(f"a{i} = 1" for i in range(25))
    assert len(pql.compile(rule).profile_paths) == 25
    with pytest.raises(PQLError, match="26 distinct profile attributes; the limit is 25"):
        pql.compile(rule + " and z = 1")


def test_context_attribute_limit():
    rule = " or ".join(f"@{{s}}.f{i} = 1" for i in range(31))
    with pytest.raises(PQLError, match="31 distinct context attributes; the limit is 30"):
        pql.compile(rule)


def test_unknown_kind_and_format():
    with pytest.raises(PQLError, match="kind must be 'rule' or 'formula'"):
        pql.compile("a", kind="segment")
    with pytest.raises(PQLError, match="format must be 'pql/text' or 'pql/json'"):
        pql.compile("a", format="text/pql")


def test_error_renders_a_caret_under_the_column():
    with pytest.raises(PQLError) as err:
        pql.compile('a = 1 and\n  person.name.fake() = "x"')
    assert err.value.line == 2
    assert pql.render_error(err.value).splitlines()[-1] == "  " + " " * 14 + "^"

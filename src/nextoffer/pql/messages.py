"""Every message the PQL lexer, parser, checker and limits can raise, in one place.

``docs/pql.md`` lists them; tests match on their stable prefixes.
"""

from __future__ import annotations

from nextoffer.errors import PQLError

from .ast import Span

# lexer
UNTERMINATED_STRING = "unterminated string literal"
BAD_ESCAPE = "unknown escape sequence {escape!r} in string"
SINGLE_QUOTE = "single-quoted strings are not PQL; use double quotes"
UNEXPECTED_CHAR = "unexpected character {char!r}"
BAD_NUMBER = "malformed number {text!r}"
BAD_PARAM = "expected digits after '$'"
BAD_CONTEXT = "malformed context reference; expected @{schema} or @event{schema}"
DOUBLE_EQUALS = "'==' is not PQL; use '='"
# parser
EXPECTED = "expected {expected}, found {found}"
UNEXPECTED_END = "unexpected end of input; expected {expected}"
TRAILING = "unexpected {found} after the end of the expression"
CHAINED_COMPARISON = "comparisons do not chain; add parentheses"
TOO_DEEP = "expression is nested too deeply (more than {limit} levels)"
BAD_TIME_UNIT = "expected a time unit (day, days, hour, …), found {found}"
BAD_OBJECT_KEY = "object keys must be string literals"
# checker
UNKNOWN_FUNCTION = "unsupported function {name!r}"
UNKNOWN_METHOD = "unsupported function {name!r}"
ARITY = "function {name!r} takes {expected} argument(s), got {got}"
TYPE = "{what} must be {expected}, got {got}"
UNKNOWN_PARAM = "only $1 (the profile) is available, found ${index}"
UP_TOO_FAR = "'{carets}' reaches above the outermost level"
REGEX_TOO_LONG = "regular expression longer than {limit} characters"
REGEX_NESTED = (
    "regular expression with nested quantifiers is not allowed (it could take exponential time)"
)
REGEX_INVALID = "invalid regular expression: {reason}"
REGEX_COMPLEX = (
    "regular expression with more than {limit} repeated parts (*, +, {{n,m}}) or "
    "{optional} optional parts (?) is not allowed (it could take too long to match)"
)
BAD_KIND = "kind must be 'rule' or 'formula', got {kind!r}"
BAD_FORMAT = "format must be 'pql/text' or 'pql/json', got {format!r}"
# limits
LIMIT_SIZE = "{kind} is {size} bytes of UTF-8; the limit is {limit} bytes"
LIMIT_NESTING = "nesting depth {depth} exceeds the limit of {limit} levels"
LIMIT_PROFILE_ATTRS = "rule reads {count} distinct profile attributes; the limit is {limit}"
LIMIT_CONTEXT_ATTRS = "rule reads {count} distinct context attributes; the limit is {limit}"
# pql/json
JSON_INVALID = "pql/json is not valid JSON: {reason}"
JSON_NODE = "pql/json: {reason}"
# evaluation
BAD_NOW = "now must be a datetime or an RFC 3339 string, got {value!r}"
INTERNAL = "evaluation failed unexpectedly: {reason}"


def fail(message: str, span: Span | None, source: str | None) -> PQLError:
    """A PQLError at ``span`` (line/column of its start)."""
    if span is None:
        return PQLError(message, source=source)
    return PQLError(message, line=span.line, column=span.column, source=source)

"""PQL text → tokens.

Token kinds: ``num`` (value int/float), ``str``, ``ident``, ``op``, ``param`` (``$1``),
``ctx`` (``@{…}`` / ``@event{…}``, value = the schema text), ``eof``. Keywords are plain
``ident`` tokens; the parser matches them case-insensitively, so ``AND``/``and`` and a field
called ``last`` after a dot both work.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from typing import Any, NamedTuple

from . import messages as msg
from .ast import Span
from .position import Lines

_OPS2 = ("!=", "<=", ">=", "=>")
_OPS1 = "=<>+-*/%!()[]{},.:^"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class Token(NamedTuple):
    """One token (a named tuple: immutable, and cheap to build)."""

    kind: str
    value: Any
    span: Span
    text: str

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of input"
        if self.kind == "str":
            return f"string {self.text}"
        return repr(self.text)


class _Cursor(Lines):
    """Spans of tokens, at the line and column :class:`Lines` gives every error."""

    __slots__ = ()

    def span(self, start: int, end: int) -> Span:
        # ``Lines.locate`` inlined: this runs once per token.
        line = bisect_right(self.starts, start)
        return Span(line, start - self.starts[line - 1] + 1, start, end)


#: The common tokens, ASCII only, after any whitespace: a name, a plain number, a string
#: without escapes, an operator (not ``==``, not a ``.`` before a digit). Whatever this
#: does not match — and any token followed by a non-ASCII character — goes through
#: :func:`_scan_token`, the one definition of every token and every lexical error; this
#: only makes the usual case one regular-expression match instead of a loop per character.
_COMMON = re.compile(
    r"""\s*(?:
        (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<num>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
      | (?P<str>"[^"\\\r\n]*")
      | (?P<op>!=|<=|>=|=>|=(?!=)|\.(?![0-9])|[<>+\-*/%!()\[\]{},:^])
    )""",
    re.VERBOSE,
)


def tokenize(source: str) -> list[Token]:
    """All tokens of ``source`` ending with one ``eof``; raises PQLError on bad input."""
    cur = _Cursor(source)
    out: list[Token] = []
    i, n = 0, len(source)
    match = _COMMON.match
    while True:
        found = match(source, i)
        if found is not None:
            end = found.end()
            after = source[end : end + 1]
            kind = found.lastgroup
            # After a number, a letter, ``_`` or ``.`` needs the full scan (an error, or a
            # fraction in other digits).
            if after.isascii() and not (kind == "num" and (after.isalpha() or after in ("_", "."))):
                text = found.group(kind)  # type: ignore[arg-type]
                start = end - len(text)
                if kind == "num":
                    number = _number(text)
                    if number is not None:
                        out.append(Token("num", number, cur.span(start, end), text))
                        i = end
                        continue
                else:
                    value = text[1:-1] if kind == "str" else text
                    out.append(Token(kind, value, cur.span(start, end), text))  # type: ignore[arg-type]
                    i = end
                    continue
        while i < n and (source[i].isspace()):
            i += 1
        if i >= n:
            out.append(Token("eof", None, cur.span(n, n), ""))
            return out
        i = _scan_token(source, i, cur, out)


def _scan_token(source: str, i: int, cur: _Cursor, out: list[Token]) -> int:
    """Scan the token at ``i`` (not whitespace, not the end) into ``out``; where it ends."""
    n = len(source)
    ch = source[i]
    start = i
    if ch.isalpha() or ch == "_":
        i += 1
        while i < n and (source[i].isalnum() or source[i] == "_"):
            i += 1
        text = source[start:i]
        if not text.isascii():
            raise msg.fail(
                msg.UNEXPECTED_CHAR.format(char=_first_non_ascii(text)),
                cur.span(start, i),
                source,
            )
        out.append(Token("ident", text, cur.span(start, i), text))
    elif ch.isdigit() or (
        ch == "." and i + 1 < n and source[i + 1].isdigit() and not _after_value(out)
    ):
        i = _scan_number(source, i)
        text = source[start:i]
        if i < n and (source[i].isalpha() or source[i] == "_"):
            raise msg.fail(
                msg.BAD_NUMBER.format(text=source[start : i + 1]),
                cur.span(start, i + 1),
                source,
            )
        number = _number(text)
        if number is None:
            raise msg.fail(msg.BAD_NUMBER.format(text=text), cur.span(start, i), source)
        out.append(Token("num", number, cur.span(start, i), text))
    elif ch == '"':
        string, i = _scan_string(source, i, cur)
        out.append(Token("str", string, cur.span(start, i), source[start:i]))
    elif ch == "'":
        raise msg.fail(msg.SINGLE_QUOTE, cur.span(i, i + 1), source)
    elif ch == "$":
        i += 1
        while i < n and source[i].isdigit() and source[i].isascii():
            i += 1
        if i == start + 1:
            raise msg.fail(msg.BAD_PARAM, cur.span(start, i), source)
        out.append(Token("param", int(source[start + 1 : i]), cur.span(start, i), source[start:i]))
    elif ch == "@":
        j = i + 1
        event_form = source.startswith("event", j)
        if event_form:
            j += 5
        close = source.find("}", j + 1)
        if j >= n or source[j] != "{" or close < 0 or close == j + 1:
            raise msg.fail(msg.BAD_CONTEXT, cur.span(start, min(j + 1, n)), source)
        schema = source[j + 1 : close].strip()
        i = close + 1
        out.append(Token("ctx", (schema, event_form), cur.span(start, i), source[start:i]))
    else:
        two = source[i : i + 2]
        if two == "==":
            raise msg.fail(msg.DOUBLE_EQUALS, cur.span(i, i + 2), source)
        if two in _OPS2:
            i += 2
            out.append(Token("op", two, cur.span(start, i), two))
        elif ch in _OPS1:
            i += 1
            out.append(Token("op", ch, cur.span(start, i), ch))
        else:
            raise msg.fail(msg.UNEXPECTED_CHAR.format(char=ch), cur.span(i, i + 1), source)

    return i


def _number(text: str) -> int | float | None:
    """The literal's value; None when it is not ASCII, not finite or not a 64-bit integer."""
    if not text.isascii() or len(text) > 400:
        return None
    if any(c in text for c in ".eE"):
        value = float(text)
        return value if math.isfinite(value) else None
    number = int(text)
    return number if number < 2**63 else None


def _first_non_ascii(text: str) -> str:
    return next(c for c in text if not c.isascii())


def _after_value(out: list[Token]) -> bool:
    """True if a '.' here would be a member access rather than the start of ``.45``."""
    if not out:
        return False
    last = out[-1]
    return last.kind in ("ident", "num", "str", "param", "ctx") or last.value in (")", "]")


def _scan_number(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i].isdigit():
        i += 1
    if i < n and s[i] == "." and i + 1 < n and s[i + 1].isdigit():
        i += 1
        while i < n and s[i].isdigit():
            i += 1
    if i < n and s[i] in "eE":
        j = i + 1
        if j < n and s[j] in "+-":
            j += 1
        if j < n and s[j].isdigit():
            i = j
            while i < n and s[i].isdigit():
                i += 1
    return i


def _scan_string(s: str, i: int, cur: _Cursor) -> tuple[str, int]:
    start = i
    i += 1
    n = len(s)
    parts: list[str] = []
    while True:
        if i >= n or s[i] in "\n\r":
            raise msg.fail(msg.UNTERMINATED_STRING, cur.span(start, i), s)
        ch = s[i]
        if ch == '"':
            return "".join(parts), i + 1
        if ch == "\\":
            esc = s[i + 1 : i + 2]
            if esc in _ESCAPES:
                parts.append(_ESCAPES[esc])
                i += 2
            elif esc == "u":
                digits = s[i + 2 : i + 6]
                if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                    parts.append(chr(int(digits, 16)))
                    i += 6
                else:
                    raise msg.fail(
                        msg.BAD_ESCAPE.format(escape="\\u" + digits), cur.span(i, i + 2), s
                    )
            else:
                raise msg.fail(msg.BAD_ESCAPE.format(escape="\\" + esc), cur.span(i, i + 2), s)
        else:
            parts.append(ch)
            i += 1

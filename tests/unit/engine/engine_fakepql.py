"""A deliberately tiny stand-in for ``nextoffer.pql.compile`` — the engine's seam in unit tests.

Understands: ``true``, ``false``, ``raise`` (fails at evaluation), conjunctions with
``and`` of ``path OP literal`` (``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``in``) and,
for formulas, ``path``, ``path * N``, ``path + N`` or a number. A path starting with a
bound variable (``offer``) reads it, ``profile.`` is optional. Anything else raises
``PQLError`` at compile time. It also counts evaluations, so tests can prove caching.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from nextoffer.errors import PQLError

_COMPARE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<|\bin\b)\s*(.+?)\s*$", re.S)
_ARITH = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:([*+])\s*(-?\d+(?:\.\d+)?))?\s*$")


def _path(path: str, profile: Mapping[str, Any], variables: Mapping[str, Any] | None) -> Any:
    parts = path.split(".")
    if variables and parts[0] in variables:
        value: Any = variables[parts[0]]
        parts = parts[1:]
    else:
        value = profile
        if parts[0] == "profile":
            parts = parts[1:]
    for part in parts:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None:
        return False
    try:
        if op == "=":
            return bool(left == right)
        if op == "!=":
            return bool(left != right)
        if op == "in":
            return left in right
        return bool(
            {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]
        )
    except TypeError:
        return False


class FakeRule:
    evaluations = 0  # class-wide counter, reset by tests

    def __init__(self, source: str, kind: str) -> None:
        self.source = source
        self.kind = kind
        self.terms: list[Any] = []
        if kind == "formula":
            stripped = source.strip()
            try:
                self.terms.append(("number", float(stripped)))
                return
            except ValueError:
                pass
            match = _ARITH.match(source)
            if not match:
                raise PQLError(
                    "fake PQL cannot parse this formula", line=1, column=1, source=source
                )
            self.terms.append(("arith", match.group(1), match.group(2), match.group(3)))
            return
        parts = re.split(r"\band\b", source)
        #: What ``CompiledRule.conjuncts`` gives: the ``and`` operands, as text.
        self.conjuncts = tuple(part.strip() for part in parts)
        column = 1
        for part in parts:
            text = part.strip()
            if text in ("true", "false"):
                self.terms.append(("const", text == "true"))
            elif text == "raise":
                self.terms.append(("raise",))
            else:
                match = _COMPARE.match(text)
                if not match:
                    raise PQLError(
                        f"unexpected {text[:1] or 'end of input'!r}",
                        line=1,
                        column=column,
                        source=source,
                    )
                try:
                    literal = json.loads(match.group(3))
                except ValueError as error:
                    raise PQLError("bad literal", line=1, column=column, source=source) from error
                self.terms.append(("cmp", match.group(1), match.group(2), literal))
            column += len(part) + 3

    def evaluate(
        self,
        *,
        profile: Mapping[str, Any],
        events: Any = None,
        now: Any = None,
        context: Any = None,
        variables: Mapping[str, Any] | None = None,
    ) -> Any:
        FakeRule.evaluations += 1
        if self.kind == "formula":
            term = self.terms[0]
            if term[0] == "number":
                return term[1]
            value = _path(term[1], profile, variables)
            if term[2] is None or value is None:
                return value
            number = float(term[3])
            return value * number if term[2] == "*" else value + number
        for term in self.terms:
            if term[0] == "raise":
                raise RuntimeError("boom")
            if term[0] == "const":
                ok = term[1]
            else:
                ok = _compare(term[2], _path(term[1], profile, variables), term[3])
            if not ok:
                return False
        return True


def compile(source: str, *, format: str = "pql/text", kind: str = "rule") -> FakeRule:
    if format != "pql/text":
        raise PQLError(f"unsupported format {format}", line=1, column=1, source=source)
    return FakeRule(source, kind)

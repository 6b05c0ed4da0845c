"""Bounded regular expressions: rules cannot smuggle in a pattern that hangs a decision.

A pattern is refused when it is longer than ``MAX_REGEX_LENGTH`` or when a quantified
group itself contains a quantifier or an alternation (``(a+)+``, ``(a|aa)*``, ``(.*a){9}``) —
the shapes behind catastrophic backtracking. Patterns follow ``java.util.regex`` closely
enough for the documented uses (``(?i)``, anchors, ``\\w``, groups); *find* semantics.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .semantics import MAX_REGEX_LENGTH

_QUANT_START = "*+?{"


def problem(pattern: str) -> str | None:
    """Why ``pattern`` is refused (a message), or None when it is safe to run."""
    if len(pattern) > MAX_REGEX_LENGTH:
        return "too long"
    if _nested_quantifier(pattern):
        return "nested"
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        return f"invalid: {exc}"
    return None


def _nested_quantifier(pattern: str) -> bool:
    # Each open group records whether it contains a quantifier or an alternation.
    stack: list[bool] = []
    risky_closed = False
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            risky_closed = False
            continue
        if ch == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            risky_closed = False
            continue
        if ch == "(":
            stack.append(False)
        elif ch == ")":
            inner = stack.pop() if stack else False
            risky_closed = inner
            if stack and inner:
                stack[-1] = True
            i += 1
            continue
        elif ch in _QUANT_START and not (ch == "?" and i > 0 and pattern[i - 1] == "("):
            if risky_closed:
                return True
            if stack:
                stack[-1] = True
        elif ch == "|" and stack:
            stack[-1] = True
        risky_closed = False
        i += 1
    return False


@lru_cache(maxsize=512)
def compiled(pattern: str) -> re.Pattern[str] | None:
    """The compiled pattern, or None when it is refused (the predicate is then false)."""
    if problem(pattern) is not None:
        return None
    return re.compile(pattern)


def like(text: str, pattern: str) -> bool:
    """SQL LIKE on the whole string: ``%`` any run, ``_`` one character; case-sensitive.

    A linear-backtracking wildcard matcher (no regex), so long patterns stay O(n·m).
    """
    t = p = 0
    star_p = -1
    star_t = 0
    while t < len(text):
        if p < len(pattern) and (pattern[p] == "_" or pattern[p] == text[t]) \
                and pattern[p] != "%":
            t += 1
            p += 1
        elif p < len(pattern) and pattern[p] == "%":
            star_p = p
            star_t = t
            p += 1
        elif star_p >= 0:
            p = star_p + 1
            star_t += 1
            t = star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == "%":
        p += 1
    return p == len(pattern)

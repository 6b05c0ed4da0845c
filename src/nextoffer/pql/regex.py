"""Bounded regular expressions: rules cannot smuggle in a pattern that hangs a decision.

A pattern is refused when it is longer than ``MAX_REGEX_LENGTH``, when a quantified
group itself contains a quantifier or an alternation (``(a+)+``, ``(a|aa)*``, ``(.*a){9}``) —
the shapes behind exponential backtracking — or when it has more than
``MAX_REGEX_REPEATS`` repeated parts or ``MAX_REGEX_OPTIONALS`` optional ones. Repeats in
sequence still backtrack polynomially (``.*.*.*.*!`` tries every way to split the text in
four, at every start), so a pattern with ``r`` of them runs only on text short enough to
keep within ``REGEX_STEP_BUDGET`` steps (:func:`search`); on longer text it does not match.
Patterns follow ``java.util.regex`` closely enough for the documented uses (``(?i)``,
anchors, ``\\w``, groups); *find* semantics.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .semantics import MAX_REGEX_LENGTH, MAX_REGEX_OPTIONALS, MAX_REGEX_REPEATS, REGEX_STEP_BUDGET

_QUANT_START = "*+?{"


def problem(pattern: str) -> str | None:
    """Why ``pattern`` is refused (a message), or None when it is safe to run."""
    if len(pattern) > MAX_REGEX_LENGTH:
        return "too long"
    if _nested_quantifier(pattern):
        return "nested"
    repeated, optional = repeats(pattern)
    if repeated > MAX_REGEX_REPEATS or optional > MAX_REGEX_OPTIONALS:
        return "complex"
    where = _set_operation(pattern)
    if where is not None:
        return f"invalid: a set in a set, or a set operation (--, &&, ~~, ||), at position {where}"
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        return f"invalid: {exc}"
    return None


def set_span(pattern: str, i: int) -> tuple[int, int]:
    """The character set opened by the ``[`` at ``i``: where its members start (after a
    ``^``; a ``]`` first is a member) and where its closing ``]`` is (the pattern's
    length when there is none)."""
    n = len(pattern)
    start = i + 1 + pattern.startswith("^", i + 1)
    j = start + pattern.startswith("]", start)
    while j < n and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return start, j


def _set_operation(pattern: str) -> int | None:
    """Where a character set holds what Java reads as a set operation and Python's ``re``
    as literal characters (warning that this will change): a ``[`` opening the set's
    contents (``[[a-z]]``), or a doubled ``-``, ``&``, ``~`` or ``|`` after its first member
    (Java's ``[a-z&&[^aeiou]]``). Refused rather than read either way."""
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern[i] != "[":
            i += 1
            continue
        if pattern.startswith("[", i + 1):
            return i + 1
        start, end = set_span(pattern, i)
        j = start
        while j < end:
            if pattern[j] == "\\":
                j += 2
                continue
            if j > start and pattern[j] in "-&~|" and pattern.startswith(pattern[j], j + 1):
                return j
            j += 1
        i = end + 1
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
            i = set_span(pattern, i)[1] + 1
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


def repeats(pattern: str) -> tuple[int, int]:
    """``(repeated, optional)``: how many repeated parts (``*``, ``+``, ``{n,}``, ``{n,m}``
    with m > n) and optional parts (``?``) ``pattern`` has. Repeats multiply the
    backtracking by the text's length; options by two (``a?a?a?…aaa…`` takes 2**n)."""
    repeated = optional = 0
    i, n = 0, len(pattern)
    after_open = False
    while i < n:
        ch = pattern[i]
        opened, after_open = after_open, ch == "("
        if ch == "\\":
            i += 2
            continue
        if ch == "?" and opened:  # ``(?:``, ``(?i)``, ``(?=``: a group's kind, not a quantifier
            i += 1
            continue
        if ch == "[":
            i = set_span(pattern, i)[1] + 1
            continue
        if ch in "*+":
            repeated += 1
            i += 1
        elif ch == "?":
            optional += 1
            i += 1
        elif ch == "{":
            bounds = _BRACES.match(pattern, i)
            if bounds is None:
                i += 1
                continue
            low, comma, high = bounds.groups()
            if comma and (not high or int(high) > int(low or 0)):
                repeated += 1
            i = bounds.end()
        else:
            i += 1
            continue
        # A lazy (``?``) or possessive (``+``) modifier belongs to the quantifier.
        if i < n and pattern[i] in "?+":
            i += 1
    return repeated, optional


_BRACES = re.compile(r"\{(\d*)(,?)(\d*)\}")
_LEADING_FLAGS = re.compile(r"(?:\(\?[aiLmsux]+\))*")


@lru_cache(maxsize=512)
def max_text(pattern: str) -> int:
    """The longest text ``pattern`` is run on (see the module docstring)."""
    rest = pattern[_LEADING_FLAGS.match(pattern).end() :]  # type: ignore[union-attr]
    anchored = rest.startswith(("^", "\\A")) and "m" not in pattern[: len(pattern) - len(rest)]
    repeated, optional = repeats(pattern)
    exponent = repeated + (0 if anchored else 1)
    budget = REGEX_STEP_BUDGET / 2**optional
    return REGEX_STEP_BUDGET if exponent == 0 else int(budget ** (1 / exponent))


def search(pattern: str, text: str) -> re.Match[str] | None:
    """``pattern`` found in ``text``; None when refused or when the text is too long for it."""
    found = compiled(pattern)
    if found is None or len(text) > max_text(pattern):
        return None
    return found.search(text)


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
        if p < len(pattern) and (pattern[p] == "_" or pattern[p] == text[t]) and pattern[p] != "%":
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

"""Every choice PQL's documentation leaves open, as named constants — in one place.

``docs/pql.md`` ("Choices") explains each one; the runtime and checker read them from here.
"""

from __future__ import annotations

# ---- guardrails (Adobe: ranking formula ≤ 8 KB, eligibility rule ≤ 15 KB, depth ≤ 30) ----
#: Size limits in bytes of UTF-8. Adobe writes "8 KB (8,000 ASCII characters)", so KB = 1000.
MAX_BYTES = {"rule": 15_000, "formula": 8_000}
#: Nesting guardrail: the deepest stack of open ``(``, ``[`` and ``{`` in the text.
MAX_NESTING = 30
MAX_PROFILE_ATTRIBUTES = 25
MAX_CONTEXT_ATTRIBUTES = 30
#: Parser safety nets (far above any real rule; they keep recursion bounded).
MAX_PARSE_DEPTH = 50
MAX_TREE_HEIGHT = 200

# ---- regular expressions from rules ------------------------------------------------------
MAX_REGEX_LENGTH = 512
#: Most repeated parts (``*``, ``+``, ``{n,}``, ``{n,m}``) in one pattern. Each one can
#: multiply the backtracking by the text's length, nested or not (``.*.*.*.*.*!``).
MAX_REGEX_REPEATS = 4
#: Most optional parts (``?``) in one pattern: each one doubles the ways to backtrack.
MAX_REGEX_OPTIONALS = 10
#: Worst-case backtracking steps one match may take: a pattern with ``r`` repeated parts
#: and ``o`` optional ones is run only on text of at most ``(budget / 2**o) ** (1 / (r + 1))``
#: characters (``r`` when it is anchored with ``^``); longer text does not match.
REGEX_STEP_BUDGET = 10_000_000

# ---- §13 contradictions and [P] choices --------------------------------------------------
#: §13.3 ``topN`` returns the N highest values (descending); ``bottomN`` the N lowest.
TOPN_DESCENDING = True
#: §13.5 ``occurs … from T`` means the same as ``after``.
FROM_MEANS = "after"
#: §13.7 weeks start on Monday (java.time); month arithmetic clamps to the month's end.
WEEK_START = 0  # Monday, as datetime.weekday()
#: §13.9 ``intersection`` with nothing in common is the empty list, not null.
EMPTY_INTERSECTION_IS_NULL = False
#: §6.11 / §13.18 statuses of ``segmentMembership.ups.<id>.status`` that mean "member".
MEMBER_STATUSES = frozenset({"realized", "existing"})
#: Root names reported as named inputs rather than profile attributes in ``profile_paths``.
NAMED_INPUTS = frozenset({"offer"})


def truthy(value: object) -> bool:
    """§2.5 rule 4: the boolean-position coercion.

    null → false; booleans are themselves; arrays (and select results) are true when
    non-empty; objects, maps, numbers and strings (including ``""``) are true.
    """
    if value is None:
        return False
    if value is True or value is False:
        return value
    if value.__class__ is list:
        return len(value) > 0
    return True

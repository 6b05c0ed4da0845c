"""The PQL function library: free functions and methods, with their signatures.

Every implementation is total: wrong-typed or null input gives null (or false for
predicates), never an exception. ``METHODS``/``FUNCTIONS`` map a name to a ``Sig`` that the
checker uses for arity and the compiler for argument kinds:

* ``v`` — an ordinary value, evaluated before the call;
* ``i`` — item-relative: compiled to a one-argument function of the current item (the item
  becomes the implicit root and ``this``); a PQL lambda ``(X) => …`` is also accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import regex, values
from .semantics import EMPTY_INTERSECTION_IS_NULL, MEMBER_STATUSES, TOPN_DESCENDING, truthy
from .time import make_day, to_instant

Fn = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Sig:
    impl: Fn
    args: str  # one letter per parameter: "v" value, "i" item-relative
    required: int
    boolean: bool = False  # always returns a bool


@dataclass(frozen=True, slots=True)
class MapEntry:
    """What ``mapEntry(K, V)`` builds inside ``map((K, G) => …)``."""

    key: Any
    value: Any


def _items(value: Any) -> list[Any]:
    """A collection view: arrays as they are, a single object as a one-item collection."""
    if value is None:
        return []
    if value.__class__ is list:
        return value
    return [value]


# ---- objects and maps --------------------------------------------------------------------


def is_null(value: Any) -> bool:
    return value is None or (value.__class__ is list and not value)


def is_not_null(value: Any) -> bool:
    return not is_null(value)


def map_get(obj: Any, key: Any) -> Any:
    if obj.__class__ is dict and key.__class__ is str:
        return obj.get(key)
    if obj.__class__ is list and key.__class__ is str:
        return values.project(obj, key)
    return None


def keys(obj: Any) -> Any:
    return list(obj.keys()) if obj.__class__ is dict else None


def map_values(obj: Any) -> Any:
    return list(obj.values()) if obj.__class__ is dict else None


# ---- strings -----------------------------------------------------------------------------


def _string_predicate(test: Callable[[str, str], bool], negate: bool) -> Fn:
    def predicate(text: Any, other: Any, case_sensitive: Any = True) -> bool:
        if text.__class__ is list:
            return any(predicate(t, other, case_sensitive) for t in text)
        if text.__class__ is not str or other.__class__ is not str:
            return False
        if case_sensitive is False:
            text, other = text.lower(), other.lower()
        return test(text, other) is not negate

    return predicate


starts_with = _string_predicate(str.startswith, False)
does_not_start_with = _string_predicate(str.startswith, True)
ends_with = _string_predicate(str.endswith, False)
does_not_end_with = _string_predicate(str.endswith, True)
contains = _string_predicate(str.__contains__, False)
does_not_contain = _string_predicate(str.__contains__, True)
equals = _string_predicate(str.__eq__, False)
not_equal_to = _string_predicate(str.__eq__, True)


def like(text: Any, pattern: Any) -> bool:
    if text.__class__ is list:
        return any(like(t, pattern) for t in text)
    if text.__class__ is not str or pattern.__class__ is not str:
        return False
    return regex.like(text, pattern)


def matches(text: Any, pattern: Any) -> bool:
    """Java ``find`` semantics: the pattern may match anywhere."""
    if text.__class__ is list:
        return any(matches(t, pattern) for t in text)
    if text.__class__ is not str or pattern.__class__ is not str:
        return False
    return regex.search(pattern, text) is not None


def regex_group(text: Any, pattern: Any, group: Any = 0) -> Any:
    if text.__class__ is not str or pattern.__class__ is not str or group.__class__ is not int:
        return None
    compiled = regex.compiled(pattern)
    if compiled is None or not 0 <= group <= compiled.groups:
        return None
    found = regex.search(pattern, text)
    return found.group(group) if found else None


# ---- arrays ------------------------------------------------------------------------------


def _has(items: list[Any], value: Any) -> bool:
    return value is not None and any(x is not None and values.same(x, value) for x in items)


def intersects(a: Any, b: Any) -> bool:
    if a.__class__ is not list or b.__class__ is not list:
        return False
    return any(_has(b, x) for x in a)


def intersection(a: Any, b: Any) -> Any:
    if a.__class__ is not list or b.__class__ is not list:
        return None
    out = distinct([x for x in a if _has(b, x)])
    return None if (not out and EMPTY_INTERSECTION_IS_NULL) else out


def subset_of(a: Any, b: Any) -> bool:
    if a.__class__ is not list or b.__class__ is not list:
        return False
    return all(_has(b, x) for x in a)


def superset_of(a: Any, b: Any) -> bool:
    return subset_of(b, a)


def includes(a: Any, item: Any) -> bool:
    return a.__class__ is list and _has(a, item)


def distinct(a: Any) -> Any:
    if a.__class__ is not list:
        return None
    out: list[Any] = []
    for x in a:
        if x is None or _has(out, x):
            continue
        out.append(x)
    return out


def head(a: Any) -> Any:
    if a.__class__ is list:
        return a[0] if a else None
    return None


def filter_items(a: Any, cond: Fn) -> Any:
    if a is None:
        return None
    return [x for x in _items(a) if truthy(cond(x))]


def exists(a: Any, cond: Fn) -> bool:
    return any(truthy(cond(x)) for x in _items(a))


def _key(value: Any) -> Any:
    if value is None or value.__class__ in (list, dict):
        return None
    return value


def group_by(a: Any, key: Fn) -> Any:
    if a is None:
        return None
    groups: dict[Any, list[Any]] = {}
    for x in _items(a):
        k = _key(key(x))
        if k is not None:
            groups.setdefault(k, []).append(x)
    return groups


def map_items(a: Any, fn: Fn) -> Any:
    if a.__class__ is dict:
        pairs = getattr(fn, "__code__", None) is not None and fn.__code__.co_argcount == 2
        out: dict[Any, Any] = {}
        for k, g in a.items():
            result = fn(k, g) if pairs else fn(g)
            if result.__class__ is MapEntry:
                if _key(result.key) is not None:
                    out[result.key] = result.value
            else:
                out[k] = result
        return out
    if a is None:
        return None
    return [fn(x) for x in _items(a)]


def _sorted_by(a: Any, key: Fn, n: Any, descending: bool) -> Any:
    if a is None or n.__class__ is not int:
        return None
    keyed = [(key(x), x) for x in _items(a)]
    ranked = [(k, x) for k, x in keyed if values.is_number(k) or k.__class__ is str]
    try:
        ranked.sort(key=lambda kx: kx[0], reverse=descending)
    except TypeError:  # numbers and strings mixed: not comparable
        return None
    return [x for _, x in ranked[: max(n, 0)]]


def top_n(a: Any, key: Fn, n: Any) -> Any:
    return _sorted_by(a, key, n, TOPN_DESCENDING)


def bottom_n(a: Any, key: Fn, n: Any) -> Any:
    return _sorted_by(a, key, n, not TOPN_DESCENDING)


# ---- aggregation -------------------------------------------------------------------------


def _numbers(a: Any, fn: Fn | None) -> list[Any]:
    items = _items(a)
    if fn is not None:
        items = [fn(x) for x in items]
    return [x for x in items if values.is_number(x)]


def count(a: Any, cond: Fn | None = None) -> int:
    if a is None:
        return 0
    if a.__class__ is dict and cond is None:
        return len(a)
    items = _items(a)
    return len(items) if cond is None else sum(1 for x in items if truthy(cond(x)))


def total(a: Any, fn: Fn | None = None) -> Any:
    return sum_of(_numbers(a, fn))


def average(a: Any, fn: Fn | None = None) -> Any:
    return average_of(_numbers(a, fn))


def minimum(a: Any, fn: Fn | None = None) -> Any:
    return min_of(_numbers(a, fn))


def maximum(a: Any, fn: Fn | None = None) -> Any:
    return max_of(_numbers(a, fn))


def sum_of(items: list[Any]) -> Any:
    nums = [x for x in items if values.is_number(x)]
    result = sum(nums)
    return values.add(result, 0) if nums else 0


def average_of(items: list[Any]) -> Any:
    nums = [x for x in items if values.is_number(x)]
    return values.div(sum(nums), len(nums)) if nums else None


def min_of(items: list[Any]) -> Any:
    nums = [x for x in items if values.is_number(x)]
    return min(nums) if nums else None


def max_of(items: list[Any]) -> Any:
    nums = [x for x in items if values.is_number(x)]
    return max(nums) if nums else None


# ---- dates -------------------------------------------------------------------------------


def _part(attr: str) -> Fn:
    def part(value: Any) -> Any:
        inst = to_instant(value)
        return None if inst is None else getattr(inst, attr)

    return part


def current_month(now: datetime) -> int:
    return now.month


def current_year(now: datetime) -> int:
    return now.year


def current_day_of_month(now: datetime) -> int:
    return now.day


# ---- free functions ----------------------------------------------------------------------


def in_segment(root: Any, segment_id: Any) -> bool:
    """True when ``segmentMembership.<namespace>.<id>.status`` is a member status."""
    membership = root.get("segmentMembership") if root.__class__ is dict else None
    if membership.__class__ is not dict or segment_id.__class__ is not str:
        return False
    ups = membership.get("ups")  # the usual namespace first, without a list of them
    if ups.__class__ is dict:
        entry = ups.get(segment_id)
        if entry.__class__ is dict and entry.get("status") in MEMBER_STATUSES:
            return True
    for name, namespace in membership.items():
        if name != "ups" and namespace.__class__ is dict:
            entry = namespace.get(segment_id)
            if entry.__class__ is dict and entry.get("status") in MEMBER_STATUSES:
                return True
    return False


def map_entry(key: Any, value: Any) -> MapEntry:
    return MapEntry(key, value)


METHODS: dict[str, Sig] = {
    "isNull": Sig(is_null, "", 0, True),
    "isNotNull": Sig(is_not_null, "", 0, True),
    "get": Sig(map_get, "v", 1),
    "keys": Sig(keys, "", 0),
    "values": Sig(map_values, "", 0),
    "startsWith": Sig(starts_with, "vv", 1, True),
    "doesNotStartWith": Sig(does_not_start_with, "vv", 1, True),
    "endsWith": Sig(ends_with, "vv", 1, True),
    "doesNotEndWith": Sig(does_not_end_with, "vv", 1, True),
    "contains": Sig(contains, "vv", 1, True),
    "doesNotContain": Sig(does_not_contain, "vv", 1, True),
    "equals": Sig(equals, "vv", 1, True),
    "notEqualTo": Sig(not_equal_to, "vv", 1, True),
    "matches": Sig(matches, "v", 1, True),
    "regexGroup": Sig(regex_group, "vv", 1),
    "intersects": Sig(intersects, "v", 1, True),
    "intersection": Sig(intersection, "v", 1),
    "subsetOf": Sig(subset_of, "v", 1, True),
    "supersetOf": Sig(superset_of, "v", 1, True),
    "includes": Sig(includes, "v", 1, True),
    "distinct": Sig(distinct, "", 0),
    "head": Sig(head, "", 0),
    "filter": Sig(filter_items, "i", 1),
    "exists": Sig(exists, "i", 1, True),
    "groupBy": Sig(group_by, "i", 1),
    "map": Sig(map_items, "i", 1),
    "topN": Sig(top_n, "iv", 2),
    "bottomN": Sig(bottom_n, "iv", 2),
    "count": Sig(count, "i", 0),
    "sum": Sig(total, "i", 0),
    "average": Sig(average, "i", 0),
    "min": Sig(minimum, "i", 0),
    "max": Sig(maximum, "i", 0),
    "getMonth": Sig(_part("month"), "", 0),
    "getYear": Sig(_part("year"), "", 0),
    "getDayOfMonth": Sig(_part("day"), "", 0),
}

#: Free functions. ``if`` is compiled inline; the ``now``/root-reading ones get the
#: execution instant or the profile as a hidden first argument.
FUNCTIONS: dict[str, Sig] = {
    "if": Sig(lambda *a: None, "vvv", 3),
    "date": Sig(make_day, "vvv", 3),
    "currentMonth": Sig(current_month, "", 0),
    "currentYear": Sig(current_year, "", 0),
    "currentDayOfMonth": Sig(current_day_of_month, "", 0),
    "inSegment": Sig(in_segment, "v", 1, True),
    "mapEntry": Sig(map_entry, "vv", 2),
}
NEEDS_NOW = frozenset({"currentMonth", "currentYear", "currentDayOfMonth"})
NEEDS_ROOT = frozenset({"inSegment"})

"""Runtime value semantics: field access with projection, equality, ordering, membership
and arithmetic — each total (never raises) and null-safe per pql.md §2.5.

Values are what JSON gives (None, bool, int, float, str, list, dict) plus instants
(``datetime``) and calendar days (``time.Day``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from .time import Day, to_instant

NUMBER_TYPES = frozenset({int, float})
_TIME_TYPES = (datetime, Day)


def get(obj: Any, name: str) -> Any:
    """``obj.name``: a key of an object/map, or a projection over an array."""
    cls = obj.__class__
    if cls is dict:
        return obj.get(name)
    if cls is list:
        return project(obj, name)
    return None


def path(obj: Any, names: tuple[str, ...]) -> Any:
    """``obj.a.b.c`` for ``names == ("a", "b", "c")``."""
    for name in names:
        cls = obj.__class__
        if cls is dict:
            obj = obj.get(name)
        elif cls is list:
            obj = project(obj, name)
        else:
            return None
    return obj


def project(items: list[Any], name: str) -> list[Any]:
    """pql.md §4.3: a field of an array maps over the items, flattening one level and
    dropping nulls."""
    out: list[Any] = []
    for item in items:
        value = get(item, name)
        if value is None:
            continue
        if value.__class__ is list:
            out.extend(v for v in value if v is not None)
        else:
            out.append(value)
    return out


def is_number(value: Any) -> bool:
    return value.__class__ in NUMBER_TYPES


def same(a: Any, b: Any) -> bool:
    """Typed deep equality of two non-null values (int and float compare numerically;
    booleans equal only booleans; strings are case-sensitive)."""
    ca, cb = a.__class__, b.__class__
    if ca in NUMBER_TYPES:
        return cb in NUMBER_TYPES and a == b
    if ca is str and cb is str:
        return bool(a == b)
    if ca is bool or cb is bool:
        return a is b
    if ca is list:
        return (
            cb is list
            and len(a) == len(b)
            and all(
                (x is not None and y is not None and same(x, y)) or (x is None and y is None)
                for x, y in zip(a, b, strict=True)
            )
        )
    if ca is dict:
        return (
            cb is dict
            and a.keys() == b.keys()
            and all(
                (a[k] is None and b[k] is None)
                or (a[k] is not None and b[k] is not None and same(a[k], b[k]))
                for k in a
            )
        )
    if isinstance(a, _TIME_TYPES) or isinstance(b, _TIME_TYPES):
        ta, tb = to_instant(a), to_instant(b)
        return ta is not None and tb is not None and ta == tb
    return False


def eq(a: Any, b: Any) -> bool:
    """``a = b``: both non-null and equal; an array against a scalar is existential."""
    if a is None or b is None:
        return False
    if a.__class__ is list and b.__class__ is not list:
        return any(x is not None and same(x, b) for x in a)
    if b.__class__ is list and a.__class__ is not list:
        return any(x is not None and same(a, x) for x in b)
    return same(a, b)


def _kind(value: Any) -> str:
    cls = value.__class__
    if cls in NUMBER_TYPES:
        return "number"
    if cls is str:
        return "string"
    if cls is bool:
        return "boolean"
    if cls is list:
        return "array"
    if cls is dict:
        return "object"
    if isinstance(value, _TIME_TYPES):
        return "time"
    return "other"


def ne(a: Any, b: Any) -> bool:
    """``a != b``: both non-null, of comparable kinds, and not equal (§2.5 rule 1)."""
    if a is None or b is None:
        return False
    if a.__class__ is list and b.__class__ is not list:
        return any(x is not None and ne(x, b) for x in a)
    if b.__class__ is list and a.__class__ is not list:
        return any(x is not None and ne(a, x) for x in b)
    ka, kb = _kind(a), _kind(b)
    if ka != kb and "time" not in (ka, kb):
        return False
    return not same(a, b)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
}


def compare(op: str, a: Any, b: Any) -> bool:
    """``<  <=  >  >=``: numbers numerically, strings by code point, timestamps by instant;
    anything else (null, mismatched kinds) is false."""
    if a is None or b is None:
        return False
    ca, cb = a.__class__, b.__class__
    if ca is list and cb is not list:
        return any(x is not None and compare(op, x, b) for x in a)
    if cb is list and ca is not list:
        return any(x is not None and compare(op, a, x) for x in b)
    fn = _ORDER[op]
    if ca in NUMBER_TYPES and cb in NUMBER_TYPES:
        return fn(a, b) if not (math.isnan(a) or math.isnan(b)) else False
    if ca is str and cb is str:
        return fn(a, b)
    if isinstance(a, _TIME_TYPES) or isinstance(b, _TIME_TYPES):
        ta, tb = to_instant(a), to_instant(b)
        return ta is not None and tb is not None and fn(ta, tb)
    return False


def member(value: Any, items: Any) -> bool:
    """``value in items`` (case-sensitive; null on either side is false)."""
    if value is None or items is None:
        return False
    if items.__class__ is not list:
        return False
    if value.__class__ is list:
        return any(x is not None and member(x, items) for x in value)
    return any(x is not None and same(value, x) for x in items)


def not_member(value: Any, items: Any) -> bool:
    """``notIn``: both non-null and the value is not in the array (not the negation of
    ``in`` — pql.md §6.5)."""
    if value is None or items is None or items.__class__ is not list:
        return False
    return not member(value, items)


def member_of_strings(value: Any, strings: frozenset[str] | tuple[str, ...]) -> bool:
    """Fast ``in`` against a literal list of strings (the compiler's specialisation)."""
    if value.__class__ is str:
        return value in strings
    if value.__class__ is list:
        return any(x.__class__ is str and x in strings for x in value)
    return False


# ---- arithmetic (null in → null out; division by zero → null) ----------------------------


def _nums(a: Any, b: Any) -> bool:
    return a.__class__ in NUMBER_TYPES and b.__class__ in NUMBER_TYPES


def _finite(value: Any) -> Any:
    if value.__class__ is float and not math.isfinite(value):
        return None
    return value


def add(a: Any, b: Any) -> Any:
    return _finite(a + b) if _nums(a, b) else None


def sub(a: Any, b: Any) -> Any:
    return _finite(a - b) if _nums(a, b) else None


def mul(a: Any, b: Any) -> Any:
    if not _nums(a, b):
        return None
    try:
        return _finite(a * b)
    except OverflowError:
        return None


def div(a: Any, b: Any) -> Any:
    """Exact integer quotients stay integers; otherwise a double (pql.md §6.3 [P])."""
    if not _nums(a, b) or b == 0:
        return None
    if a.__class__ is int and b.__class__ is int and a % b == 0:
        return a // b
    try:
        return _finite(a / b)
    except OverflowError:
        return None


def mod(a: Any, b: Any) -> Any:
    """Remainder with the sign of the dividend (Java ``%``)."""
    if not _nums(a, b) or b == 0:
        return None
    if a.__class__ is int and b.__class__ is int:
        r = abs(a) % abs(b)
        return -r if a < 0 else r
    return _finite(math.fmod(a, b))


def neg(a: Any) -> Any:
    if a.__class__ in NUMBER_TYPES:
        return -cast(float, a)
    return None

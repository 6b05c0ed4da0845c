"""The helpers generated code calls, gathered into one namespace.

Generated functions see only this dictionary (and no builtins): every name they use is one
of the fixed keys below, plus compiler-registered constants named ``_k<N>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nextoffer.errors import PQLError

from . import functions as F
from . import messages as msg
from . import values as V
from .semantics import truthy
from .time import Day, OccursTest, period, relative, to_instant, to_interval


def _iter(value: Any) -> Any:
    """A ``from`` range: arrays iterate, a single object is a one-item collection."""
    if value is None:
        return ()
    if value.__class__ is list:
        return value
    return (value,)


def _interval(value: Any) -> Any:
    return to_interval(value)


def _shape(value: Any) -> Any:
    """The value ``nextoffer.pql.evaluate`` returns: booleans and numbers as they are;
    anything else (strings, objects, arrays, null) through the boolean-position coercion."""
    cls = value.__class__
    if cls is bool or cls in V.NUMBER_TYPES:
        return value
    return truthy(value)


def _number(value: Any) -> Any:
    """A ranking formula's value: a number, or None when it yields no number."""
    return value if value.__class__ in V.NUMBER_TYPES else None


def _root(value: Any) -> dict[str, Any]:
    """A top-level input as a dict: other mappings are copied once, non-mappings are empty.
    (Values inside are expected JSON-shaped: dicts, lists and scalars.)"""
    if isinstance(value, dict):
        return value
    return dict(value) if isinstance(value, Mapping) else {}


def _events(value: Any) -> list[Any]:
    if value is None:
        return []
    return (
        value if value.__class__ is list else list(value) if isinstance(value, list | tuple) else []
    )


def _internal(exc: BaseException) -> PQLError:
    return PQLError(msg.INTERNAL.format(reason=f"{type(exc).__name__}: {exc}"))


def _chain(events: Any, ts_field: str, steps: list[tuple[Any, ...]]) -> bool:
    """CHAIN (pql.md §9): steps matched by events in strictly increasing time order;
    ``COUNT(n)`` needs n matching events for that step."""
    timed = []
    for event in _iter(events):
        ts = to_instant(V.get(event, ts_field))
        if ts is not None:
            timed.append((ts, event))
    timed.sort(key=lambda te: te[0])
    after = None
    index = 0
    for what, test, first, second, count, where in steps:
        need = count if count is not None else 1
        found = 0
        last = after
        while found < need and index < len(timed):
            ts, event = timed[index]
            index += 1
            if after is not None and not ts > after:
                continue
            if not what(event):
                continue
            if test is not None and not test.holds(ts, first, second):
                continue
            if where is not None and not truthy(where(event)):
                continue
            found += 1
            last = ts
        if found < need:
            return False
        after = last
    return True


def namespace(now_resolver: Callable[[Any], Any]) -> dict[str, Any]:
    """A fresh globals dictionary for one compiled rule."""
    ns: dict[str, Any] = {
        "__builtins__": {},
        "_NUM": V.NUMBER_TYPES,
        "_get": V.get,
        "_path": V.path,
        "_eq": V.eq,
        "_ne": V.ne,
        "_cmp": V.compare,
        "_in": V.member,
        "_notin": V.not_member,
        "_instr": V.member_of_strings,
        "_add": V.add,
        "_sub": V.sub,
        "_mul": V.mul,
        "_div": V.div,
        "_mod": V.mod,
        "_neg": V.neg,
        "_truthy": truthy,
        "_like": F.like,
        "_matches": F.matches,
        "_rel": relative,
        "_period": period,
        "_ival": _interval,
        "_iter": _iter,
        "_any": any,
        "_all": all,
        "_filter": F.filter_items,
        "_chain": _chain,
        "_shape": _shape,
        "_number": _number,
        "_root": _root,
        "_events": _events,
        "_vars": _root,
        "_ctx": _root,
        "_now": now_resolver,
        "_PQLError": PQLError,
        "_internal": _internal,
        "_agg_sum": F.sum_of,
        "_agg_average": F.average_of,
        "_agg_min": F.min_of,
        "_agg_max": F.max_of,
        "_Day": Day,
        "_Occurs": OccursTest,
    }
    for name, sig in F.METHODS.items():
        ns["m_" + name] = sig.impl
    for name, sig in F.FUNCTIONS.items():
        ns["f_" + name] = sig.impl
    return ns

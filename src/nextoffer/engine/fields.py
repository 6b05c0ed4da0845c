"""Reading xcore instance bodies: prefixed/unprefixed property names, dates, numbers.

Clients send ``_instance`` objects whose property names are usually ``xdm:``-prefixed
(``xdm:name``) but sometimes not (eligibility rules' ``condition``, 2019 collections'
``ids``, ranking formulas' ``expression``). The engine reads every property through
:func:`prop`, which prefers the prefixed spelling and falls back to the bare one, so
both forms decide the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

_EMPTY: Mapping[str, Any] = {}


def prop(body: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """``body["xdm:<name>"]`` if present, else ``body["<name>"]``, else ``default``."""
    value = body.get("xdm:" + name)
    if value is None:
        value = body.get(name)
    return default if value is None else value


def obj(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The object-valued property ``name`` or an empty mapping (also when mistyped)."""
    value = prop(body, name)
    return value if isinstance(value, Mapping) else _EMPTY


def strings(body: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """The string-list property ``name`` (non-strings dropped), or ``()``."""
    value = prop(body, name)
    if isinstance(value, str) or not isinstance(value, Sequence):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (naive values are taken as UTC).

    Returns ``None`` for a missing value; raises ``ValueError`` for one that does not parse.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 timestamp, got {type(value).__name__}")
    return _parsed(value)


@functools.lru_cache(maxsize=4096)
def _parsed(value: str) -> datetime:
    """Memoised (datetimes are immutable): offers with the same dates share one object,
    so a decision checking many of them reads dates that are already in the CPU's caches."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """``moment`` made aware: naive datetimes are taken as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def non_negative_int(value: Any) -> int | None:
    """``value`` if it is an integer ≥ 0 (booleans excluded), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value

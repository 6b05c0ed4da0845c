"""Instants, calendar intervals and the ``occurs`` relation (pql.md §7), all in UTC.

Pure: the execution instant ``now`` is always passed in; nothing here reads a clock.
An interval is a pair ``(start, end)`` of aware datetimes, half-open ``[start, end)``.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from .semantics import FROM_MEANS, WEEK_START

Interval = tuple[datetime, datetime]
MS = timedelta(milliseconds=1)
DAY = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX = datetime.max.replace(tzinfo=UTC)
_MIN = datetime.min.replace(tzinfo=UTC)
_FIXED = {
    "millisecond": MS,
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": DAY,
    "week": timedelta(weeks=1),
}
_MONTHS = {"month": 1, "year": 12, "decade": 120, "century": 1200, "millennium": 12000}


@dataclass(frozen=True, slots=True)
class Day:
    """A calendar day in UTC: what ``date(y, m, d)`` yields (a one-day interval)."""

    start: datetime

    @property
    def interval(self) -> Interval:
        return (self.start, shift(self.start, "day", 1))


def parse_now(value: Any) -> datetime | None:
    """``now`` given by a caller: an aware/naive datetime (naive = UTC) or RFC 3339 text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        inst = to_instant(value)
        return inst
    return None


def to_instant(value: Any) -> datetime | None:
    """A value read from data as an instant, or None when it is not a timestamp.

    ISO-8601 strings with an offset (or ``Z``), date-only strings (that UTC midnight),
    epoch-millisecond integers, datetimes and ``Day`` values are timestamps.
    """
    cls = value.__class__
    if cls is datetime:
        dt: datetime = value
        try:
            return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
        except OverflowError:
            return None
    if cls is str:
        return _parse_text(value)
    if cls is int:
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except (OverflowError, ValueError):
            return None
    if cls is Day:
        start: datetime = value.start
        return start
    if cls is date:
        d: date = value
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    return None


def _parse_text(text: str) -> datetime | None:
    if len(text) < 10 or len(text) > 40 or not text[:4].isdigit() or text[4] != "-":
        return None
    return _parse_iso(text)


@lru_cache(maxsize=8192)
def _parse_iso(text: str) -> datetime | None:
    """Cached: the same event timestamps are read on every evaluation of a rule."""
    try:
        dt = datetime.fromisoformat(text)
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def to_interval(value: Any) -> Interval | None:
    """A time reference used after ``occurs``: date-only values are their whole day,
    instants are one millisecond long."""
    if value.__class__ is Day:
        return value.interval
    if value.__class__ is str and len(value) == 10:
        start = to_instant(value)
        return None if start is None else (start, shift(start, "day", 1))
    start = to_instant(value)
    return None if start is None else (start, shift(start, "millisecond", 1))


def shift(dt: datetime, unit: str, amount: int) -> datetime:
    """``dt`` moved by ``amount`` units; calendar units clamp to the end of the month."""
    fixed = _FIXED.get(unit)
    if fixed is not None:
        try:
            return dt + fixed * amount
        except OverflowError:
            return _MAX if amount > 0 else _MIN
    months = dt.year * 12 + (dt.month - 1) + _MONTHS[unit] * amount
    year, month = divmod(months, 12)
    year = min(max(year, 1), 9999)
    day = min(dt.day, calendar.monthrange(year, month + 1)[1])
    return dt.replace(year=year, month=month + 1, day=day)


def floor(dt: datetime, unit: str) -> datetime:
    """Start of the calendar ``unit`` containing ``dt``."""
    if unit == "millisecond":
        return dt.replace(microsecond=dt.microsecond // 1000 * 1000)
    if unit == "second":
        return dt.replace(microsecond=0)
    if unit == "minute":
        return dt.replace(second=0, microsecond=0)
    if unit == "hour":
        return dt.replace(minute=0, second=0, microsecond=0)
    midnight = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return midnight
    if unit == "week":
        return midnight - DAY * ((midnight.weekday() - WEEK_START) % 7)
    if unit == "month":
        return midnight.replace(day=1)
    span = {"year": 1, "decade": 10, "century": 100, "millennium": 1000}[unit]
    return midnight.replace(year=max(midnight.year // span * span, 1), month=1, day=1)


def relative(now: datetime, word: str) -> Interval:
    """``now`` / ``today`` / ``yesterday`` / ``tomorrow``."""
    if word == "now":
        return (now, shift(now, "millisecond", 1))
    today = floor(now, "day")
    offset = {"today": 0, "yesterday": -1, "tomorrow": 1}[word]
    start = shift(today, "day", offset)
    return (start, shift(start, "day", 1))


def period(now: datetime, which: str, unit: str) -> Interval:
    """``this`` / ``last`` / ``next`` + unit: the whole calendar unit."""
    start = floor(now, unit)
    start = shift(start, unit, {"this": 0, "last": -1, "next": 1}[which])
    return (start, shift(start, unit, 1))


@dataclass(frozen=True, slots=True)
class OccursTest:
    """The compiled shape of an occurs spec; the time references are evaluated apart."""

    form: str
    op: str | None = None
    amount: int = 0
    unit: str = "day"
    direction: str | None = None

    def holds(self, subject: Any, first: Interval | None, second: Interval | None = None) -> bool:
        if subject.__class__ is list:  # a projected list: some element occurs
            return any(self.holds(item, first, second) for item in subject)
        ts = to_instant(subject)
        if ts is None or first is None:
            return False
        start, end = first
        form = self.form
        if form == "on":
            return start <= ts < end
        if form == "between":
            return second is not None and start <= ts < second[1]
        if form == "from":
            form = FROM_MEANS
        if form == "before":
            return ts < start
        if form == "after":
            return ts >= end
        return self._distance(ts, start)

    def _distance(self, ts: datetime, ref: datetime) -> bool:
        direction = FROM_MEANS if self.direction == "from" else self.direction
        op = self.op
        if direction == "before":
            if not ts < ref:
                return False
            bound = shift(ref, self.unit, -self.amount)
            if op == "<":
                return ts > bound
            if op == "<=":
                return ts >= bound
            if op == ">":
                return ts < bound
            if op == ">=":
                return ts <= bound
            exact = bound <= ts < shift(bound, self.unit, 1)
            return exact if op == "=" else not exact
        if not ts > ref:
            return False
        bound = shift(ref, self.unit, self.amount)
        if op == "<":
            return ts < bound
        if op == "<=":
            return ts <= bound
        if op == ">":
            return ts > bound
        if op == ">=":
            return ts >= bound
        exact = bound <= ts < shift(bound, self.unit, 1)
        return exact if op == "=" else not exact


def make_day(year: Any, month: Any, day: Any) -> Day | None:
    """``date(y, m, d)``; invalid or non-integer parts give null."""
    if not all(v.__class__ is int for v in (year, month, day)):
        if all(v.__class__ in (int, float) and float(v).is_integer() for v in (year, month, day)):
            year, month, day = int(year), int(month), int(day)
        else:
            return None
    try:
        return Day(datetime(year, month, day, tzinfo=UTC))
    except (ValueError, OverflowError):
        return None

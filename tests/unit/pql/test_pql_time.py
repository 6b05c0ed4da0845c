"""Time semantics with an injected ``now``: month ends, leap years, time zones, periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nextoffer import pql
from nextoffer.errors import PQLError
from nextoffer.pql.time import floor, period, shift, to_instant


def occurs(ts: str, spec: str, now: str | datetime) -> bool:
    return pql.evaluate(f"t occurs {spec}", profile={"t": ts}, now=now)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "unit", "amount", "expected"),
    [
        (utc(2023, 3, 31), "month", -1, utc(2023, 2, 28)),
        (utc(2024, 3, 31), "month", -1, utc(2024, 2, 29)),
        (utc(2024, 1, 31), "month", 1, utc(2024, 2, 29)),
        (utc(2024, 2, 29), "year", 1, utc(2025, 2, 28)),
        (utc(2024, 2, 29), "year", -4, utc(2020, 2, 29)),
        (utc(2024, 12, 31, 23), "hour", 2, utc(2025, 1, 1, 1)),
        (utc(2024, 10, 31), "decade", 1, utc(2034, 10, 31)),
    ],
)
def test_calendar_shift_clamps_to_month_end(start, unit, amount, expected):
    assert shift(start, unit, amount) == expected


def test_week_starts_on_monday_and_periods_are_whole_units():
    sunday = utc(2024, 6, 16, 23, 59)
    assert floor(sunday, "week") == utc(2024, 6, 10)
    assert period(sunday, "last", "week") == (utc(2024, 6, 3), utc(2024, 6, 10))
    assert period(utc(2024, 3, 15), "last", "month") == (utc(2024, 2, 1), utc(2024, 3, 1))
    assert period(utc(2024, 1, 15), "last", "month") == (utc(2023, 12, 1), utc(2024, 1, 1))
    assert period(utc(2024, 6, 1), "this", "year") == (utc(2024, 1, 1), utc(2025, 1, 1))


def test_timestamps_with_offsets_are_read_as_instants_in_utc():
    assert to_instant("2024-03-15T23:30:00-05:00") == utc(2024, 3, 16, 4, 30)
    assert to_instant("2024-03-15") == utc(2024, 3, 15)
    assert to_instant(0) == utc(1970, 1, 1)
    assert to_instant("yesterday") is None and to_instant(True) is None


def test_today_is_the_utc_day_of_now_whatever_the_data_offset():
    now = "2024-06-15T01:00:00Z"
    assert occurs("2024-06-14T21:30:00-03:00", "today", now) is True  # 00:30Z on the 15th
    assert occurs("2024-06-15T01:30:00+02:00", "today", now) is False  # 23:30Z on the 14th
    assert occurs("2024-06-15T01:30:00+02:00", "yesterday", now) is True


def test_now_may_be_a_datetime_in_another_zone():
    now = datetime(2024, 6, 15, 1, 0, tzinfo=timezone(timedelta(hours=5)))  # 20:00Z on 14th
    assert occurs("2024-06-14T12:00:00Z", "today", now) is True


def test_leap_day_lookbacks():
    now = "2024-02-29T08:00:00Z"
    assert occurs("2023-02-28T00:00:00Z", "<= 1 year before today", now) is True
    assert occurs("2023-02-27T23:59:59Z", "<= 1 year before today", now) is False
    assert occurs("2024-01-29T00:00:00Z", "<= 1 month before today", now) is True
    assert occurs("2024-01-28T23:00:00Z", "<= 1 month before today", now) is False


def test_month_end_lookback_clamps():
    now = "2023-03-31T12:00:00Z"
    assert occurs("2023-02-28T00:00:00Z", "<= 1 month before today", now) is True
    assert occurs("2023-02-27T23:00:00Z", "<= 1 month before today", now) is False


def test_last_month_in_january_and_in_march_of_a_leap_year():
    assert occurs("2023-12-31T23:59:59Z", "last month", "2024-01-01T00:00:00Z") is True
    assert occurs("2024-02-29T23:59:59Z", "last month", "2024-03-31T23:00:00Z") is True
    assert occurs("2024-03-01T00:00:00Z", "last month", "2024-03-31T23:00:00Z") is False


def test_distance_operators_before_and_after():
    now = "2024-06-15T12:00:00Z"
    assert occurs("2024-06-15T09:00:00Z", "= 3 hours before now", now) is True
    assert occurs("2024-06-15T09:00:00Z", "!= 3 hours before now", now) is False
    assert occurs("2024-06-10T12:00:00Z", "> 3 days before now", now) is True
    assert occurs("2024-06-16T12:00:00Z", "<= 24 hours after now", now) is True
    assert occurs("2024-06-16T12:00:01Z", "<= 24 hours after now", now) is False
    assert occurs("2024-06-15T11:00:00Z", "<= 24 hours after now", now) is False


def test_between_is_inclusive_of_the_last_day():
    assert (
        occurs(
            "2017-12-31T23:59:59Z",
            "between date(2017, 10, 1) and date(2017, 12, 31)",
            "2020-01-01T00:00:00Z",
        )
        is True
    )


def test_current_date_functions_follow_now():
    assert pql.evaluate(
        "currentMonth() = 2 and currentDayOfMonth() = 29 and currentYear() = 2024",
        profile={},
        now="2024-02-29T23:00:00Z",
    )


def test_now_defaults_to_the_clock_and_bad_now_is_an_error():
    assert pql.evaluate(f"currentYear() = {datetime.now(UTC).year}", profile={}) is True
    with pytest.raises(PQLError, match="now must be a datetime"):
        pql.evaluate("currentYear() = 1", profile={}, now="tomorrow-ish")


def test_non_timestamps_never_occur():
    assert occurs("not a date", "today", "2024-06-15T00:00:00Z") is False
    assert (
        pql.evaluate("t occurs today", profile={"t": {"a": 1}}, now="2024-06-15T00:00:00Z") is False
    )

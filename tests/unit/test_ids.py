"""Identifier formats: the version-7 UUIDs used as proposition ids and batch job ids, and
the RFC 3339 date-times every date and timestamp is read as."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nextoffer.ids import IdFactory, epoch_micros, parse_datetime, uuid7

MOMENT = datetime(2026, 11, 29, 9, 30, 1, 234567, tzinfo=UTC)


def test_uuid7_is_an_rfc_9562_version_7_uuid_carrying_the_milliseconds() -> None:
    value = uuid7(MOMENT)
    parsed = uuid.UUID(value)
    assert str(parsed) == value  # canonical lower-case 8-4-4-4-12 form
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == epoch_micros(MOMENT) // 1000


def test_uuid7_sorts_by_time_and_does_not_repeat_within_a_millisecond() -> None:
    same_ms = {uuid7(MOMENT) for _ in range(1000)}
    assert len(same_ms) == 1000
    later = uuid7(MOMENT + timedelta(milliseconds=1))
    assert all(value < later for value in same_ms)


def test_ordered_uuid7_keeps_the_order_ids_were_made_in_even_within_a_millisecond() -> None:
    ids = IdFactory()
    made = [ids.ordered_uuid7(MOMENT) for _ in range(5000)]  # past the 4,096 of one ms
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(uuid.UUID(value).version == 7 for value in made)
    assert uuid.UUID(made[0]).int >> 80 == epoch_micros(MOMENT) // 1000
    # A clock that steps back does not break the order.
    assert ids.ordered_uuid7(MOMENT - timedelta(seconds=1)) > made[-1]


@st.composite
def rfc3339(draw: st.DrawFn) -> tuple[str, datetime]:
    """A date-time written as RFC 3339 allows, and the moment it names (to the µs)."""
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    zone = timezone(timedelta(minutes=minutes))
    local = draw(
        st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))
    ).replace(tzinfo=zone)
    digits = draw(st.integers(0, 12))
    fraction = f"{local.microsecond:06d}{draw(st.text('0123456789', min_size=6, max_size=6))}"
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}{draw(st.sampled_from('Tt'))}"
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    if digits:
        text += "." + fraction[:digits]
    if minutes == 0 and draw(st.booleans()):
        text += draw(st.sampled_from("Zz"))
    else:
        sign, value = ("-" if minutes < 0 else "+"), abs(minutes)
        text += f"{sign}{value // 60:02d}:{value % 60:02d}"
    kept = int(fraction[: min(digits, 6)].ljust(6, "0"))
    return text, local.replace(microsecond=kept)


@given(rfc3339())
def test_every_rfc_3339_date_time_is_read_as_its_moment(case: tuple[str, datetime]) -> None:
    text, moment = case
    parsed = parse_datetime(text)
    assert parsed == moment and parsed.utcoffset() == moment.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-07T10:00:00,5Z",  # ISO 8601's comma
        "2026-12-07T10:00:00.Z",  # an empty fraction
        "2026-12-07T10:00:00+0100",
        "2026-12-07T10:00:00+01",
        "2026-12-07T10:00:00+01:00:30",  # an offset with seconds
        "2026-12-07T10:00:00 +01:00",
        "2026-12-07 10:00:00Z",
        "2026-12-07T10:00Z",
        "2026-12-07T10:00:00",  # no offset
        "2026-12-07",
        "2026-12-07T10:00:00Z\n",
        "\uff12026-12-07T10:00:00Z",  # a digit outside ASCII
        "2026-12-07T10:00:60Z",  # a leap second: Python's datetime has none
        "2026-02-29T10:00:00Z",
        "0000-12-31T10:00:00Z",
        "0001-01-01T00:00:00+00:01",  # before year 1 in UTC
        "9999-12-31T23:59:59-00:01",  # after year 9999 in UTC
    ],
)
def test_what_is_not_an_rfc_3339_date_time_in_years_1_to_9999_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_datetime(text)

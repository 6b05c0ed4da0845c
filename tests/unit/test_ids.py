"""Identifier formats: the version-7 UUIDs used as proposition ids and batch job ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from nextoffer.ids import IdFactory, epoch_micros, uuid7

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

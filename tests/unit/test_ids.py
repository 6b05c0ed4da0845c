"""Identifier formats: the version-7 UUIDs used as proposition ids."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from nextoffer.ids import epoch_micros, uuid7

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

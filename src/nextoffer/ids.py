"""Identifier and timestamp formats of the repository (spec offer-api-xcore §4.2, §7).

* ``instanceId`` is a version-1 UUID whose embedded timestamp is the creation time.
* ``@id`` is ``xcore:<type>:<hex>``, the hex being a Twitter-Snowflake number: the
  creation time in milliseconds since 2010-11-04T01:42:54.657Z, shifted left by 22 bits,
  with a 10-bit worker number and a 12-bit sequence below.
* Dates are RFC 3339 with microseconds and ``Z``.

Everything here takes the time as an argument; only :func:`utcnow` reads the clock.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import threading
import uuid
from datetime import UTC, datetime, timedelta

SNOWFLAKE_EPOCH_MS = 1288834974657
_UUID_EPOCH_OFFSET = 0x01B21DD213814000  # 100-ns intervals from 1582-10-15 to 1970-01-01


def utcnow() -> datetime:
    return datetime.now(UTC)


#: The last second :func:`format_datetime` wrote, and its text up to the seconds: moments
#: come from the clock, many per second, and ``isoformat`` costs several times the rest.
_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def format_datetime(moment: datetime) -> str:
    """``2020-10-21T22:28:11.111732Z``: RFC 3339, UTC, always six fractional digits."""
    global _last_second
    if moment.tzinfo is not UTC:  # the clock's own moments are in UTC already
        moment = moment.astimezone(UTC)
    second, fraction = divmod(epoch_micros(moment), 1_000_000)
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, moment.replace(tzinfo=None, microsecond=0).isoformat())
    return f"{last[1]}.{fraction:06d}Z"


#: RFC 3339's ``date-time`` (section 5.6): ``T`` and ``Z`` in either case, any number of
#: fractional digits after a dot, an offset of hours and minutes. ``datetime.fromisoformat``
#: alone takes more of ISO 8601 (a comma, an empty fraction, ``+0100``, ``+01``, a space
#: before the offset, offsets with seconds), which Adobe's schemas refuse.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_datetime(text: str) -> datetime:
    """Parse an RFC 3339 date-time (``Z`` or an offset) whose moment falls in years 1 to
    9999 in UTC. Raises ``ValueError``."""
    if not isinstance(text, str) or _RFC3339.fullmatch(text) is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    value = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    moment = datetime.fromisoformat(value)  # past six fractional digits, truncated
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"a moment outside years 1 to 9999 in UTC: {text!r}") from None
    return moment


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_micros(moment: datetime) -> int:
    if moment.tzinfo is None:  # naive: local time, as ``astimezone`` reads it
        moment = moment.astimezone(UTC)
    return (moment - _EPOCH) // _MICROSECOND


class IdFactory:
    """Makes instance ids and ``@id`` numbers that are unique within this process.

    Several processes share a database; their ``@id`` numbers differ by the random
    worker number, and the store's unique constraints catch the rest.
    """

    def __init__(self, worker: int | None = None) -> None:
        self._lock = threading.Lock()
        self._worker = (worker if worker is not None else secrets.randbits(10)) & 0x3FF
        self._last_ms = -1
        self._sequence = 0
        self._last_uuid_ticks = -1
        self._last_v7_ms = -1
        self._v7_sequence = 0
        # RFC 4122 §4.5: a random node id with the multicast bit set.
        self._node = secrets.randbits(48) | 0x010000000000
        self._clock_seq = secrets.randbits(14)

    def snowflake(self, moment: datetime) -> int:
        ms = epoch_micros(moment) // 1000
        with self._lock:
            if ms <= self._last_ms:
                # Same (or an earlier, after a clock step) millisecond: keep counting.
                self._sequence = (self._sequence + 1) & 0xFFF
                if self._sequence == 0:
                    self._last_ms += 1
                ms = self._last_ms
            else:
                self._sequence = 0
                self._last_ms = ms
            return ((ms - SNOWFLAKE_EPOCH_MS) << 22) | (self._worker << 12) | self._sequence

    def at_id(self, type_name: str, moment: datetime, *, scheme: str = "xcore") -> str:
        """``<scheme>:<type>:<hex>``: ``xcore`` through the xcore API, ``dps`` through dps."""
        return f"{scheme}:{type_name}:{self.snowflake(moment):x}"

    def ordered_uuid7(self, moment: datetime) -> str:
        """A version-7 UUID (RFC 9562) that sorts after every one this factory made before:
        ``moment``'s milliseconds, then a 12-bit sequence within the millisecond (RFC 9562
        §6.2, method 1), then random bits. Ids made in one millisecond keep their order;
        past 4,096 in one millisecond the milliseconds move on."""
        ms = (epoch_micros(moment) // 1000) & 0xFFFF_FFFF_FFFF
        with self._lock:
            if ms < self._last_v7_ms:
                ms = self._last_v7_ms
            if ms == self._last_v7_ms:
                self._v7_sequence += 1
                if self._v7_sequence > 0xFFF:
                    ms, self._v7_sequence = ms + 1, 0
            else:
                self._v7_sequence = 0
            self._last_v7_ms, sequence = ms, self._v7_sequence
        value = (
            (ms << 80) | (0x7 << 76) | (sequence << 64) | (0b10 << 62) | _id_bits.getrandbits(62)
        )
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def instance_id(self, moment: datetime) -> str:
        """A version-1 UUID whose timestamp is ``moment`` (to the microsecond)."""
        ticks = epoch_micros(moment) * 10 + _UUID_EPOCH_OFFSET
        with self._lock:
            # Several ids in one microsecond use the 100-ns digit, then move on.
            if ticks <= self._last_uuid_ticks:
                ticks = self._last_uuid_ticks + 1
            self._last_uuid_ticks = ticks
        time_low = ticks & 0xFFFFFFFF
        time_mid = (ticks >> 32) & 0xFFFF
        time_hi_version = ((ticks >> 48) & 0x0FFF) | (1 << 12)
        clock_seq_hi = (self._clock_seq >> 8) | 0x80
        clock_seq_low = self._clock_seq & 0xFF
        return str(
            uuid.UUID(
                fields=(
                    time_low,
                    time_mid,
                    time_hi_version,
                    clock_seq_hi,
                    clock_seq_low,
                    self._node,
                )
            )
        )


#: The random bits of :func:`uuid7`: a generator seeded from the OS once per process
#: (again in a forked child). Reading the OS for every id was the largest single cost of a
#: batch job's decision on the loaded test machine (docs/benchmarks.md, "Batch
#: decisioning"); ids need uniqueness, and 74 bits from a generator seeded with 2.5 KB of
#: OS entropy give it.
_id_bits = random.Random()
os.register_at_fork(after_in_child=_id_bits.seed)


def uuid7(moment: datetime) -> str:
    """A version-7 UUID (RFC 9562): ``moment``'s Unix milliseconds, then 74 random bits.

    Used for proposition ids: still an opaque UUID to clients, but ids made later sort
    later, so the stored decision events' primary-key index grows at its end instead of
    at a random page per decision (fewer pages written per commit).
    """
    ms = (epoch_micros(moment) // 1000) & 0xFFFF_FFFF_FFFF
    rand = _id_bits.getrandbits(80)  # 74 are kept
    value = (
        (ms << 80)
        | (0x7 << 76)
        | (((rand >> 62) & 0xFFF) << 64)
        | (0b10 << 62)
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid1_time(value: str) -> datetime:
    """The creation time embedded in a version-1 UUID string."""
    ticks = uuid.UUID(value).time - _UUID_EPOCH_OFFSET
    return datetime.fromtimestamp(ticks // 10 / 1_000_000, UTC).replace(
        microsecond=(ticks // 10) % 1_000_000
    )


def snowflake_time_ms(at_id: str) -> int:
    """Epoch milliseconds encoded in an ``xcore:<type>:<hex>`` id."""
    return (int(at_id.rsplit(":", 1)[1], 16) >> 22) + SNOWFLAKE_EPOCH_MS


def new_secret() -> str:
    return secrets.token_urlsafe(32)

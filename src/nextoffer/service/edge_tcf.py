"""IAB TCF 2 consent: the ``IAB TCF`` standard of the Web SDK's ``setConsent``.

A site with a consent management platform (CMP) sends only the CMP's TC string
(``{"standard": "IAB TCF", "version": "2.0", "value": "<TC string>", "gdprApplies"}``).
Adobe's Web SDK guide ("IAB TCF 2.0 support") says the Edge Network gives consent to
collect when the visitor consented to purpose 1 (store and/or access information on a
device), purpose 10 (develop and improve products) and to Adobe as vendor 565 (special
purpose 1 needs no consent). Only those are read: the core segment's purpose consents
and vendor consents (IAB TCF v2.x "Consent string and vendor list formats"). Decoded by
hand: the PyPI decoders are unmaintained, and the fields read are a few fixed offsets
(docs/design.md).

A TC string is URL-safe base64 without padding of one or more ``.``-separated
segments; the first is the core segment, a sequence of bit fields, most significant
bit first. Vendor consents are a bit field or a list of ranges; they are kept as ranges
(a range of 65,535 vendors costs one pair, not 65,535 members).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = ["ADOBE_VENDOR", "COLLECT_PURPOSES", "TCConsent", "TCStringError", "decode_tc_string"]

#: Adobe's id in the IAB Global Vendor List.
ADOBE_VENDOR = 565
#: The purposes whose consent lets the Edge Network collect (Adobe's Web SDK guide).
COLLECT_PURPOSES = (1, 10)

#: Bit offsets and widths of the core segment's fields read here.
_VERSION = (0, 6)
_PURPOSES = (152, 24)
_MAX_VENDOR = (213, 16)
_IS_RANGE = 229
_VENDORS = 230
_NUM_ENTRIES = 12
_VENDOR_ID = 16


class TCStringError(ValueError):
    """A TC string that is not a TCF 2 consent string (its message says why)."""


@dataclass(frozen=True, slots=True)
class TCConsent:
    """What a TC string's core segment consents to: purposes, and vendors as ranges."""

    purposes: frozenset[int]
    vendors: tuple[tuple[int, int], ...]

    def vendor(self, vendor_id: int) -> bool:
        return any(start <= vendor_id <= end for start, end in self.vendors)

    def collect(self) -> bool:
        """Whether the Edge Network may collect: Adobe's purposes and vendor consented."""
        return all(p in self.purposes for p in COLLECT_PURPOSES) and self.vendor(ADOBE_VENDOR)


class _Bits:
    """The core segment's bits, read by offset; a read past the end is malformed."""

    __slots__ = ("bits",)

    def __init__(self, raw: bytes) -> None:
        self.bits = format(int.from_bytes(raw, "big"), f"0{len(raw) * 8}b") if raw else ""

    def text(self, offset: int, width: int) -> str:
        if offset + width > len(self.bits):
            raise TCStringError("the TC string's core segment ends before its vendor consents")
        return self.bits[offset : offset + width]

    def int(self, offset: int, width: int) -> int:
        return int(self.text(offset, width), 2) if width else 0


def decode_tc_string(value: str) -> TCConsent:
    """The consents of a TC string's core segment; :class:`TCStringError` when it is not
    a TCF 2 string. Not cached: the SDK calls ``setConsent`` only when consent changes,
    and a cache of public strings up to the body's size would be memory for the taking."""
    core = value.strip().split(".", 1)[0]
    if not core:
        raise TCStringError("the TC string is empty")
    try:
        raw = base64.b64decode(core + "=" * (-len(core) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TCStringError("the TC string is not URL-safe base64") from exc
    bits = _Bits(raw)
    version = bits.int(*_VERSION)
    if version != 2:
        raise TCStringError(f"the TC string is of TCF version {version}; only TCF 2 is read")
    purpose_bits = bits.int(*_PURPOSES)
    width = _PURPOSES[1]
    purposes = frozenset(n for n in range(1, width + 1) if purpose_bits >> (width - n) & 1)
    return TCConsent(purposes, _vendors(bits))


def _vendors(bits: _Bits) -> tuple[tuple[int, int], ...]:
    """The vendor consent section: ``MaxVendorId``, then a bit field of that many bits
    or ``NumEntries`` entries, each one vendor or a range of them."""
    max_vendor = bits.int(*_MAX_VENDOR)
    if not bits.int(_IS_RANGE, 1):
        return _runs(bits.text(_VENDORS, max_vendor))
    offset = _VENDORS + _NUM_ENTRIES
    ranges = []
    for _ in range(bits.int(_VENDORS, _NUM_ENTRIES)):
        is_range = bits.int(offset, 1)
        start = end = bits.int(offset + 1, _VENDOR_ID)
        offset += 1 + _VENDOR_ID
        if is_range:
            end = bits.int(offset, _VENDOR_ID)
            offset += _VENDOR_ID
        if not 0 < start <= end:
            raise TCStringError(f"the TC string has a vendor range {start}-{end}")
        ranges.append((start, end))
    return tuple(ranges)


def _runs(field: str) -> tuple[tuple[int, int], ...]:
    """The runs of set bits of a bit field, vendor 1 its first bit."""
    runs: list[tuple[int, int]] = []
    start = None
    for index, bit in enumerate(field + "0", start=1):
        if bit == "1" and start is None:
            start = index
        elif bit == "0" and start is not None:
            runs.append((start, index - 1))
            start = None
    return tuple(runs)

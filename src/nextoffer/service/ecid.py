"""The Experience Cloud ID (ECID) and the Edge Network's identity cookie.

An ECID is 38 decimal digits: two unsigned 63-bit numbers, each written with 19 digits.
The Edge Network keeps it in the ``kndctr_{org}_identity`` state entry (a cookie in the
browser), whose value is the URL-safe base64 of a protocol-buffers ``Identity`` message:
field 1 the ECID (a string), field 10 its metadata (1 created at, 2 is new, 3 device
type), field 30 the write time. The Web SDK reads field 1 of it itself; the other
fields are written for clients that read them. Encoded by hand: three fields do not
warrant a protocol-buffers runtime (docs/design.md).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from functools import lru_cache

__all__ = ["cookie_name", "decode_identity", "encode_identity", "is_ecid", "mint_ecid"]

#: Matched whole (``fullmatch``): a ``$`` would let a trailing newline through.
_ECID = re.compile(r"[0-9]{38}")
#: ``Identity.metadata.device_type``: 1 is a browser.
_BROWSER = 1


def mint_ecid() -> str:
    """A new random ECID."""
    return f"{secrets.randbits(63):019d}{secrets.randbits(63):019d}"


def is_ecid(value: str) -> bool:
    return _ECID.fullmatch(value) is not None


@lru_cache(maxsize=1024)
def cookie_name(org: str, name: str) -> str:
    """``kndctr_{org}_{name}`` with the org's ``@`` as ``_`` (as the Web SDK names them)."""
    return f"kndctr_{org.replace('@', '_')}_{name}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _length(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def encode_identity(ecid: str, *, created: int, is_new: bool, written: int) -> str:
    """The identity state value for ``ecid``; times are UNIX seconds. An identity map's
    ECID is taken as sent, so it may be any text: its length prefix counts its bytes."""
    data = ecid.encode()
    head = _ECID_HEAD + data if len(data) == 38 else _length(1, data)
    message = head + _tail(created, is_new, written)
    return base64.urlsafe_b64encode(message).decode().rstrip("=")


@lru_cache(maxsize=64)
def _tail(created: int, is_new: bool, written: int) -> bytes:
    """Fields 10 and 30: the same for every identity written in the same second."""
    metadata = (
        _field(1, 0, _varint(created))
        + _field(2, 0, _varint(int(is_new)))
        + _field(3, 0, _varint(_BROWSER))
    )
    return _length(10, metadata) + _field(30, 0, _varint(written))


#: Field 1 (length-delimited) of 38 bytes: the head of every ECID's encoding.
_ECID_HEAD = _field(1, 2, _varint(38))


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("a truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def decode_identity(value: str) -> str | None:
    """The ECID of an identity state value; ``None`` when it holds no valid ECID."""
    text = value.strip().replace("%3D", "=").replace("%3d", "=")
    text = text.replace("+", "-").replace("/", "_")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    offset = 0
    try:
        while offset < len(data):
            tag, offset = _read_varint(data, offset)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                _, offset = _read_varint(data, offset)
            elif wire == 1:
                offset += 8
            elif wire == 5:
                offset += 4
            elif wire == 2:
                size, offset = _read_varint(data, offset)
                chunk, offset = data[offset : offset + size], offset + size
                if number == 1:
                    ecid = chunk.decode("ascii", errors="replace")
                    return ecid if is_ecid(ecid) else None
            else:
                return None
    except ValueError:
        return None
    return None

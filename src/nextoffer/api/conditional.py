"""Conditional requests on library objects: ``ETag``, ``If-Match``, ``If-None-Match``.

Shared by both forms of the Offer Library (xcore and dps): one etag per object, the
repository's ``repo:etag`` (docs/api.md, "Conditional requests and concurrency").
"""

from __future__ import annotations

from starlette.requests import Request

from nextoffer.errors import BadRequest
from nextoffer.repository.records import InstanceRecord

#: What an ``If-None-Match`` member that names no repo:etag is read as: matching none.
_NO_ETAG = -1


def etag_of(value: str) -> int | None:
    """An ``If-Match``/``If-None-Match`` member as a repo:etag; None for ``*``; -1 for a
    text that names no repo:etag (it matches none)."""
    text = value.strip()
    if text == "*":
        return None
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    return int(text) if text.isdigit() else _NO_ETAG


def if_match(request: Request) -> int | None:
    """The repo:etag ``If-Match`` requires (None: no condition, or ``*``). A value that
    names none (``"abc"``) is a 400 saying so, not a 409 about a value never sent."""
    header = request.headers.get("if-match")
    if header is None or not header.strip():
        return None
    first = header.split(",")[0]
    expected = etag_of(first)
    if expected == _NO_ETAG:
        raise BadRequest(
            f"If-Match {first.strip()!r} is not an entity tag of this API: send the ETag a"
            ' response gave (a repo:etag in quotes, such as "3"), or *',
            pointer="If-Match",
        )
    return expected


def not_modified(request: Request, record: InstanceRecord) -> bool:
    """True when ``If-None-Match`` names the current etag (or ``*``): answer 304."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [etag_of(v) for v in header.split(",")]
    return None in tags or record.etag in tags


def etag_header(record: InstanceRecord) -> dict[str, str]:
    return {"ETag": f'"{record.etag}"'}

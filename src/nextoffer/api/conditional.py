"""Conditional requests on library objects: ``ETag``, ``If-Match``, ``If-None-Match``.

Shared by both forms of the Offer Library (xcore and dps): one etag per object, the
repository's ``repo:etag`` (docs/api.md, "Conditional requests and concurrency").
"""

from __future__ import annotations

from starlette.requests import Request

from nextoffer.repository.records import InstanceRecord


def etag_of(value: str) -> int | None:
    """An ``If-Match``/``If-None-Match`` member as a repo:etag; None for ``*``."""
    text = value.strip()
    if text == "*":
        return None
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    return int(text) if text.isdigit() else -1


def if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None or not header.strip():
        return None
    return etag_of(header.split(",")[0])


def not_modified(request: Request, record: InstanceRecord) -> bool:
    """True when ``If-None-Match`` names the current etag (or ``*``): answer 304."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [etag_of(v) for v in header.split(",")]
    return None in tags or record.etag in tags


def etag_header(record: InstanceRecord) -> dict[str, str]:
    return {"ETag": f'"{record.etag}"'}

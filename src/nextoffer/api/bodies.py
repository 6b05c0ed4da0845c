"""Reading request bodies: a size limit, JSON syntax, a nesting limit, no NUL, and no
integer past 64 bits (which would be kept as a float, its digits lost)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from nextoffer.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from nextoffer.repository.validation import (
    LONG_INTEGER_REFUSED,
    NUL_REFUSED,
    long_integer_at,
    nul_at,
)


async def read_json(
    request: Request,
    *,
    max_bytes: int,
    max_depth: int,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """The parsed JSON body, or a 400/413 that says what is wrong with it. ``headers``, when
    given, are the request's (``context.header_map``)."""
    headers = headers if headers is not None else request.headers
    encoding = headers.get("content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding.strip()!r} is not supported: send the body uncompressed"
        )
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {max_bytes}")
    # A body arrives in one message but for large ones: that one is taken as it is.
    message = await request.receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        raw: bytes = message.get("body", b"")
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"the request body exceeds the limit of {max_bytes} bytes")
    else:
        raw = await _read_body(request, max_bytes, message)
    if not raw or raw.isspace():  # ``raw.strip()`` empty, without the copy
        raise BadRequest("the request body is empty; a JSON document is required")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode()
        except UnicodeDecodeError as bad:  # orjson calls it "surrogates not allowed"
            raise BadRequest(
                f"the request body is not UTF-8 text (JSON is, RFC 8259): byte"
                f" 0x{raw[bad.start]:02x} at offset {bad.start}"
            ) from exc
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    if (where := long_integer_at(raw)) is not None:
        raise BadRequest(f"the request body: {LONG_INTEGER_REFUSED}", pointer=where)
    # Nesting needs one bracket per level: a body with fewer brackets than the limit
    # (every ordinary request) cannot be too deep, and is not walked.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        check_depth(value, max_depth)
    # JSON writes a NUL only as this escape (a body without it holds none, and is not
    # walked); with it, the escape may still be a backslash's text, so the value is read.
    if b"\\u0000" in raw and (where := nul_at(value)) is not None:
        raise BadRequest(f"the request body holds a NUL character: {NUL_REFUSED}", pointer=where)
    return value


async def _read_body(request: Request, max_bytes: int, message: Message) -> bytes:
    """The body, read from the ASGI messages as ``request.stream()`` reads them (a
    disconnect is :class:`ClientDisconnect`), without its async generator per request;
    past ``max_bytes``, a 413. ``message`` is the first one, already received."""
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] == "http.request":
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the request body exceeds the limit of {max_bytes} bytes")
            if not message.get("more_body", False):
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)
        message = await receive()


def check_depth(value: Any, limit: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise BadRequest(f"the JSON body nests deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend(
                (child, depth + 1) for child in node.values() if isinstance(child, dict | list)
            )
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))

"""Reading request bodies: a size limit, JSON syntax, and a nesting limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from nextoffer.errors import BadRequest, PayloadTooLarge


async def read_json(request: Request, *, max_bytes: int, max_depth: int) -> Any:
    """The parsed JSON body, or a 400/413 that says what is wrong with it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise BadRequest("the request body is empty; a JSON document is required")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    # Nesting needs one bracket per level: a body with fewer brackets than the limit
    # (every ordinary request) cannot be too deep, and is not walked.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        check_depth(value, max_depth)
    return value


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

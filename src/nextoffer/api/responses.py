"""JSON responses serialised with orjson, under the media type each endpoint promises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

#: Encoded ``content-type`` values by media type: endpoints answer with a handful of them.
_CONTENT_TYPES: dict[str, bytes] = {}
_KEPT = 64


class JSONBody(Response):
    """A body already serialised, answered with the headers Starlette's :class:`Response`
    would set (``content-length``, then ``content-type``), made without its generic header
    assembly: every answer of the API is one of these (docs/benchmarks.md)."""

    def __init__(self, body: bytes, *, status: int, content_type: bytes) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", content_type),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Only ever served on ``http`` scopes (routes, not websockets); no background task.
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": "http.response.body", "body": self.body})


def json_response(
    content: Any,
    *,
    status: int = 200,
    media_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    if (
        headers is not None
        or status < 200
        or status in (204, 304)
        or media_type.startswith("text/")
    ):
        # Extra headers, a status without a length, a charset to add: Starlette's own.
        return Response(
            orjson.dumps(content), status_code=status, media_type=media_type, headers=headers
        )
    content_type = _CONTENT_TYPES.get(media_type)
    if content_type is None:
        content_type = media_type.encode("latin-1")
        if len(_CONTENT_TYPES) < _KEPT:
            _CONTENT_TYPES[media_type] = content_type
    return JSONBody(orjson.dumps(content), status=status, content_type=content_type)

"""Requests refused before any route reads them: a NUL character (``%00``) in the URL.

No identifier, name or filter of the APIs can hold a NUL: PostgreSQL's text cannot store
one, and request bodies holding one are refused as well (``bodies.read_json``). Left
to the routes, such a URL found nothing on SQLite (a 404, an empty page) and failed the
query on PostgreSQL; refused here, it is a 400 on either, naming the part of the URL,
in the Edge Network's problem shape under ``/ee/`` (``edge_response.failure``). Such an
answer carries no CORS headers, as none to a request whose datastream is not known.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from nextoffer.api.edge_response import failure
from nextoffer.api.errors import to_response
from nextoffer.errors import BadRequest


class UrlGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # The server hands the path decoded and the query as sent (percent-encoded).
            if "\x00" in scope["path"]:
                where = "path"
            elif b"%00" in scope["query_string"]:
                where = "query"
            else:
                await self.app(scope, receive, send)
                return
            refused = BadRequest(f"the URL's {where} holds a NUL character (%00)", pointer=where)
            if scope["path"].startswith("/ee/"):
                await failure(refused, str(uuid.uuid4()), {})(scope, receive, send)
            else:
                await to_response(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)

"""Live checking of PQL as it is typed, and "test against a profile".

``POST /console/pql/check`` answers the repository's own verdict (``rules.check_source``:
the same compile, the same line and column as the API's 422) and the tokens of the text as
the PQL lexer reads them, which the editor colours. ``POST /console/pql/test`` evaluates
the rule for a profile given as JSON. Both take JSON with the page's CSRF token in the
``X-CSRF-Token`` header, and change nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nextoffer import pql
from nextoffer.console import web
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import PQLError
from nextoffer.pql.lexer import tokenize
from nextoffer.repository.rules import check_source

#: Identifiers the editor shows as keywords (the parser matches them case-insensitively).
KEYWORDS = frozenset(
    {"and", "or", "not", "true", "false", "null", "in", "exists", "if", "then", "else", "let"}
)


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status, headers=web.PRIVATE)


#: The longest text the endpoints look at (the repository's own limits apply below it).
MAX_SOURCE = 100_000


def _error(exc: PQLError) -> dict[str, Any]:
    return {"line": exc.line, "column": exc.column, "message": exc.message}


def _tokens(source: str) -> list[list[Any]]:
    """``[start, end, class]`` of each token; as far as the lexer got."""
    try:
        found = tokenize(source)
    except PQLError:
        return []
    out: list[list[Any]] = []
    for token in found:
        if token.kind == "eof":
            continue
        kind = token.kind
        if kind == "ident" and str(token.value).lower() in KEYWORDS:
            kind = "kw"
        out.append([token.span.offset, token.span.end, kind])
    return out


async def _read(request: Request, visitor: Visitor) -> dict[str, Any] | Response:
    token = request.headers.get("x-csrf-token", "")
    if not web.csrf_ok(request, visitor, ImmutableMultiDict({"csrf_token": token})):
        return _json({"error": {"message": "CSRF token missing or wrong"}}, 403)
    limit = nextoffer(request).settings.max_body_bytes
    length = request.headers.get("content-length", "")
    if not length.isdigit() or int(length) > limit:
        return _json({"error": {"message": f"send at most {limit} bytes"}}, 413)
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return _json({"error": {"message": "the body must be JSON"}}, 400)
    if not isinstance(body, dict) or not isinstance(body.get("source"), str):
        return _json({"error": {"message": "source (a string) is required"}}, 400)
    if len(body["source"]) > MAX_SOURCE:
        return _json({"error": {"message": "the rule is too long"}}, 413)
    return body


def _kind(body: dict[str, Any]) -> str:
    return "formula" if body.get("kind") == "formula" else "rule"


@web.page
async def check(request: Request, visitor: Visitor) -> Response:
    body = await _read(request, visitor)
    if isinstance(body, Response):
        return body
    source: str = body["source"]
    error = None
    try:
        check_source(source, kind=_kind(body), pointer="/")
    except PQLError as exc:
        error = _error(exc)
    return _json({"ok": error is None, "error": error, "tokens": _tokens(source)})


@web.page
async def test(request: Request, visitor: Visitor) -> Response:
    body = await _read(request, visitor)
    if isinstance(body, Response):
        return body
    try:
        profile = orjson.loads(body.get("profile") or "{}")
    except orjson.JSONDecodeError as exc:
        return _json({"ok": False, "error": {"message": f"profile: {exc}"}})
    if not isinstance(profile, dict):
        return _json({"ok": False, "error": {"message": "profile: a JSON object"}})
    try:
        result = pql.compile(body["source"], kind=_kind(body)).evaluate(profile=profile)
    except PQLError as exc:
        return _json({"ok": False, "error": _error(exc)})
    return _json({"ok": True, "result": result})


routes = [
    Route("/pql/check", check, methods=["POST"]),
    Route("/pql/test", test, methods=["POST"]),
]

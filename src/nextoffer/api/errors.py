"""The one place where errors become HTTP responses.

* :class:`AuthError` → Adobe's gateway shape ``{"error_code", "message"}``.
* any other :class:`NextOfferError` → ``application/problem+json`` (RFC 9457) with
  ``type``, ``title``, ``status``, ``detail`` and, where known, ``pointer``; rule errors
  add ``line`` and ``column``.
* Starlette's own 404/405 → problem+json as well.
* anything else → a 500 problem without internals; the traceback goes to the log only.
  An error's ``internal`` text (a driver's words) is logged, never answered.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from nextoffer.api import edge_response
from nextoffer.api.media import JSON, PROBLEM
from nextoffer.api.responses import json_response
from nextoffer.errors import (
    AuthError,
    MethodNotAllowed,
    NextOfferError,
    NotFound,
    PQLError,
    TooManyRequests,
    Unavailable,
)
from nextoffer.logs import withheld

log = logging.getLogger("nextoffer.api")


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem(status: int, title: str, detail: str, *, slug: str, **members: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"https://nextoffer.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in members.items() if v is not None})
    return body


def to_response(exc: NextOfferError) -> Response:
    withheld(exc)
    if isinstance(exc, AuthError):
        return json_response(
            {"error_code": exc.error_code, "message": exc.message},
            status=exc.http_status,
            media_type=JSON,
        )
    members: dict[str, Any] = {"pointer": exc.pointer, **exc.extra}
    if isinstance(exc, PQLError):
        members.update(line=exc.line, column=exc.column, message=exc.message)
    headers = (
        {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, Unavailable | TooManyRequests)
        else None
    )
    body = problem(exc.status, exc.title, exc.detail, slug=_slug(type(exc).__name__), **members)
    return json_response(body, status=exc.status, media_type=PROBLEM, headers=headers)


async def handle_nextoffer_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NextOfferError)  # registered for this class only
    return to_response(exc)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. (Starlette's own ``Allow`` names only
    the first route that matched the path, and we declare one route per method.)"""
    methods: set[str] = set()
    for route in request.app.routes:
        if not isinstance(route, Route) or not route.methods:
            continue
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for this class only
    titles = {404: "Not Found", 405: "Method Not Allowed"}
    title = titles.get(exc.status_code, "HTTP Error")
    detail = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    if request.url.path.startswith("/ee/") and exc.status_code in (404, 405):
        # The Edge Network's problem shape, as every other answer under /ee/.
        refused: NextOfferError = (
            NotFound("no such Edge Network endpoint")
            if exc.status_code == 404
            else MethodNotAllowed(f"{request.method} is not served here")
        )
        request_id = request.query_params.get("requestId") or str(uuid.uuid4())
        return edge_response.failure(refused, request_id, headers)
    return json_response(
        problem(exc.status_code, title, detail, slug=_slug(title.replace(" ", ""))),
        status=exc.status_code,
        media_type=PROBLEM,
        headers=headers or None,
    )


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(
        problem(
            500,
            "Internal Server Error",
            "an unexpected error occurred; it has been logged",
            slug="internal",
        ),
        status=500,
        media_type=PROBLEM,
    )


exception_handlers = {
    NextOfferError: handle_nextoffer_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}

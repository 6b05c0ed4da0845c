"""Listing and searching instances: ``GET /{C}/instances`` and ``/{C}/queries/core/search``.

Both answer the results page of spec §4.4. Links are relative to the repository base
(``/data/core/xcore``); ``next`` follows §5.1 to the letter: the new ``start`` first, then
``orderby=instanceId`` when the request named no order, then the request's own
parameters (an ``orderby`` among them rewritten to the full, encoded key list).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api import media
from nextoffer.api.context import authenticate, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.ids import format_datetime, utcnow
from nextoffer.repository import hal
from nextoffer.repository.objects import RESULTS_SCHEMA
from nextoffer.repository.query import ListQuery, format_cursor, parse_query
from nextoffer.service.search import Page

BASE = "/data/core/xcore"


def _raw_pairs(raw_query: str) -> list[tuple[str, str]]:
    """``(decoded lower-case name, raw segment)`` for each ``&``-separated segment."""
    out: list[tuple[str, str]] = []
    for segment in raw_query.split("&"):
        if segment:
            out.append((unquote_plus(segment.partition("=")[0]).lower(), segment))
    return out


def next_href(path: str, raw_query: str, query: ListQuery, cursor: str) -> str:
    parts = [f"start={quote(cursor, safe='')}"]
    if not query.ordered_by_client:
        parts.append("orderby=instanceId")
    for name, segment in _raw_pairs(raw_query):
        if name == "start":
            continue
        if name == "orderby":
            if not query.ordered_by_client:
                continue  # an empty orderby is no order: the default is named above
            segment = f"{segment.partition('=')[0]}={quote(query.order_text(), safe='')}"
        parts.append(segment)
    return f"{path}?{'&'.join(parts)}"


def _body(request: Request, query: ListQuery, page: Page, *, score: float | None) -> dict[str, Any]:
    container_id = request.path_params["container_id"]
    path = request.url.path[len(BASE) :]
    raw_query = request.url.query
    links: dict[str, Any] = {
        "self": {"href": path + (f"?{raw_query}" if raw_query else ""), "@type": RESULTS_SCHEMA}
    }
    if page.total > len(page.records) and page.records:
        cursor = format_cursor(query.order, page.sort_values[-1])
        links["next"] = {"href": next_href(path, raw_query, query, cursor), "@type": RESULTS_SCHEMA}
    return {
        "containerId": container_id,
        "schemaNs": query.schema.text,
        "requestTime": format_datetime(utcnow()),
        "_embedded": {
            "results": [hal.resource(record, score=score) for record in page.records],
            "total": page.total,
            "count": len(page.records),
        },
        "_links": links,
    }


async def _answer(request: Request, *, score: float | None) -> Response:
    principal = authenticate(request)
    query = parse_query(request.query_params.multi_items())
    container_id = request.path_params["container_id"]
    no = nextoffer(request)
    page = await no.run(no.search.find, principal, container_id, query)
    return json_response(
        _body(request, query, page, score=score), media_type=media.hal_of(RESULTS_SCHEMA)
    )


async def list_instances(request: Request) -> Response:
    # Lookups by id or name carry "_score": 0 on each result, as in Adobe's examples.
    return await _answer(request, score=0)


async def search_instances(request: Request) -> Response:
    return await _answer(request, score=None)


routes = [
    Route(f"{BASE}/{{container_id}}/instances", list_instances, methods=["GET"]),
    Route(f"{BASE}/{{container_id}}/queries/core/search", search_instances, methods=["GET"]),
]

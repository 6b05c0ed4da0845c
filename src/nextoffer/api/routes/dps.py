"""The dps Offer Library API: ``/data/core/dps/{resource}[/{id}]`` (offer-api-dps.md §1.1).

Plain JSON over the same library as ``/data/core/xcore``; the work is the service's
(``service/dps.py``), the shapes the repository's (``repository/dps.py``). ``offer-type``
picks personalized or fallback offers on ``/offers``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api import media
from nextoffer.api.conditional import etag_header, if_match, not_modified
from nextoffer.api.context import authenticate, body_json, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.repository import dps
from nextoffer.repository.dps_fields import Resource
from nextoffer.repository.dps_query import parse_list
from nextoffer.repository.query import format_cursor
from nextoffer.repository.records import InstanceRecord
from nextoffer.service.dps import resource_for

BASE = "/data/core/dps"
_WRITE_TYPES = (media.JSON,)
_PATCH_TYPES = (media.JSON, media.JSON_PATCH)


def _resource(request: Request) -> Resource:
    offer_types = [v for k, v in request.query_params.multi_items() if k.lower() == "offer-type"]
    return resource_for(request.path_params["resource"], offer_types)


def _receipt(record: InstanceRecord, *, status: int) -> Response:
    # The sandbox's id is its decisioning container's (nextoffer keeps no other).
    body = dps.receipt(record, sandbox_id=record.container_id)
    return json_response(body, status=status, headers=etag_header(record))


def next_href(path: str, raw_query: str, cursor: str) -> str:
    """The request's own parameters, a previous ``start`` replaced by the new cursor."""
    kept = [
        segment
        for segment in raw_query.split("&")
        if segment and unquote_plus(segment.partition("=")[0]).lower() != "start"
    ]
    start = "start=" + quote(cursor, safe="")
    return f"{path}?{'&'.join([*kept, start])}"


async def create(request: Request) -> Response:
    principal = authenticate(request)
    resource = _resource(request)
    media.require(request.headers.get("content-type"), _WRITE_TYPES)
    body = await body_json(request)
    no = nextoffer(request)
    record = await no.run(no.dps.create, principal, resource, body)
    return _receipt(record, status=201)


async def list_objects(request: Request) -> Response:
    principal = authenticate(request)
    resource = _resource(request)
    query = parse_list(resource, request.query_params.multi_items())
    no = nextoffer(request)
    page, more = await no.run(no.dps.find, principal, query)
    path = request.url.path[len(BASE) :]
    raw_query = request.url.query
    links: dict[str, Any] = {
        "self": {"href": path + (f"?{raw_query}" if raw_query else ""), "type": media.JSON}
    }
    if more:
        cursor = format_cursor(query.order, page.sort_values[-1])
        links["next"] = {"href": next_href(path, raw_query, cursor), "type": media.JSON}
    body = {
        "results": [dps.document(resource, record) for record in page.records],
        "count": len(page.records),
        "total": page.total,
        "_links": links,
    }
    return json_response(body)


async def lookup(request: Request) -> Response:
    principal = authenticate(request)
    resource = _resource(request)
    no = nextoffer(request)
    record = await no.dps.get_async(principal, resource, request.path_params["id"])
    if not_modified(request, record):
        return Response(status_code=304, headers=etag_header(record))
    return json_response(dps.document(resource, record), headers=etag_header(record))


async def update(request: Request) -> Response:
    principal = authenticate(request)
    resource = _resource(request)
    media.require(request.headers.get("content-type"), _PATCH_TYPES)
    operations = await body_json(request)
    no = nextoffer(request)
    record = await no.run(
        no.dps.patch,
        principal,
        resource,
        request.path_params["id"],
        operations,
        if_match=if_match(request),
    )
    return _receipt(record, status=200)


async def delete(request: Request) -> Response:
    principal = authenticate(request)
    resource = _resource(request)
    no = nextoffer(request)
    await no.run(
        no.dps.delete, principal, resource, request.path_params["id"], if_match=if_match(request)
    )
    # "HTTP status 200 and a blank body" (offer-api-dps §1.1).
    return Response(status_code=200)


routes = [
    Route(f"{BASE}/{{resource}}", create, methods=["POST"]),
    Route(f"{BASE}/{{resource}}", list_objects, methods=["GET"]),
    Route(f"{BASE}/{{resource}}/{{id}}", lookup, methods=["GET"]),
    Route(f"{BASE}/{{resource}}/{{id}}", update, methods=["PATCH"]),
    Route(f"{BASE}/{{resource}}/{{id}}", delete, methods=["DELETE"]),
]

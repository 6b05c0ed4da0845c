"""Datastreams: ``/data/core/nextoffer/datastreams`` (authenticated, scoped like the API).

A datastream is the public key of the Edge Network endpoints (``routes/edge.py``):
``POST`` creates one (``name``, ``containerId`` — the sandbox's decisioning container
when omitted —, ``allowedOrigins``, ``rateLimit``), ``PATCH`` replaces the members it
names, ``GET`` lists or reads, ``DELETE`` removes. See docs/api.md.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api.context import authenticate, body_json, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.service.datastreams import datastream_json

BASE = "/data/core/nextoffer/datastreams"


async def create_datastream(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    record = await no.run(no.datastreams.create, principal, body)
    return json_response(datastream_json(record), status=201)


async def list_datastreams(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    records = await no.run(no.datastreams.of_tenant, principal)
    items = [datastream_json(r) for r in records]
    return json_response({"datastreams": items, "count": len(items)})


async def get_datastream(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    record = await no.run(no.datastreams.get, principal, request.path_params["datastream_id"])
    return json_response(datastream_json(record))


async def update_datastream(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    record = await no.run(
        no.datastreams.update, principal, request.path_params["datastream_id"], body
    )
    return json_response(datastream_json(record))


async def delete_datastream(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    await no.run(no.datastreams.delete, principal, request.path_params["datastream_id"])
    return Response(status_code=204)


routes = [
    Route(BASE, create_datastream, methods=["POST"]),
    Route(BASE, list_datastreams, methods=["GET"]),
    Route(f"{BASE}/{{datastream_id}}", get_datastream, methods=["GET"]),
    Route(f"{BASE}/{{datastream_id}}", update_datastream, methods=["PATCH"]),
    Route(f"{BASE}/{{datastream_id}}", delete_datastream, methods=["DELETE"]),
]

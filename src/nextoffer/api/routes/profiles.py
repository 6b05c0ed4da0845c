"""nextoffer's own profile store: ``/data/core/nextoffer/profiles`` and ``/events``.

Adobe reads profiles from its Real-Time Customer Profile service; these endpoints give
nextoffer the same inputs. See docs/api.md.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api.context import authenticate, body_json, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.errors import BadRequest
from nextoffer.service.profiles import ProfileRecord

BASE = "/data/core/nextoffer"


def profile_json(record: ProfileRecord) -> dict[str, Any]:
    identity_map: dict[str, list[dict[str, str]]] = {}
    for namespace, identity in record.identities:
        identity_map.setdefault(namespace, []).append({"id": identity})
    return {
        "profileId": record.profile_id,
        "identityMap": identity_map,
        "profile": record.attributes,
        "createdDate": record.created,
        "lastModifiedDate": record.modified,
    }


def _identity(request: Request) -> tuple[str, str]:
    namespace = request.query_params.get("namespace")
    identity = request.query_params.get("id")
    if not namespace:
        raise BadRequest("namespace is required", pointer="namespace")
    if not identity:
        raise BadRequest("id is required", pointer="id")
    return namespace, identity


async def upsert_profile(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    record, created = await no.run(no.profiles.upsert, principal, body)
    return json_response(profile_json(record), status=201 if created else 200)


async def get_profile(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    record = await no.run(no.profiles.get, principal, *_identity(request))
    return json_response(profile_json(record))


async def delete_profile(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    await no.run(no.profiles.delete, principal, *_identity(request))
    return Response(status_code=204)


async def append_events(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    body = await body_json(request)
    outcomes = await no.run(no.events.append, principal, body)
    results = [
        {
            k: v
            for k, v in (
                ("index", o.index),
                ("status", o.status),
                ("id", o.event_id),
                ("detail", o.detail),
            )
            if v is not None
        }
        for o in outcomes
    ]
    rejected = sum(1 for o in outcomes if o.status == "rejected")
    summary = {
        "stored": sum(1 for o in outcomes if o.status == "stored"),
        "duplicates": sum(1 for o in outcomes if o.status == "duplicate"),
        "rejected": rejected,
        "results": results,
    }
    # 200 when every event was stored or already known; 207 when some were rejected.
    return json_response(summary, status=207 if rejected else 200)


routes = [
    Route(f"{BASE}/profiles", upsert_profile, methods=["POST"]),
    Route(f"{BASE}/profiles", get_profile, methods=["GET"]),
    Route(f"{BASE}/profiles", delete_profile, methods=["DELETE"]),
    Route(f"{BASE}/events", append_events, methods=["POST"]),
]

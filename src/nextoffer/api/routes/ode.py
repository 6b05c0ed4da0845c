"""The Decisioning API: ``/data/core/ode/{C}/…`` (decisioning-api.md §1, §2)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api import decision_request, decision_response, media
from nextoffer.api.context import authenticate, body_json, header_map, nextoffer
from nextoffer.api.diagnostics import diagnostics
from nextoffer.api.responses import json_response
from nextoffer.engine.model import Offer
from nextoffer.errors import BadRequest
from nextoffer.ids import parse_datetime
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal

BASE = "/data/core/ode"
#: Journey Optimizer's form of the Decisioning API, over the dps library (no container).
ODS = "/data/core/ods"
_DECISION_TYPES = (media.XDM, media.JSON)
MAX_ACTIVITY_IDS = 30


async def decisions(request: Request) -> Response:
    no = nextoffer(request)
    headers = header_map(request)
    principal = no.auth.authenticate(headers)
    return await _decide(
        request, no, headers, principal, request.scope["path_params"]["container_id"]
    )


async def ods_decisions(request: Request) -> Response:
    """``POST /data/core/ods/decisions`` (decisioning-api §2.4): no container in the path,
    the sandbox's decisioning container (the dps library's); ``x-sandbox-id`` is accepted
    and not read (``x-sandbox-name`` scopes the call)."""
    no = nextoffer(request)
    headers = header_map(request)
    principal = authenticate(request, no=no, headers=headers)
    container = await no.run(no.dps.container, principal)
    return await _decide(request, no, headers, principal, container.container_id)


async def _decide(
    request: Request,
    no: NextOffer,
    headers: Mapping[str, str],
    principal: Principal,
    container_id: str,
) -> Response:
    media.require(headers.get("content-type"), _DECISION_TYPES, use=media.DECISION_REQUEST)
    body = await body_json(request, no=no, headers=headers)
    if decision_request.is_2019(body):
        # Activities without placements: each one's placement is in the catalog.
        snapshot = await no.decisions.snapshot_async(principal, container_id)
        call, fmt = decision_request.parse_2019(body, snapshot.catalog)
    else:
        call, fmt = decision_request.parse(body)
    outcome = await no.decide_async(principal, container_id, call)
    metrics = request.app.state.metrics
    if metrics is not None:
        metrics.observe_propositions("decisioning", outcome.result.propositions)
    body = decision_response.response(outcome, fmt, decision_request_id=call.decision_request_id)
    return json_response(body, media_type=media.DECISION_RESPONSE)


async def get_diagnostics(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    container_id = request.path_params["container_id"]
    snapshot = await no.run(no.decisions.snapshot, principal, container_id)
    base = str(request.base_url).rstrip("/") + f"/data/core/xcore/{container_id}"
    return json_response(diagnostics(snapshot, base=base), media_type=media.XED_ID)


async def activity_offers(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    container_id = request.path_params["container_id"]
    activity_ids = request.query_params.getlist("activityId")
    if not activity_ids:
        raise BadRequest(
            "activityId is required (repeatable, a decision @id)", pointer="activityId"
        )
    if len(activity_ids) > MAX_ACTIVITY_IDS:
        raise BadRequest(f"at most {MAX_ACTIVITY_IDS} activityId values", pointer="activityId")
    snapshot = await no.run(no.decisions.snapshot, principal, container_id)
    catalog = snapshot.catalog
    base = str(request.base_url).rstrip("/") + f"/data/core/xcore/{container_id}"

    def link(at_id: str, instance_id: str, etag: int) -> dict[str, object]:
        return {
            "@id": at_id,
            "_links": {"self": {"href": f"{base}/instances/{instance_id}"}},
            "repo:etag": str(etag),
        }

    entries = []
    for activity_id in dict.fromkeys(activity_ids):
        decision = catalog.decisions.get(activity_id)
        if decision is None:
            continue
        offers: dict[str, Offer] = {}
        for placement_id in catalog.placements:
            if decision.covers(placement_id):
                for offer in catalog.candidates(activity_id, placement_id):
                    offers.setdefault(offer.at_id, offer)
        entry: dict[str, object] = {
            "xdm:offerActivity": link(decision.at_id, decision.instance_id, decision.etag),
            "xdm:offers": [link(o.at_id, o.instance_id, o.etag) for o in offers.values()],
        }
        if decision.fallback is not None:
            fallback = decision.fallback
            entry["xdm:fallbackOffer"] = link(fallback.at_id, fallback.instance_id, fallback.etag)
        entries.append(entry)
    return json_response({"xdm:activityOffers": entries}, media_type=media.XDM)


async def decision_events(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    since_text = request.query_params.get("since")
    try:
        # Present but empty (``since=``) is malformed, not absent.
        since = (
            parse_datetime(since_text)
            if since_text is not None
            else datetime(1970, 1, 1, tzinfo=UTC)
        )
    except ValueError as exc:
        raise BadRequest("since must be an RFC 3339 date-time", pointer="since") from exc
    limit_text = request.query_params.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000", pointer="limit")
    events = await no.run(
        no.decisions.decision_events,
        principal,
        request.path_params["container_id"],
        since=since,
        limit=int(limit_text),
    )
    return json_response({"events": events, "count": len(events)})


#: Also served ahead of the router (``api/shortcut.py``): the request that must be cheap.
DECISIONS = Route(f"{BASE}/{{container_id}}/decisions", decisions, methods=["POST"])

routes = [
    DECISIONS,
    Route(f"{ODS}/decisions", ods_decisions, methods=["POST"]),
    Route(f"{BASE}/{{container_id}}/diagnostics", get_diagnostics, methods=["GET"]),
    Route(f"{BASE}/{{container_id}}/offers", activity_offers, methods=["GET"]),
    Route(f"{BASE}/{{container_id}}/decision-events", decision_events, methods=["GET"]),
]

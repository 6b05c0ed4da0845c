"""The Edge Network endpoints: ``/ee/[{locationHint}/]{v1|v2}/{action}``.

Public: no API credentials; ``?configId=`` names the datastream, which names the org,
sandbox and container, the browser origins that may call (CORS with credentials: the
Web SDK sends its cookies) and the rate. A browser request from another origin is
refused before anything is read or stored (403). ``interact`` answers with handles;
``collect`` (the SDK's ``sendBeacon``, a ``text/plain`` body) stores and counts, and
answers 204. The SDK's ``getIdentity`` and ``setConsent`` call ``identity/acquire`` and
``privacy/set-consent``: the visitor's identity handles, and for consent its state entry.
Errors are the Edge Network's problem details (``api/edge_response.py``).
"""

from __future__ import annotations

import uuid
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api import edge_request, edge_response
from nextoffer.api.context import body_json, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.errors import AuthError, BadRequest, NextOfferError, NotFound
from nextoffer.root import NextOffer
from nextoffer.service.datastreams import DatastreamRecord

IDENTITY = "identity/acquire"
CONSENT = "privacy/set-consent"
_ACTIONS = frozenset({"interact", "collect", IDENTITY, CONSENT})
_VERSIONS = frozenset({"v1", "v2"})
PREFLIGHT_SECONDS = 600


def _action(request: Request) -> str:
    """The action of ``[{hint}/]{v1|v2}/{action}``, where an action is ``interact``,
    ``collect``, ``identity/acquire`` or ``privacy/set-consent``; 404 otherwise. The
    location hint is not checked: one region here, served alike. (``/ee/v1/identity/
    acquire`` has the shape of a hinted ``interact``: it is read without a hint first.)"""
    segments = list(request.path_params.values())
    for hinted in (0, 1):
        version, *action = segments[hinted:]
        if version in _VERSIONS and "/".join(action) in _ACTIONS:
            return "/".join(action)
    raise NotFound(
        "no such Edge Network endpoint; use /ee/v1/interact, /ee/v1/collect,"
        " /ee/v1/identity/acquire or /ee/v1/privacy/set-consent"
    )


def _browser(request: Request) -> tuple[str | None, bool]:
    """The ``Origin`` header and whether there is a ``Cookie`` header, in one pass over
    the raw headers (a missing header costs ``Headers.get`` an exception)."""
    origin, cookie = None, False
    for key, value in request.scope["headers"]:
        if key == b"origin":
            origin = value.decode("latin-1")
        elif key == b"cookie":
            cookie = True
    return origin, cookie


def _cors(origin: str | None, datastream: DatastreamRecord) -> dict[str, str]:
    """CORS headers for the request's ``Origin`` (none without one); 403 for an origin
    the datastream does not allow."""
    if origin is None:
        return {}
    if origin not in datastream.allowed_origins:
        raise AuthError(
            403,
            "origin-not-allowed",
            f"origin {origin} is not an allowed origin of datastream {datastream.datastream_id}",
        )
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


#: The datastream's query parameter: the SDK's ``configId``, and the Edge Network Server
#: API's documented spellings (``dataStreamId``, ``datastreamId``).
_CONFIG_IDS = frozenset({b"configId", b"dataStreamId", b"datastreamId"})


def _query(request: Request) -> tuple[str | None, str | None]:
    """The datastream id and ``requestId`` of the query string, read directly: the SDK
    sends exactly these, and a full query parse is a measurable share of a cheap request."""
    config_id = request_id = None
    for pair in request.scope["query_string"].split(b"&"):
        name, _, raw = pair.partition(b"=")
        if name in _CONFIG_IDS or name == b"requestId":
            value = raw.decode("latin-1")
            if "%" in value or "+" in value:
                value = unquote_plus(value)
            if name != b"requestId":
                config_id = config_id or value
            else:
                request_id = request_id or value
    return config_id, request_id


async def _datastream(config_id: str | None, no: NextOffer) -> DatastreamRecord:
    """The datastream ``configId`` names. A datastream id is a UUID, written lower-case
    when minted; a UUID is case-insensitive on input (RFC 9562, section 4), and the SDK
    sends ``datastreamId`` as configured: the id is lower-cased, so one lookup and one
    cache entry serve every spelling."""
    if not config_id:
        raise BadRequest("configId is required (a datastream id)", pointer="configId")
    config_id = config_id.lower()
    found = no.datastreams.cached(config_id)
    if found is None:
        found = await no.run(no.datastreams.resolve, config_id)
    return found


async def edge(request: Request) -> Response:
    config_id, request_id = _query(request)
    request_id = request_id or str(uuid.uuid4())
    no = nextoffer(request)
    cors: dict[str, str] = {}
    try:
        action = _action(request)
        datastream = await _datastream(config_id, no)
        origin, has_cookies = _browser(request)
        cors = _cors(origin, datastream)
        await no.datastreams.admit(datastream)
        body = await body_json(request)
        cookies = request.cookies if has_cookies else {}
        consent = None
        if action == IDENTITY:
            parsed = edge_request.parse_identity(body, cookies=cookies)
        elif action == CONSENT:
            parsed, consent = edge_request.parse_consent(body, cookies=cookies)
            if consent == "out":
                answer = edge_response.opted_out(request_id=request_id, org=datastream.org_id)
                return json_response(answer, headers=cors or None)
        else:
            parsed = edge_request.parse(body, cookies=cookies, collect=action == "collect")
        outcome = await no.edge.interact(datastream, parsed)
    except NextOfferError as exc:
        return edge_response.failure(exc, request_id, cors)
    metrics = request.app.state.metrics
    if metrics is not None:
        for event in outcome.answers:
            if event.outcome is not None:
                metrics.observe_propositions("edge", event.outcome.result.propositions)
    if action == "collect":
        return Response(status_code=204, headers=cors or None)
    answer = edge_response.response(
        outcome,
        request_id=request_id,
        org=datastream.org_id,
        now_seconds=int(no.clock().timestamp()),
        decided={i for i, event in enumerate(parsed.events) if event.scopes},
        consent=consent,
    )
    return json_response(answer, headers=cors or None)


async def preflight(request: Request) -> Response:
    """A browser's CORS preflight (a Server API call from a page with JSON or headers)."""
    config_id, request_id = _query(request)
    request_id = request_id or str(uuid.uuid4())
    try:
        _action(request)
        datastream = await _datastream(config_id, nextoffer(request))
        cors = _cors(_browser(request)[0], datastream)
    except NextOfferError as exc:
        return edge_response.failure(exc, request_id, {})
    if cors:
        cors["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        cors["Access-Control-Allow-Headers"] = request.headers.get(
            "access-control-request-headers", "Content-Type"
        )
        cors["Access-Control-Max-Age"] = str(PREFLIGHT_SECONDS)
    return Response(status_code=204, headers=cors)


#: Also served ahead of the router (``api/shortcut.py``), as the Decisioning API's
#: decisions are: the public requests that must be cheap.
#: ``/ee/{version}/{group}/{action}`` (``/ee/v1/identity/acquire``) is the second route's
#: shape; the third is that with a location hint, as the SDK calls once it has one.
PATHS = (
    "/ee/{version}/{action}",
    "/ee/{locationHint}/{version}/{action}",
    "/ee/{locationHint}/{version}/{group}/{action}",
)
INTERACT = tuple(Route(path, edge, methods=["POST"]) for path in PATHS)

routes = [*INTERACT, *(Route(path, preflight, methods=["OPTIONS"]) for path in PATHS)]

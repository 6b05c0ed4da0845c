"""Writing an Edge Network response (decisioning-api.md §3) and its errors.

``{"requestId", "handle": [...], "warnings": [...]}`` with the handles the Web SDK reads:
``personalization:decisions`` (one payload item per decided scope, the scope echoed as
sent), ``identity:result`` (the ECID), ``state:store`` (the ``kndctr_{org}_identity``
and ``_cluster`` entries the SDK keeps as cookies) and ``locationHint:result``. A fatal
error is the Edge Network's problem detail: ``type``, ``status``, ``title``, ``detail``
and ``report.requestId`` (choices: docs/api.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from starlette.responses import Response

from nextoffer.api.decision_response import first_component
from nextoffer.api.responses import json_response
from nextoffer.engine import FallbackOption, ObjectRef, Option, Proposition
from nextoffer.errors import AuthError, NextOfferError, TooManyRequests
from nextoffer.logs import withheld
from nextoffer.service.ecid import cookie_name, encode_identity
from nextoffer.service.edge import ECID, EdgeOutcome, EdgeWarning, EventAnswer

#: The location hint nextoffer answers with (one region): the SDK then calls
#: ``/ee/{hint}/v1/…``, which is served like ``/ee/v1/…``.
LOCATION_HINT = "nx1"
HINT_SECONDS = 1800
#: How long the SDK keeps the identity cookie (as the Edge Network's sample answer).
IDENTITY_SECONDS = 34_128_000
#: How long the SDK keeps the consent cookie (180 days, as Adobe's cookie table says of
#: its consent-related cookies) [inferred].
CONSENT_SECONDS = 15_552_000
PROBLEMS = "https://nextoffer.dev/problems/edge/"


_LOCATION = {
    "type": "locationHint:result",
    "payload": [{"scope": "EdgeNetwork", "hint": LOCATION_HINT, "ttlSeconds": HINT_SECONDS}],
}


@lru_cache(maxsize=1024)
def _cluster(org: str) -> dict[str, Any]:
    """The location hint's state entry (the same for every answer of an org; not mutated)."""
    return {"key": cookie_name(org, "cluster"), "value": LOCATION_HINT, "maxAge": HINT_SECONDS}


def _ref(ref: ObjectRef) -> dict[str, Any]:
    return {"id": ref.at_id, "etag": str(ref.etag)}


#: Items already written, by offer, etag and representation placement: the same offer
#: is answered to many visitors, and its item depends on nothing else. Bounded.
_ITEMS: dict[tuple[str, int, Any], dict[str, Any]] = {}
_MAX_ITEMS = 10_000


def _item(option: Option | FallbackOption) -> dict[str, Any]:
    representation = option.representation
    key = (
        option.offer_id,
        option.etag,
        representation.get("xdm:placement") if representation is not None else None,
    )
    item = _ITEMS.get(key)
    if item is None:
        if len(_ITEMS) >= _MAX_ITEMS:
            _ITEMS.clear()
        item = _ITEMS[key] = _write_item(option)
    return item


def _write_item(option: Option | FallbackOption) -> dict[str, Any]:
    component = first_component(option.components)
    data: dict[str, Any] = {"id": option.offer_id}
    fmt = component.get("dc:format")
    if fmt is not None:
        data["format"] = fmt
    language = component.get("dc:language")
    data["language"] = list(language) if isinstance(language, list) else []
    for source, target in (
        ("xdm:content", "content"),
        ("xdm:deliveryURL", "deliveryURL"),
        ("xdm:linkURL", "linkURL"),
    ):
        if source in component:
            data[target] = component[source]
    data["characteristics"] = dict(option.characteristics)
    item: dict[str, Any] = {"id": option.offer_id, "etag": str(option.etag)}
    schema = component.get("@type")
    if schema is not None:
        item["schema"] = schema
    item["data"] = data
    return item


def _payload(proposition_id: str, scope: str, proposition: Proposition) -> dict[str, Any]:
    if proposition.options:
        items = [_item(o) for o in proposition.options]
    elif proposition.fallback is not None:
        items = [_item(proposition.fallback)]
    else:
        items = []
    return {
        "id": proposition_id,
        "scope": scope,
        "activity": _ref(proposition.activity),
        "placement": _ref(proposition.placement),
        "items": items,
    }


def _decisions(answer: EventAnswer) -> dict[str, Any]:
    payload = []
    if answer.outcome is not None:
        outcome = answer.outcome
        payload = [
            _payload(outcome.proposition_id, scope.scope, proposition)
            for scope, proposition in zip(answer.scopes, outcome.result.propositions, strict=True)
        ]
    return {
        "type": "personalization:decisions",
        "eventIndex": answer.event_index,
        "payload": payload,
    }


def _warning(warning: EdgeWarning) -> dict[str, Any]:
    return {
        "type": PROBLEMS + warning.code,
        "status": 200,
        "title": warning.title,
        "detail": warning.detail,
        "report": {"eventIndex": warning.event_index},
    }


def response(
    outcome: EdgeOutcome,
    *,
    request_id: str,
    org: str,
    now_seconds: int,
    decided: set[int],
    consent: str | None = None,
) -> dict[str, Any]:
    """The body of an ``interact`` answer; ``decided``: indexes of events that asked for
    decision scopes (each gets a ``personalization:decisions`` handle, empty or not);
    ``consent``: the general consent a ``set-consent`` call set (its state entry)."""
    handle: list[dict[str, Any]] = [
        _decisions(answer) for answer in outcome.answers if answer.event_index in decided
    ]
    identity = encode_identity(
        outcome.ecid, created=now_seconds, is_new=outcome.minted, written=now_seconds
    )
    handle.append(
        {"type": "identity:result", "payload": [{"id": outcome.ecid, "namespace": {"code": ECID}}]}
    )
    handle.append(_LOCATION)
    handle.append(
        {
            "type": "state:store",
            "payload": [
                {
                    "key": cookie_name(org, "identity"),
                    "value": identity,
                    "maxAge": IDENTITY_SECONDS,
                },
                _cluster(org),
                *([] if consent is None else [_consent(org, consent)]),
            ],
        }
    )
    body: dict[str, Any] = {"requestId": request_id, "handle": handle}
    if outcome.warnings:
        body["warnings"] = [_warning(w) for w in outcome.warnings]
    return body


def opted_out(*, request_id: str, org: str) -> dict[str, Any]:
    """The answer to a ``set-consent`` that opts out: the consent entry alone. No identity
    is made for a visitor who refused collection (a known one keeps its cookie)."""
    return {
        "requestId": request_id,
        "handle": [{"type": "state:store", "payload": [_consent(org, "out")]}],
    }


def _consent(org: str, general: str) -> dict[str, Any]:
    """The consent state entry, as the SDK parses it (``general=in``)."""
    return {
        "key": cookie_name(org, "consent"),
        "value": f"general={general}",
        "maxAge": CONSENT_SECONDS,
    }


def problem(exc: NextOfferError, *, request_id: str) -> Mapping[str, Any]:
    """A fatal error as the Edge Network reports one."""
    slug = "".join(f"-{c.lower()}" if c.isupper() else c for c in type(exc).__name__).lstrip("-")
    body: dict[str, Any] = {
        "type": PROBLEMS + slug,
        "status": exc.status,
        "title": exc.title,
        "detail": exc.detail,
        "report": {"requestId": request_id},
    }
    if exc.pointer is not None:
        body["report"]["pointer"] = exc.pointer
    return body


def failure(exc: NextOfferError, request_id: str, cors: Mapping[str, str]) -> Response:
    """The answer to a request that failed: :func:`problem`, with ``cors``' headers."""
    withheld(exc)
    headers = dict(cors)
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    status = exc.http_status if isinstance(exc, AuthError) else exc.status
    body = dict(problem(exc, request_id=request_id))
    body["status"] = status
    if isinstance(exc, AuthError):  # the only one here: an origin the datastream refuses
        body["title"] = "Forbidden"
        body["type"] = PROBLEMS + exc.error_code
    return json_response(
        body, status=status, media_type="application/problem+json", headers=headers
    )

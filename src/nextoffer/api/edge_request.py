"""Reading an Edge Network request body as the Web SDK and the Server API send it.

``{"events": [{"xdm": {…}, "query": {"personalization": {"decisionScopes": […]}}}],
"query": {…}, "meta": {"state": {"entries": [{"key", "value"}]}, "konductorConfig": …}}``.
The Server API's documented interact body holds one ``event`` instead of ``events``.
A top-level ``query`` applies to every event (Journey Optimizer's examples put it there,
the Web SDK puts it in each event). The SDK's state comes back in ``meta.state.entries``
(third-party context) or as cookies (first-party): both are read, the entries last.
Shape errors are :class:`~nextoffer.errors.BadRequest` naming the member.

The SDK's two other calls carry no events: ``identity/acquire`` (its ``getIdentity``
before any event: ``{"query": {"identity": {"fetch": […]}}, "xdm": {"identityMap"}?}``)
and ``privacy/set-consent`` (its ``setConsent``: ``{"consent": [{"standard",
"version", "value", "gdprApplies"?}], "identityMap"?}``, of the Adobe or the IAB TCF
standard). Each is read as a request without events whose identity map, when sent, is
the visitor's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jsonpointer import escape

from nextoffer.engine.request import MAX_PROPOSITION_REQUESTS
from nextoffer.errors import BadRequest, PayloadTooLarge
from nextoffer.service.edge import EdgeEvent, EdgeRequest
from nextoffer.service.edge_tcf import TCStringError, decode_tc_string
from nextoffer.service.events import PROPOSITIONS_XDM

#: Events in one call (the Web SDK sends one; batches of collected events more).
MAX_EVENTS = 100
#: State entries read from ``meta.state`` (the SDK sends a handful).
MAX_STATE_ENTRIES = 50
#: Propositions a display or click event may name, and a request in all (the SDK names
#: those one page showed): each is looked up among the recorded decisions while the
#: event's write transaction is open, so a public body of 40,000 stalled every decision
#: recorded meanwhile for seconds.
MAX_PROPOSITIONS = 100
MAX_REQUEST_PROPOSITIONS = 1000


def _scopes(query: Any, pointer: str) -> list[str]:
    if query is None:
        return []
    if not isinstance(query, dict):
        raise BadRequest("query must be an object", pointer=pointer)
    personalization = query.get("personalization")
    if personalization is None:
        return []
    if not isinstance(personalization, dict):
        raise BadRequest("personalization must be an object", pointer=f"{pointer}/personalization")
    scopes = personalization.get("decisionScopes", [])
    where = f"{pointer}/personalization/decisionScopes"
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise BadRequest("decisionScopes must be an array of strings", pointer=where)
    return scopes


def _state(meta: Any, cookies: Mapping[str, str]) -> dict[str, str]:
    state = {name: value for name, value in cookies.items() if name.startswith("kndctr_")}
    if meta is None:
        return state
    if not isinstance(meta, dict):
        raise BadRequest("meta must be an object", pointer="/meta")
    found = meta.get("state")
    entries = found.get("entries") if isinstance(found, dict) else None
    if entries is None:
        return state
    if not isinstance(entries, list) or len(entries) > MAX_STATE_ENTRIES:
        raise BadRequest(
            f"meta.state.entries must be an array of at most {MAX_STATE_ENTRIES} entries",
            pointer="/meta/state/entries",
        )
    for entry in entries:
        if isinstance(entry, dict):
            key, value = entry.get("key"), entry.get("value")
            if isinstance(key, str) and isinstance(value, str):
                state[key] = value
    return state


def _propositions(xdm: Mapping[str, Any], pointer: str) -> int:
    """How many propositions the event names, where the events use case reads them
    (``service.events.propositions``); 413 past :data:`MAX_PROPOSITIONS`."""
    found, where = xdm.get(PROPOSITIONS_XDM), f"{pointer}/{escape(PROPOSITIONS_XDM)}"
    if found is None:
        web = xdm.get("_experience")
        decisioning = web.get("decisioning") if isinstance(web, dict) else None
        found = decisioning.get("propositions") if isinstance(decisioning, dict) else None
        where = f"{pointer}/_experience/decisioning/propositions"
    count = len(found) if isinstance(found, list) else 0
    if count > MAX_PROPOSITIONS:
        raise PayloadTooLarge(
            f"at most {MAX_PROPOSITIONS} propositions named per event", pointer=where
        )
    return count


def _events(body: Mapping[str, Any]) -> tuple[list[Any], Callable[[int], str]]:
    """The events, and the pointer of each: ``events``, or the one ``event`` of the Edge
    Network Server API's documented interact request (``{"event": {"xdm", "data"}}``)."""
    if "events" not in body and isinstance(body.get("event"), dict):
        return [body["event"]], lambda _: "/event"
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise BadRequest("events must be a non-empty array of events", pointer="/events")
    if len(events) > MAX_EVENTS:
        raise PayloadTooLarge(f"at most {MAX_EVENTS} events per request", pointer="/events")
    return events, lambda index: f"/events/{index}"


def parse(body: Any, *, cookies: Mapping[str, str], collect: bool) -> EdgeRequest:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    events, pointers = _events(body)
    shared = _scopes(body.get("query"), "/query")
    parsed = []
    named = 0
    for index, event in enumerate(events):
        where = pointers(index)
        if not isinstance(event, dict):
            raise BadRequest("an event must be an object", pointer=where)
        xdm = event.get("xdm", {})
        if not isinstance(xdm, dict):
            raise BadRequest("xdm must be an object", pointer=f"{where}/xdm")
        named += _propositions(xdm, f"{where}/xdm")
        if named > MAX_REQUEST_PROPOSITIONS:
            raise PayloadTooLarge(
                f"at most {MAX_REQUEST_PROPOSITIONS} propositions named per request",
                pointer="/events",
            )
        scopes = _scopes(event.get("query"), f"{where}/query")
        if shared or len(scopes) > 1:
            scopes = list(dict.fromkeys([*scopes, *shared]))
        if len(scopes) > MAX_PROPOSITION_REQUESTS:
            raise BadRequest(
                f"at most {MAX_PROPOSITION_REQUESTS} decision scopes per request",
                pointer=f"{where}/query/personalization/decisionScopes",
            )
        data = event.get("data")
        if data is not None and not isinstance(data, dict):
            raise BadRequest("data must be an object", pointer=f"{where}/data")
        parsed.append(EdgeEvent(xdm=xdm, scopes=tuple(scopes), data=data))
    return EdgeRequest(
        events=tuple(parsed), state=_state(body.get("meta"), cookies), collect=collect
    )


#: The consent standards read, and how each one's ``value`` says "collect" (Adobe's
#: Web SDK documentation: ``{"general": "in"}`` in 1.0, ``{"collect": {"val": "y"}}``
#: in 2.0; XDM's consent values ``y``/``dy`` allow, ``n``/``dn`` deny, others wait).
_ADOBE_VERSIONS = frozenset({"1.0", "2.0"})
_COLLECT = {"y": "in", "dy": "in", "n": "out", "dn": "out", "p": "pending", "u": "pending"}
_GENERAL = frozenset({"in", "out", "pending"})
#: The IAB standard's name, and the versions read: TCF 2.x (2.1 and 2.2 strings are
#: version 2 too; the SDK's documented entry says "2.0").
_TCF = "IAB TCF"
_TCF_VERSIONS = frozenset({"2.0", "2.1", "2.2"})


def parse_identity(body: Any, *, cookies: Mapping[str, str]) -> EdgeRequest:
    """``identity/acquire``: no events; ``xdm.identityMap`` when the SDK sends one."""
    body = _object(body)
    xdm = body.get("xdm")
    identity_map = xdm.get("identityMap") if isinstance(xdm, dict) else None
    return _identify(identity_map, body.get("meta"), cookies)


def parse_consent(body: Any, *, cookies: Mapping[str, str]) -> tuple[EdgeRequest, str]:
    """``privacy/set-consent``: the request, and the general consent it sets (``in``,
    ``out`` or ``pending``), read from the last Adobe-standard entry; without one, from
    the last IAB TCF entry (a site with a CMP sends only that). An IAB TCF entry beside
    an Adobe one is the CMP's record and is not read."""
    body = _object(body)
    entries = body.get("consent")
    if not isinstance(entries, list) or not entries:
        raise BadRequest("consent must be a non-empty array of preferences", pointer="/consent")
    adobe = tcf = None
    for index, entry in enumerate(entries):
        standard = entry.get("standard") if isinstance(entry, dict) else None
        if standard == "Adobe":
            adobe = (entry, index)
        elif standard == _TCF:
            tcf = (entry, index)
    if adobe is not None:
        general = _adobe_consent(adobe[0], f"/consent/{adobe[1]}")
    elif tcf is not None:
        general = _tcf_consent(tcf[0], f"/consent/{tcf[1]}")
    else:
        raise BadRequest(
            'consent needs an entry of the "Adobe" standard (version 1.0 or 2.0) or of the'
            ' "IAB TCF" standard (version 2.0)',
            pointer="/consent",
        )
    # Only consent given lets the identity map be read (a new visitor's profile made):
    # while it is pending, nothing of the visitor is kept.
    identity_map = body.get("identityMap") if general == "in" else None
    return _identify(identity_map, body.get("meta"), cookies), general


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    return body


def _identify(identity_map: Any, meta: Any, cookies: Mapping[str, str]) -> EdgeRequest:
    """A request without events; an identity map sent with it is read as a bare event's
    (the visitor's ECID; a new visitor's profile), and decides nothing."""
    events = () if identity_map is None else (EdgeEvent(xdm={"identityMap": identity_map}),)
    return EdgeRequest(events=events, state=_state(meta, cookies), collect=True)


def _adobe_consent(entry: Mapping[str, Any], pointer: str) -> str:
    version, value = entry.get("version"), entry.get("value")
    # ``isinstance`` first: a set's ``in`` raises on an unhashable value (a list, an object).
    if (
        not isinstance(version, str)
        or version not in _ADOBE_VERSIONS
        or not isinstance(value, dict)
    ):
        raise BadRequest(
            "an Adobe consent entry is version 1.0 or 2.0 with an object value",
            pointer=pointer,
        )
    if version == "1.0":
        general = value.get("general")
        if isinstance(general, str) and general in _GENERAL:
            return general
        raise BadRequest('general must be "in", "out" or "pending"', pointer=f"{pointer}/value")
    collect = value.get("collect")
    found = collect.get("val") if isinstance(collect, dict) else None
    if isinstance(found, str) and found in _COLLECT:
        return _COLLECT[found]
    raise BadRequest(
        f"collect.val must be one of {sorted(_COLLECT)}", pointer=f"{pointer}/value/collect/val"
    )


def _tcf_consent(entry: Mapping[str, Any], pointer: str) -> str:
    """An IAB TCF 2 entry's general consent: ``in`` when its TC string consents to what
    Adobe's Edge Network needs (``service/edge_tcf.py``), else ``out``. ``gdprApplies``
    is true unless sent false (Adobe's default); false is ``in``: the TC string's
    signals do not apply (Adobe's guide sets consent ``in`` where GDPR does not apply)."""
    version, value, applies = entry.get("version"), entry.get("value"), entry.get("gdprApplies")
    if not isinstance(version, str) or version not in _TCF_VERSIONS or not isinstance(value, str):
        raise BadRequest(
            "an IAB TCF consent entry is version 2.0 with a TC string value", pointer=pointer
        )
    if applies is not None and not isinstance(applies, bool):
        raise BadRequest("gdprApplies must be a boolean", pointer=f"{pointer}/gdprApplies")
    if applies is False:
        return "in"
    try:
        consent = decode_tc_string(value)
    except TCStringError as exc:
        raise BadRequest(f"malformed TC string: {exc}", pointer=f"{pointer}/value") from exc
    return "in" if consent.collect() else "out"

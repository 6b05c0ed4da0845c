"""The Edge Network use case: one ``interact`` or ``collect`` call of a datastream.

For each experience event of the call, in order:

1. The visitor: the event's identity map (its primary identity decides) with the ECID
   added — the ECID the SDK sent back in its identity state (cookie or ``meta.state``),
   else one minted now (``service/ecid.py``).
2. The event itself is stored for the profile through :class:`~nextoffer.service.events.Events`
   (created if new), so rules see it through ``xEvent`` and feedback counts — display and
   click events exactly as ``/data/core/nextoffer/events`` counts them, once per ``_id``.
   An event that carries nothing but identities and a query stores nothing, unless its
   ECID was minted now (the new visitor's profile is created with it).
3. Its decision scopes are decided in one call of the decision path
   (:meth:`~nextoffer.service.decisions.Decisions.decide_async`): one proposition id for
   all scopes of the event, as the Edge Network answers. A malformed scope, or one the
   catalog refuses, becomes a warning and the others are decided; scopes that are not
   decision scopes get nothing.

The answer (:class:`EdgeOutcome`) is shaped into the Edge Network's response by
``api/edge_response.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from nextoffer.engine import DecisionRequest, PropositionRequest
from nextoffer.engine.request import resolve
from nextoffer.errors import NextOfferError, NotFound, Unavailable, Unprocessable
from nextoffer.ids import format_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.catalogs import Snapshot
from nextoffer.service.decisions import DecisionCall, DecisionOutcome, Decisions
from nextoffer.service.ecid import cookie_name, decode_identity, mint_ecid
from nextoffer.service.events import Events
from nextoffer.service.identities import MAX_IDENTITY, parse_identity_map
from nextoffer.service.scopes import DecisionScope, ScopeError, decode_scope
from nextoffer.storage.session import DatastreamRecord

__all__ = ["ECID", "Edge", "EdgeEvent", "EdgeOutcome", "EdgeRequest", "EdgeWarning", "EventAnswer"]

ECID = "ECID"
#: The members of an event's ``xdm`` that are not worth storing on their own.
_BARE = frozenset({"identityMap", "timestamp", "_id"})


@dataclass(frozen=True, slots=True)
class EdgeEvent:
    xdm: Mapping[str, Any]
    #: ``query.personalization.decisionScopes`` as sent.
    scopes: Sequence[str] = ()
    #: The event's free-form ``data`` (``__adobe.ajo.dryRun`` suppresses its feedback).
    data: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EdgeRequest:
    events: Sequence[EdgeEvent]
    #: State entries the SDK sent back: ``meta.state.entries`` and cookies, by name.
    state: Mapping[str, str] = field(default_factory=dict)
    #: ``collect``: store and count, decide nothing.
    collect: bool = False


@dataclass(frozen=True, slots=True)
class EdgeWarning:
    """A problem with part of a request that did not stop the rest (Edge's ``warnings``)."""

    code: str
    title: str
    detail: str
    event_index: int


@dataclass(frozen=True, slots=True)
class EventAnswer:
    event_index: int
    #: The decided scopes, in request order, with the one outcome that decided them.
    scopes: tuple[DecisionScope, ...] = ()
    outcome: DecisionOutcome | None = None


@dataclass(frozen=True, slots=True)
class EdgeOutcome:
    ecid: str
    minted: bool
    answers: tuple[EventAnswer, ...]
    warnings: tuple[EdgeWarning, ...]


class Edge:
    def __init__(
        self,
        *,
        decisions: Decisions,
        events: Events,
        run: Callable[..., Awaitable[Any]],
        clock: Callable[[], datetime],
    ) -> None:
        self._decisions = decisions
        self._events = events
        self._run = run
        self._clock = clock

    async def interact(self, datastream: DatastreamRecord, request: EdgeRequest) -> EdgeOutcome:
        principal = _principal(datastream.org_id, datastream.sandbox, datastream.datastream_id)
        ecid, minted = self._ecid(datastream, request)
        warnings: list[EdgeWarning] = []
        answers: list[EventAnswer] = []
        for index, event in enumerate(request.events):
            identities = self._identities(event, ecid, index)
            if identities is None:
                warnings.append(
                    EdgeWarning(
                        "invalid-identity-map",
                        "Invalid identity map",
                        "the event's identityMap is malformed; the ECID alone was used",
                        index,
                    )
                )
                identities = [(ECID, ecid)]
            # A new visitor's first event is stored even when bare: it creates the
            # profile, so decisions and feedback count under one key from the start.
            if _worth_storing(event.xdm) or (minted and index == 0):
                warnings.extend(await self._store(principal, event, identities, index))
            if request.collect or not event.scopes:
                answers.append(EventAnswer(index))
                continue
            answers.append(
                await self._decide(principal, datastream, event, identities, index, warnings)
            )
        return EdgeOutcome(ecid, minted, tuple(answers), tuple(warnings))

    @staticmethod
    def _ecid(datastream: DatastreamRecord, request: EdgeRequest) -> tuple[str, bool]:
        """The visitor's ECID: sent in an identity map, else in the identity state, else new."""
        for event in request.events:
            identity_map = event.xdm.get("identityMap")
            entries = identity_map.get(ECID) if isinstance(identity_map, Mapping) else None
            for entry in entries if isinstance(entries, list) else []:
                value = entry.get("id") if isinstance(entry, Mapping) else None
                # The caller's word, whatever its form, if it can be an identity at all.
                if isinstance(value, str) and 0 < len(value) <= MAX_IDENTITY:
                    return value, False
        state = request.state.get(cookie_name(datastream.org_id, "identity"))
        if state is not None:
            found = decode_identity(state)
            if found is not None:
                return found, False
        return mint_ecid(), True

    @staticmethod
    def _identities(event: EdgeEvent, ecid: str, index: int) -> list[tuple[str, str]] | None:
        """The event's identities, the primary one first, the ECID added when absent."""
        identity_map = event.xdm.get("identityMap")
        if identity_map is None:
            return [(ECID, ecid)]
        try:
            found = parse_identity_map(identity_map, pointer=f"/events/{index}/xdm/identityMap")
        except Unprocessable:
            return None
        if len(found) > 1:
            primary = next(
                (
                    # As parse_identity_map reads it: ``xdm:id`` before ``id``.
                    (namespace, entry.get("xdm:id", entry.get("id")))
                    for namespace, entries in identity_map.items()
                    for entry in entries
                    if isinstance(entry, Mapping) and entry.get("primary") is True
                ),
                None,
            )
            if primary in found:
                found.remove(primary)
                found.insert(0, primary)
        if not any(namespace == ECID for namespace, _ in found):
            found.append((ECID, ecid))
        return found

    async def _store(
        self,
        principal: Principal,
        event: EdgeEvent,
        identities: Sequence[tuple[str, str]],
        index: int,
    ) -> list[EdgeWarning]:
        stored: dict[str, Any] = dict(event.xdm)
        if event.data is not None:
            stored["data"] = event.data
        identity_map: dict[str, list[dict[str, str]]] = {}
        for namespace, identity in identities:
            identity_map.setdefault(namespace, []).append({"id": identity})
        stored["identityMap"] = identity_map
        if not isinstance(stored.get("timestamp"), str):
            stored["timestamp"] = format_datetime(self._clock())
        try:
            outcomes = await self._run(self._events.append, principal, {"events": [stored]})
        except Unavailable as exc:  # decided all the same, from the last snapshot
            detail = f"{exc.detail}: the event was not stored; decisions went on without it"
            return [EdgeWarning("event-not-stored", "Event not stored", detail, index)]
        return [
            EdgeWarning("event-rejected", "Event not stored", o.detail or "rejected", index)
            for o in outcomes
            if o.status == "rejected"
        ]

    async def _decide(
        self,
        principal: Principal,
        datastream: DatastreamRecord,
        event: EdgeEvent,
        identities: Sequence[tuple[str, str]],
        index: int,
        warnings: list[EdgeWarning],
    ) -> EventAnswer:
        container_id = datastream.container_id
        scopes: list[DecisionScope] = []
        for scope in event.scopes:
            try:
                decoded = decode_scope(scope)
            except ScopeError as exc:
                warnings.append(_scope_warning(scope, str(exc), index))
                continue
            if decoded is not None:  # else not a decision scope: nothing, and no warning
                scopes.append(decoded)
        if not scopes:
            return EventAnswer(index)
        # The primary identity decides (one indexed read, as on the Decisioning API).
        identity = list(identities[:1])
        try:
            outcome = await self._decisions.decide_async(
                principal, container_id, _call(scopes, identity)
            )
        except (NotFound, Unprocessable):
            # A scope the catalog refuses (unknown, not live, not covering the placement):
            # find which with the engine's own check, warn, and decide the others.
            snapshot = await self._decisions.snapshot_async(principal, container_id)
            kept = []
            for decoded in scopes:
                problem = _refused(snapshot, decoded)
                if problem is None:
                    kept.append(decoded)
                else:
                    warnings.append(_scope_warning(decoded.scope, problem, index))
            if len(kept) == len(scopes):
                raise
            scopes = kept
            if not scopes:
                return EventAnswer(index)
            outcome = await self._decisions.decide_async(
                principal, container_id, _call(scopes, identity)
            )
        return EventAnswer(index, tuple(scopes), outcome)


def _call(scopes: Sequence[DecisionScope], identities: Sequence[tuple[str, str]]) -> DecisionCall:
    return DecisionCall(
        propositions=tuple(
            PropositionRequest(s.activity_id, s.placement_id, s.item_count) for s in scopes
        ),
        identities=identities,
    )


@lru_cache(maxsize=1024)
def _principal(org: str, sandbox: str, datastream_id: str) -> Principal:
    """Who an Edge call acts as: the datastream, in its org and sandbox."""
    return Principal(org=org, sandbox=sandbox, client_id=f"datastream:{datastream_id}", user="edge")


def _worth_storing(xdm: Mapping[str, Any]) -> bool:
    return any(key not in _BARE for key in xdm)


def _scope_warning(scope: str, detail: str, index: int) -> EdgeWarning:
    return EdgeWarning(
        "invalid-decision-scope",
        "Invalid decision scope",
        f"decision scope {json.dumps(scope[:100], ensure_ascii=False)}: {detail}",
        index,
    )


def _refused(snapshot: Snapshot, scope: DecisionScope) -> str | None:
    """Why the catalog refuses the scope (the engine's own check), or ``None``."""
    try:
        resolve(
            snapshot.catalog,
            DecisionRequest(
                propositions=(
                    PropositionRequest(scope.activity_id, scope.placement_id, scope.item_count),
                ),
                profile={},
            ),
        )
    except NextOfferError as exc:
        return exc.detail
    return None

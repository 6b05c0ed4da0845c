"""Experience events: stored for the profile they name, and counted as capping feedback.

Every event is appended to its profile (PQL ``xEvent`` reads it). Proposition feedback —
``decisioning.propositionDisplay`` (an impression) and ``decisioning.propositionInteract``
(a click) carrying ``https://ns.adobe.com/experience/decisioning/propositions`` (or the Web
SDK's ``_experience.decisioning.propositions``) — is tied to the decision event it names
and counts at once for the capping rules of the offers it names, and for the offers
report. A proposition named without ``items`` (as the Web SDK sends its display and
click events: ``id``, ``scope``, ``scopeDetails``) counts for the offers that proposition
held — those of its scope, or of the whole decision when the scope names no activity
and placement. Feedback on a proposition that a ranking strategy ranked trains that
strategy (``service/learning.py``), in the transaction that stores the event: only the
strategy of the scope the event names, and once per display and success. Events
matching an offer's custom capping query count for that rule. An event
with the ``__adobe.ajo.dryRun`` flag is stored but counts for nothing; an event for an
unknown proposition is stored and counts for nothing; an event whose ``_id`` was seen
before is stored and counted once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from nextoffer import pql
from nextoffer.engine.frequency import CapEvent
from nextoffer.errors import (
    BadRequest,
    Conflict,
    NextOfferError,
    PayloadTooLarge,
    PQLError,
    Unprocessable,
)
from nextoffer.ids import epoch_micros, format_datetime, parse_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.caps import counter_key
from nextoffer.service.catalogs import CatalogCache
from nextoffer.service.identities import parse_identity_map
from nextoffer.service.learning import Gathered, Learning
from nextoffer.service.profiles import resolve_profile_id
from nextoffer.service.scopes import ScopeError, decode_scope
from nextoffer.storage.counters import CapCounterStore, CounterKey
from nextoffer.storage.runtime import Runtime
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

log = logging.getLogger("nextoffer.events")

#: Events accepted in one request.
MAX_EVENTS_PER_REQUEST = 1000
PROPOSITIONS_XDM = "https://ns.adobe.com/experience/decisioning/propositions"
FEEDBACK = {
    "decisioning.propositionDisplay": CapEvent.IMPRESSION,
    "decisioning.propositionInteract": CapEvent.CLICK,
}


@dataclass(frozen=True, slots=True)
class EventOutcome:
    index: int
    status: str  # "stored" | "duplicate" | "rejected"
    detail: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Stored:
    event: Mapping[str, Any]
    moment: datetime
    #: The counters' profile scope: the profile, or the identity a decision counted under.
    profile_id: str
    event_type: str | None


def _dry_run(event: Mapping[str, Any]) -> bool:
    flag: Any = event.get("data")
    for key in ("__adobe", "ajo", "dryRun"):
        flag = flag.get(key) if isinstance(flag, Mapping) else None
    return flag is True


def _offer_id(value: Any) -> str | None:
    """Feedback may name an offer ``personalized-offer:…`` (Adobe's sample) or in full."""
    if not isinstance(value, str) or not value:
        return None
    return value if value.startswith(("xcore:", "dps:")) else f"xcore:{value}"


@dataclass(frozen=True, slots=True)
class Named:
    """One proposition a feedback event names: its id, the offers it names (``None``:
    every offer the proposition held) and its scope (the Edge Network's, when given)."""

    proposition_id: str
    offer_ids: list[str] | None
    scope: str | None = None


def propositions(event: Mapping[str, Any]) -> Iterator[Named]:
    """Each proposition the feedback names."""
    found = event.get(PROPOSITIONS_XDM)
    web = event.get("_experience")
    if found is None and isinstance(web, Mapping):
        decisioning = web.get("decisioning")
        found = decisioning.get("propositions") if isinstance(decisioning, Mapping) else None
    for item in found if isinstance(found, list) else []:
        if not isinstance(item, Mapping):
            continue
        proposition_id = item.get("xdm:id", item.get("id"))
        if not isinstance(proposition_id, str) or not proposition_id:
            continue
        offers = item.get("xdm:items", item.get("items"))
        scope = item.get("xdm:scope", item.get("scope"))
        ids = (
            None
            if offers is None
            else [
                offer_id
                for entry in (offers if isinstance(offers, list) else [])
                if isinstance(entry, Mapping)
                and (offer_id := _offer_id(entry.get("xdm:id", entry.get("id"))))
            ]
        )
        if ids is None or ids:
            yield Named(proposition_id, ids, scope if isinstance(scope, str) else None)


def _scope_of(scope: str | None) -> tuple[str, str] | None:
    """The (activity, placement) a feedback event's decision scope names, if it names
    one (the Web SDK's ``__view__`` and other scopes do not)."""
    if scope is None:
        return None
    try:
        decoded = decode_scope(scope)
    except ScopeError:
        return None
    return None if decoded is None else (decoded.activity_id, decoded.placement_id)


def _held(decision: Mapping[str, Any], scope: str | None) -> list[str]:
    """The offers a recorded decision proposed for ``scope`` (every scope when it names
    no activity and placement)."""
    wanted = _scope_of(scope)
    return [
        option["id"]
        for p in decision.get("propositions", [])
        if wanted is None or (p.get("activity"), p.get("placement")) == wanted
        for option in p.get("options", [])
    ]


def _decided_for(runtime: Runtime, event: Mapping[str, Any], tenant: set[str]) -> str | None:
    """The profile a feedback event's decision was made for, or — when it decided for an
    identity with no profile — the key its counters used, so the event lands with them.
    Only decisions of the caller's containers (``tenant``) count."""
    for named in propositions(event):
        found = runtime.decision_event_anywhere(named.proposition_id)
        if found is not None and found[0] in tenant:
            key = found[1].get("profileId") or found[1].get("profileKey")
            if isinstance(key, str) and key:
                return key
    return None


#: The longest ``_id`` and ``eventType`` an event may carry (XDM's string fields have no
#: bound; the events table's columns have this one, on every backend alike).
MAX_EVENT_TEXT = 255
#: Names the stored events of an identity that has no profile (uuid5 of its counter key).
_IDENTITY_EVENTS = uuid.UUID("6f1b1c2e-2f5e-4d0a-9a57-2b8f3c0e5d11")


@lru_cache(maxsize=1024)
def _query(source: str) -> pql.CompiledRule:
    """A custom capping query, compiled once per process (queries were checked on save)."""
    return pql.compile(source, kind="rule")


class Events:
    def __init__(
        self,
        store: Store,
        *,
        counters: CapCounterStore,
        catalogs: CatalogCache,
        clock: Callable[[], datetime],
        learning: Learning | None = None,
    ) -> None:
        self._store = store
        self._counters = counters
        self._catalogs = catalogs
        self._clock = clock
        self._learning = learning or Learning(store)

    def append(self, principal: Principal, body: Any) -> list[EventOutcome]:
        """Store each valid event and report each invalid one; then count the stored ones."""
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise BadRequest('the body must be {"events": [...]}', pointer="/events")
        events = body["events"]
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise PayloadTooLarge(
                f"at most {MAX_EVENTS_PER_REQUEST} events per request", pointer="/events"
            )
        now = self._clock()
        stamp = format_datetime(now)

        def write(session: Session) -> tuple[list[EventOutcome], list[CounterKey], Gathered]:
            outcomes: list[EventOutcome] = []
            stored: list[_Stored] = []
            gathered = Gathered()
            runtime = session.runtime
            tenant = {
                c.container_id
                for c in session.list_containers(org_id=principal.org, sandbox=principal.sandbox)
            }
            for index, event in enumerate(events):
                try:
                    outcome, kept = self._append(
                        runtime, principal, index, event, stamp, now, tenant
                    )
                except (Unprocessable, Conflict) as exc:
                    outcome, kept = EventOutcome(index, "rejected", exc.detail), None
                outcomes.append(outcome)
                if kept is not None:
                    stored.append(kept)
            # Counted in the transaction that stored them: an event is stored and counted
            # once, or neither (cap counters too, when they are rows of this database).
            keys = self._count(session, principal, stored, gathered)
            if keys and self._counters.add_in(session, keys):
                keys = []
            return outcomes, keys, gathered

        outcomes, keys, gathered = self._store.write(write)
        self._learning.written(gathered)
        if keys:
            try:
                self._counters.add(keys)
            except NextOfferError as exc:
                log.error("feedback not counted: %s", exc)
        return outcomes

    def _append(
        self,
        runtime: Runtime,
        principal: Principal,
        index: int,
        event: Any,
        stamp: str,
        now: datetime,
        tenant: set[str],
    ) -> tuple[EventOutcome, _Stored | None]:
        where = f"/events/{index}"
        if not isinstance(event, dict):
            raise Unprocessable("an event must be a JSON object", pointer=where)
        raw_time = event.get("timestamp", event.get("xdm:timestamp"))
        try:
            moment = parse_datetime(raw_time) if isinstance(raw_time, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise Unprocessable(
                "timestamp must be an RFC 3339 date-time", pointer=f"{where}/timestamp"
            )
        event_id = event.get("_id", event.get("@id"))
        if event_id is None:
            event_id = str(uuid.uuid4())
        elif not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_TEXT:
            raise Unprocessable(
                f"_id must be a string of 1 to {MAX_EVENT_TEXT} characters", pointer=f"{where}/_id"
            )
        event_type = event.get("eventType", event.get("xdm:eventType"))
        if event_type is not None and (
            not isinstance(event_type, str) or len(event_type) > MAX_EVENT_TEXT
        ):
            raise Unprocessable(
                f"eventType must be a string of up to {MAX_EVENT_TEXT} characters",
                pointer=f"{where}/eventType",
            )
        profile_id = self._profile_of(runtime, principal, event, where, stamp, tenant)
        # A profile id, or an identity's counter key (``identity:ns:id``), stored under a
        # stable id of that identity: the events table holds profile ids.
        stored_under = (
            profile_id if len(profile_id) <= 36 else str(uuid.uuid5(_IDENTITY_EVENTS, profile_id))
        )
        stored = runtime.insert_event(
            principal.org,
            principal.sandbox,
            stored_under,
            event_id=event_id,
            event_type=event_type,
            timestamp=format_datetime(moment),
            timestamp_us=epoch_micros(moment),
            body=event,
        )
        if not stored:
            return EventOutcome(index, "duplicate", None, event_id), None
        # Feedback from the future counts now; counting never runs ahead of the clock.
        counted_at = min(moment, now)
        return EventOutcome(index, "stored", None, event_id), _Stored(
            event, counted_at, profile_id, event_type
        )

    def _profile_of(
        self,
        runtime: Runtime,
        principal: Principal,
        event: dict[str, Any],
        where: str,
        stamp: str,
        tenant: set[str],
    ) -> str:
        """The profile the identity map names (created if new), or the one the feedback's
        decision was made for when the event has no identity map (Adobe's feedback samples
        carry none) or when its identities name no profile (the decision was made for an
        identity without one: its counters stay under that identity)."""
        if event.get("identityMap") is None:
            decided = _decided_for(runtime, event, tenant)
            if decided is not None:
                return decided
        identities = parse_identity_map(event.get("identityMap"), pointer=f"{where}/identityMap")
        profile_id = resolve_profile_id(runtime, principal, identities, lock="key share")
        if profile_id is None:
            decided = _decided_for(runtime, event, tenant)
            if decided is not None:
                return decided
            # Events may arrive before any profile upsert, as with Adobe's profile store.
            profile_id = str(uuid.uuid4())
            runtime.insert_profile(principal.org, principal.sandbox, profile_id, {}, now=stamp)
            runtime.add_identities(principal.org, principal.sandbox, profile_id, identities)
        return profile_id

    def _count(
        self, session: Session, principal: Principal, stored: list[_Stored], gathered: Gathered
    ) -> list[CounterKey]:
        """Count the stored events: report rows and ranking statistics in ``session``; the
        cap counters they add to are returned."""
        keys: list[CounterKey] = []
        runtime = session.runtime
        containers = [
            c.container_id
            for c in session.list_containers(org_id=principal.org, sandbox=principal.sandbox)
        ]
        for item in stored:
            if _dry_run(item.event):
                continue
            kind = FEEDBACK.get(item.event_type or "")
            keys.extend(self._feedback(runtime, set(containers), item, kind, gathered))
            for container_id in containers:
                keys.extend(self._custom(container_id, item))
        self._learning.write(session, gathered)
        return keys

    def _feedback(
        self,
        runtime: Runtime,
        tenant: set[str],
        item: _Stored,
        kind: CapEvent | None,
        gathered: Gathered,
    ) -> list[CounterKey]:
        """Impressions and clicks of the propositions an event names (``kind``), and the
        feedback of any event type on what ranking strategies ranked."""
        keys: list[CounterKey] = []
        seen: set[tuple[str, str]] = set()  # (proposition, offer): each counts once an event
        for named in propositions(item.event):
            found = runtime.decision_event_anywhere(named.proposition_id)
            if found is None:
                continue  # an unknown proposition: stored, counts for nothing
            container_id, decision = found
            if container_id not in tenant:
                continue  # another tenant's proposition is as unknown as a missing one
            offer_ids = named.offer_ids
            if offer_ids is None:
                offer_ids = _held(decision, named.scope)
            # A proposition named again in one event (a public body can repeat one id
            # thousands of times) adds nothing more.
            offer_ids = [
                o for o in dict.fromkeys(offer_ids) if (named.proposition_id, o) not in seen
            ]
            seen.update((named.proposition_id, o) for o in offer_ids)
            if not offer_ids:
                continue
            snapshot = self._catalogs.get(container_id)
            day = format_datetime(item.moment)[:10]
            # Only the strategy that ranked the proposition of the event's scope learns.
            self._learning.gather(
                gathered,
                container_id,
                snapshot.catalog,
                named.proposition_id,
                decision,
                offer_ids,
                item.event_type,
                day,
                scope=_scope_of(named.scope),
            )
            if kind is None:
                continue
            placements = {
                option["id"]: p["placement"]
                for p in decision.get("propositions", [])
                for option in p.get("options", [])
            }
            for offer_id in offer_ids:
                if offer_id not in placements:
                    continue  # not an option of that decision
                field = "impressions" if kind is CapEvent.IMPRESSION else "clicks"
                runtime.add_daily(container_id, day, offer_id, **{field: 1})
                offer = snapshot.catalog.offers.get(offer_id)
                for rule in offer.caps if offer is not None else ():
                    if kind in rule.events:
                        keys.append(
                            counter_key(
                                container_id,
                                offer_id,
                                rule,
                                profile_key=str(decision.get("profileKey") or item.profile_id),
                                placement_id=placements[offer_id],
                                moment=item.moment,
                                epoch=snapshot.cap_epochs.get(offer_id, 0),
                            )
                        )
        return keys

    def _custom(self, container_id: str, item: _Stored) -> list[CounterKey]:
        """Counters of custom capping rules whose query holds for this event."""
        snapshot = self._catalogs.get(container_id)
        keys: list[CounterKey] = []
        for offer in snapshot.catalog.offers.values():
            for rule in offer.caps:
                if rule.custom_query is None or CapEvent.CUSTOM not in rule.events:
                    continue
                try:
                    matched = _query(rule.custom_query).evaluate(
                        profile=item.event, now=item.moment
                    )
                except PQLError:
                    continue
                if matched is True:
                    keys.append(
                        counter_key(
                            container_id,
                            offer.at_id,
                            rule,
                            profile_key=item.profile_id,
                            placement_id="",
                            moment=item.moment,
                            epoch=snapshot.cap_epochs.get(offer.at_id, 0),
                        )
                    )
        return keys

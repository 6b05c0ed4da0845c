"""Profiles and their experience events, scoped to an org and sandbox.

Adobe reads profiles from its profile service; nextoffer keeps its own. A profile has one
or more identities (namespace + id) and a JSON object of attributes (``segmentMembership``
included). Experience events are appended to the profile their identity map names; PQL's
``xEvent`` reads them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nextoffer.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unprocessable
from nextoffer.ids import epoch_micros, format_datetime, parse_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.identities import parse_identity_map
from nextoffer.storage.runtime import ProfileRecord, Runtime
from nextoffer.storage.store import Store

#: Events accepted in one request.
MAX_EVENTS_PER_REQUEST = 1000


@dataclass(frozen=True, slots=True)
class EventOutcome:
    index: int
    status: str  # "stored" | "duplicate" | "rejected"
    detail: str | None = None
    event_id: str | None = None


def resolve_profile_id(runtime: Runtime, principal: Principal, identities: list[tuple[str, str]]) -> str | None:
    """The one profile the identities name; 409 when they name two different profiles."""
    found = {
        pid
        for ns, identity in identities
        if (pid := runtime.find_profile_id(principal.org, principal.sandbox, ns, identity)) is not None
    }
    if len(found) > 1:
        raise Conflict("the identities name more than one profile; send identities of one profile")
    return found.pop() if found else None


class Profiles:
    def __init__(self, store: Store, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def upsert(self, principal: Principal, body: Any) -> tuple[ProfileRecord, bool]:
        """Create or update the profile any of the identities names; True when created.

        The body's ``profile`` object replaces the stored attributes; identities are added.
        """
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with identityMap and profile", pointer="/")
        identities = parse_identity_map(body.get("identityMap"), pointer="/identityMap")
        attributes = body.get("profile", {})
        if not isinstance(attributes, dict):
            raise Unprocessable("profile must be a JSON object of attributes", pointer="/profile")
        stamp = format_datetime(self._clock())
        with self._store.session(write=True) as session:
            runtime = session.runtime
            profile_id = resolve_profile_id(runtime, principal, identities)
            created = profile_id is None
            if profile_id is None:
                profile_id = str(uuid.uuid4())
                runtime.insert_profile(principal.org, principal.sandbox, profile_id, attributes, now=stamp)
            else:
                runtime.update_profile(profile_id, attributes, now=stamp)
            runtime.add_identities(principal.org, principal.sandbox, profile_id, identities)
            record = runtime.get_profile(profile_id)
        assert record is not None  # written in the same transaction
        return record, created

    def get(self, principal: Principal, namespace: str, identity: str) -> ProfileRecord:
        with self._store.session() as session:
            record = self._find(session.runtime, principal, namespace, identity)
        return record

    def delete(self, principal: Principal, namespace: str, identity: str) -> ProfileRecord:
        with self._store.session(write=True) as session:
            record = self._find(session.runtime, principal, namespace, identity)
            session.runtime.delete_profile(record.profile_id)
        return record

    @staticmethod
    def _find(runtime: Runtime, principal: Principal, namespace: str, identity: str) -> ProfileRecord:
        profile_id = runtime.find_profile_id(principal.org, principal.sandbox, namespace, identity)
        record = runtime.get_profile(profile_id) if profile_id else None
        if record is None:
            raise NotFound(f"no profile with identity {namespace}:{identity}")
        return record

    def append_events(self, principal: Principal, body: Any) -> list[EventOutcome]:
        """Store each valid event; report each invalid one. Duplicates (same id) count once."""
        if not isinstance(body, dict) or not isinstance(body.get("events"), list):
            raise BadRequest('the body must be {"events": [...]}', pointer="/events")
        events = body["events"]
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise PayloadTooLarge(f"at most {MAX_EVENTS_PER_REQUEST} events per request", pointer="/events")
        outcomes: list[EventOutcome] = []
        stamp = format_datetime(self._clock())
        with self._store.session(write=True) as session:
            runtime = session.runtime
            for index, event in enumerate(events):
                try:
                    outcomes.append(self._append(runtime, principal, index, event, stamp))
                except (Unprocessable, Conflict) as exc:
                    outcomes.append(EventOutcome(index, "rejected", exc.detail))
        return outcomes

    def _append(self, runtime: Runtime, principal: Principal, index: int, event: Any, stamp: str) -> EventOutcome:
        where = f"/events/{index}"
        if not isinstance(event, dict):
            raise Unprocessable("an event must be a JSON object", pointer=where)
        identities = parse_identity_map(event.get("identityMap"), pointer=f"{where}/identityMap")
        raw_time = event.get("timestamp", event.get("xdm:timestamp"))
        try:
            moment = parse_datetime(raw_time) if isinstance(raw_time, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise Unprocessable("timestamp must be an RFC 3339 date-time", pointer=f"{where}/timestamp")
        event_id = event.get("_id", event.get("@id"))
        if event_id is None:
            event_id = str(uuid.uuid4())
        elif not isinstance(event_id, str) or not event_id:
            raise Unprocessable("_id must be a non-empty string", pointer=f"{where}/_id")
        event_type = event.get("eventType", event.get("xdm:eventType"))
        if event_type is not None and not isinstance(event_type, str):
            raise Unprocessable("eventType must be a string", pointer=f"{where}/eventType")
        if runtime.event_exists(principal.org, principal.sandbox, event_id):
            return EventOutcome(index, "duplicate", None, event_id)
        profile_id = resolve_profile_id(runtime, principal, identities)
        if profile_id is None:
            # Events may arrive before any profile upsert, as with Adobe's profile store.
            profile_id = str(uuid.uuid4())
            runtime.insert_profile(principal.org, principal.sandbox, profile_id, {}, now=stamp)
            runtime.add_identities(principal.org, principal.sandbox, profile_id, identities)
        runtime.insert_event(
            principal.org,
            principal.sandbox,
            profile_id,
            event_id=event_id,
            event_type=event_type,
            timestamp=raw_time if isinstance(raw_time, str) else "",
            timestamp_us=epoch_micros(moment),
            body=event,
        )
        return EventOutcome(index, "stored", None, event_id)

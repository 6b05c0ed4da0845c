"""The Decisions use case: one profile, several proposition requests, one answer.

Reads (tenancy, profile, events, cap counters) happen in one read transaction; the
engine decides in memory from the container's compiled snapshot; then, unless it is a
dry run, one write transaction records the decision event and counts the propositions.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nextoffer.engine import (
    CapCounters,
    DecisionRequest,
    DecisionResult,
    PropositionRequest,
    decide,
)
from nextoffer.ids import epoch_micros, format_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.catalogs import CatalogCache, Snapshot
from nextoffer.service.profiles import resolve_profile_id
from nextoffer.service.repository import Repository
from nextoffer.storage.store import Store

#: Most recent experience events of a profile that rules see through ``xEvent``.
EVENT_LIMIT = 1000
#: The counter scope that counts propositions to everyone.
GLOBAL_SCOPE = ""


@dataclass(frozen=True, slots=True)
class DecisionCall:
    """A decision request as the service needs it (the API parses Adobe's JSON into it)."""

    propositions: tuple[PropositionRequest, ...]
    identities: Sequence[tuple[str, str]]
    context: Mapping[str, Any] = field(default_factory=dict)
    allow_duplicates_across_activities: bool = False
    allow_duplicates_across_placements: bool = False
    dry_run: bool = False
    explain: bool = False
    decision_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    proposition_id: str
    created: datetime
    result: DecisionResult
    profile_found: bool


def profile_key(profile_id: str | None, identities: Sequence[tuple[str, str]]) -> str:
    """The counter scope of one profile: its id, or its first identity when unknown."""
    if profile_id is not None:
        return profile_id
    if not identities:
        return "anonymous"
    namespace, identity = identities[0]
    return f"identity:{namespace}:{identity}"


class Decisions:
    def __init__(
        self,
        store: Store,
        *,
        repository: Repository,
        catalogs: CatalogCache,
        clock: Callable[[], datetime],
        rng_factory: Callable[[], random.Random] = random.Random,
    ) -> None:
        self._store = store
        self._repository = repository
        self._catalogs = catalogs
        self._clock = clock
        self._rng_factory = rng_factory

    def snapshot(self, principal: Principal, container_id: str) -> Snapshot:
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
        return self._catalogs.get(container_id)

    def decide(
        self,
        principal: Principal,
        container_id: str,
        call: DecisionCall,
        *,
        profile: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
    ) -> DecisionOutcome:
        """Decide; ``profile``/``events`` given directly replace the stored profile (simulation)."""
        snapshot = self.snapshot(principal, container_id)
        catalog = snapshot.catalog
        capped = sorted(catalog.capped_offer_ids(p.activity_id for p in call.propositions))
        with self._store.session() as session:
            runtime = session.runtime
            profile_id = resolve_profile_id(runtime, principal, list(call.identities)) if call.identities else None
            attributes = profile if profile is not None else (
                runtime.profile_attributes(profile_id) if profile_id else None
            )
            if events is None:
                events = runtime.recent_events(profile_id, limit=EVENT_LIMIT) if profile_id else []
            key = profile_key(profile_id, call.identities)
            counts = runtime.counters(container_id, capped, [GLOBAL_SCOPE, key])
        counters = CapCounters(
            global_counts={offer: n for (offer, scope), n in counts.items() if scope == GLOBAL_SCOPE},
            profile_counts={offer: n for (offer, scope), n in counts.items() if scope == key},
        )
        request = DecisionRequest(
            propositions=call.propositions,
            allow_duplicates_across_activities=call.allow_duplicates_across_activities,
            allow_duplicates_across_placements=call.allow_duplicates_across_placements,
            profile=attributes or {},
            events=events,
            context=call.context,
            explain=call.explain,
        )
        now = self._clock()
        result = decide(catalog, request, counters=counters, now=now, rng=self._rng_factory())
        outcome = DecisionOutcome(str(uuid.uuid4()), now, result, attributes is not None)
        if not call.dry_run:
            self._record(container_id, call, outcome, key, profile_id, set(capped))
        return outcome

    def _record(
        self,
        container_id: str,
        call: DecisionCall,
        outcome: DecisionOutcome,
        key: str,
        profile_id: str | None,
        capped: set[str],
    ) -> None:
        result = outcome.result
        namespace, identity = call.identities[0] if call.identities else ("", "")
        body = {
            "propositionId": outcome.proposition_id,
            "timestamp": format_datetime(outcome.created),
            "identity": {"namespace": namespace, "id": identity},
            "profileId": profile_id,
            "decisionRequestId": call.decision_request_id,
            "propositions": [
                {
                    "activity": p.activity.at_id,
                    "placement": p.placement.at_id,
                    "options": [
                        {"id": o.offer_id, **({"score": o.score} if o.score is not None else {})} for o in p.options
                    ],
                    "fallback": p.fallback.offer_id if p.fallback is not None else None,
                }
                for p in result.propositions
            ],
        }
        with self._store.session(write=True) as session:
            runtime = session.runtime
            runtime.insert_decision_event(
                outcome.proposition_id,
                container_id,
                created=body["timestamp"],
                created_us=epoch_micros(outcome.created),
                profile_key=key,
                body=body,
            )
            for proposed in result.proposed:
                if proposed.fallback or proposed.offer_id not in capped:
                    continue
                runtime.add_counter(container_id, proposed.offer_id, GLOBAL_SCOPE, 1)
                runtime.add_counter(container_id, proposed.offer_id, key, 1)

    def decision_events(self, principal: Principal, container_id: str, *, since: datetime, limit: int) -> list[dict[str, Any]]:
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
            return session.runtime.decision_events(container_id, since_us=epoch_micros(since), limit=limit)

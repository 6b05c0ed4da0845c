"""The Decisions use case: one profile, several proposition requests, one answer.

1. Read (one read transaction): the profile and its recent events. Tenancy is checked once
   per container and process (a container never changes hands).
2. Read the cap counters the request may touch (one batch).
3. Decide in memory from the container's compiled snapshot.
4. Unless it is a dry run: *reserve* the counters of what was proposed — all of them stay
   within their limits or none is taken; when another request took the last unit first,
   decide again with fresh counts. Then record the decision event; if that fails, release
   the reservation. Caps are therefore exact under any concurrency. When the counters live
   in the same SQL database, reservation and record are one write transaction (both or
   neither; no release).

A profile store that cannot be read decides for an empty profile; counters that cannot be
read count every capped offer as capped (caps fail closed). Neither fails the request.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nextoffer.engine import (
    CapCounters,
    Catalog,
    DecisionRequest,
    DecisionResult,
    PropositionRequest,
    decide,
)
from nextoffer.engine.frequency import CapRule
from nextoffer.errors import NextOfferError, NotFound, Unavailable
from nextoffer.ids import epoch_micros, format_datetime
from nextoffer.service.auth import Principal
from nextoffer.service.caps import counter_key
from nextoffer.service.catalogs import CatalogCache, Snapshot
from nextoffer.service.profiles import resolve_profile_id
from nextoffer.service.repository import Repository
from nextoffer.storage.counters import CapCounterStore, CounterKey, SqlCounters
from nextoffer.storage.store import Session, Store

log = logging.getLogger("nextoffer.decisions")

#: Most recent experience events of a profile that rules see through ``xEvent``.
EVENT_LIMIT = 1000
#: Decide again at most this often when concurrent requests took the last cap units.
RESERVE_ATTEMPTS = 8


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
        counters: CapCounterStore,
        clock: Callable[[], datetime],
        rng_factory: Callable[[], random.Random] = random.Random,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_refused = on_refused
        # Counters in the same database reserve and record in one write transaction.
        self._shared_counters = (
            counters if isinstance(counters, SqlCounters) and counters.shares(store) else None
        )
        #: Container -> (org, sandbox), for containers this process has seen: a container
        #: never changes hands, so tenancy is checked without a database read per decision.
        self._owners: dict[str, tuple[str, str]] = {}
        self._repository = repository
        self._catalogs = catalogs
        self._counters = counters
        self._clock = clock
        self._rng_factory = rng_factory

    def snapshot(self, principal: Principal, container_id: str) -> Snapshot:
        owner = self._owners.get(container_id)
        if owner is None:
            with self._store.session() as session:
                record = self._repository.container(session, principal, container_id)
            self._owners[container_id] = (record.org_id, record.sandbox)
        elif owner != (principal.org, principal.sandbox):
            raise NotFound(f"container {container_id} does not exist")
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
        if events is None and not snapshot.reads_events:
            events = ()  # no rule looks at them: skip reading up to EVENT_LIMIT events
        profile_id, attributes, events = self._profile(principal, call, profile, events)
        key = profile_key(profile_id, call.identities)
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
        reads = _CapReads(container_id, snapshot, call.propositions, key, now)
        forced: set[CounterKey] = set()
        for attempt in range(RESERVE_ATTEMPTS):
            if attempt == RESERVE_ATTEMPTS - 1:
                # Still contended: decide without the capped offers rather than not at all.
                forced.update(k for k, _ in reads.keys)
            counts = self._read_counts(reads, forced)
            result = decide(
                snapshot.catalog,
                request,
                counters=reads.engine_counters(counts),
                now=now,
                rng=self._rng_factory(),
            )
            outcome = DecisionOutcome(str(uuid.uuid4()), now, result)
            if call.dry_run:
                return outcome
            wanted = reads.consumed(result)
            if wanted and self._shared_counters is not None:
                record = self._record_body(call, outcome, key, profile_id)
                try:
                    write = functools.partial(
                        self._write_record,
                        container_id=container_id,
                        outcome=outcome,
                        key=key,
                        body=record,
                    )
                    refused = self._shared_counters.reserve_then(wanted, write)
                except NextOfferError as exc:
                    # Neither reserved nor recorded: decide again without the capped offers.
                    log.error("cap counters unavailable; capped offers count as capped: %s", exc)
                    forced.update(k for k, _ in reads.keys)
                    continue
                if refused:
                    self._refused()
                    forced.update(refused)
                    continue
                return outcome
            try:
                refused = self._counters.reserve(wanted)
            except NextOfferError as exc:
                log.error("cap counters unavailable; capped offers count as capped: %s", exc)
                forced.update(k for k, _ in reads.keys)
                continue
            if refused:
                self._refused()
                forced.update(refused)  # taken meanwhile: read again, decide again
                continue
            self._record(container_id, call, outcome, key, profile_id, wanted)
            return outcome
        raise Unavailable("cap counters changed too fast to decide; retry")  # pragma: no cover

    def _refused(self) -> None:
        if self._on_refused is not None:
            self._on_refused()

    def _profile(
        self,
        principal: Principal,
        call: DecisionCall,
        profile: Mapping[str, Any] | None,
        events: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[str | None, Mapping[str, Any] | None, Sequence[Mapping[str, Any]]]:
        if not call.identities:
            return None, profile, events or []
        try:
            with self._store.session() as session:
                runtime = session.runtime
                if len(call.identities) == 1 and profile is None:
                    # The usual request: identity and attributes in one indexed read.
                    namespace, identity = call.identities[0]
                    found = runtime.profile_by_identity(
                        principal.org, principal.sandbox, namespace, identity
                    )
                    profile_id, attributes = found if found is not None else (None, None)
                else:
                    profile_id = resolve_profile_id(runtime, principal, list(call.identities))
                    attributes = (
                        profile
                        if profile is not None
                        else (runtime.profile_attributes(profile_id) if profile_id else None)
                    )
                if events is None:
                    events = (
                        runtime.recent_events(profile_id, limit=EVENT_LIMIT) if profile_id else []
                    )
        except Unavailable as exc:
            log.error("profile store unavailable; deciding for an empty profile: %s", exc)
            return None, None, []
        return profile_id, attributes, events

    def _read_counts(self, reads: _CapReads, forced: set[CounterKey]) -> dict[CounterKey, int]:
        """Current counts, with the ``forced`` keys raised to their limits (taken, or unknown)."""
        keys = [k for k, _ in reads.keys]
        try:
            counts = self._counters.read(keys)
        except NextOfferError as exc:
            log.error("cap counters unavailable; capped offers count as capped: %s", exc)
            counts = {}
            forced.update(keys)
        for key, limit in reads.keys:
            if key in forced:
                counts[key] = max(counts.get(key, 0), limit)
        return counts

    def _record(
        self,
        container_id: str,
        call: DecisionCall,
        outcome: DecisionOutcome,
        key: str,
        profile_id: str | None,
        reserved: Sequence[tuple[CounterKey, int]],
    ) -> None:
        body = self._record_body(call, outcome, key, profile_id)
        try:
            with self._store.session(write=True) as session:
                self._write_record(
                    session, container_id=container_id, outcome=outcome, key=key, body=body
                )
        except NextOfferError as exc:
            # The answer stands; its counts go back so an unrecorded proposition costs nothing.
            log.error("decision %s not recorded: %s", outcome.proposition_id, exc)
            self._counters.release([k for k, _ in reserved])

    @staticmethod
    def _record_body(
        call: DecisionCall, outcome: DecisionOutcome, key: str, profile_id: str | None
    ) -> dict[str, Any]:
        result = outcome.result
        namespace, identity = call.identities[0] if call.identities else ("", "")
        return {
            "propositionId": outcome.proposition_id,
            "timestamp": format_datetime(outcome.created),
            "identity": {"namespace": namespace, "id": identity},
            "profileId": profile_id,
            "profileKey": key,
            "decisionRequestId": call.decision_request_id,
            "propositions": [
                {
                    "activity": p.activity.at_id,
                    "placement": p.placement.at_id,
                    "options": [
                        {"id": o.offer_id, **({"score": o.score} if o.score is not None else {})}
                        for o in p.options
                    ],
                    "fallback": p.fallback.offer_id if p.fallback is not None else None,
                }
                for p in result.propositions
            ],
        }

    @staticmethod
    def _write_record(
        session: Session,
        *,
        container_id: str,
        outcome: DecisionOutcome,
        key: str,
        body: Mapping[str, Any],
    ) -> None:
        """The decision event and the offers report's propositions, in the caller's transaction."""
        runtime = session.runtime
        stamp = body["timestamp"]
        runtime.insert_decision_event(
            outcome.proposition_id,
            container_id,
            created=stamp,
            created_us=epoch_micros(outcome.created),
            profile_key=key,
            body=body,
        )
        for proposed in outcome.result.proposed:
            runtime.add_daily(container_id, stamp[:10], proposed.offer_id, propositions=1)

    def decision_events(
        self, principal: Principal, container_id: str, *, since: datetime, limit: int
    ) -> list[dict[str, Any]]:
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
            return session.runtime.decision_events(
                container_id, since_us=epoch_micros(since), limit=limit
            )


class _CapReads:
    """The counters one request may touch, and how their counts reach the engine."""

    def __init__(
        self,
        container_id: str,
        snapshot: Snapshot,
        propositions: Sequence[PropositionRequest],
        profile_key: str,
        now: datetime,
    ) -> None:
        self._container_id = container_id
        self._catalog: Catalog = snapshot.catalog
        self._epochs = snapshot.cap_epochs
        self._profile_key = profile_key
        self._now = now
        #: Counters of rules that count for everyone and never reset are the same for every
        #: request on this snapshot: built once (a third of the work of this class).
        self._fixed: dict[tuple[str, str, str, int], CounterKey] = snapshot.cap_plans.setdefault(
            ("fixed keys",), {}
        )
        activities = tuple(sorted({p.activity_id for p in propositions}))
        placements = tuple(sorted({p.placement_id for p in propositions}))
        plan = snapshot.cap_plans.get((activities, placements))
        if plan is None:
            plan = snapshot.cap_plans[(activities, placements)] = self._plan(activities, placements)
        #: (engine key (offer, rule, placement)) -> (counter key, limit)
        self._by_engine_key: dict[tuple[str, str, str], tuple[CounterKey, int]] = {
            engine_key: (self._key(engine_key[0], rule, engine_key[2]), rule.limit)
            for engine_key, rule in plan
        }
        self.keys: list[tuple[CounterKey, int]] = list(self._by_engine_key.values())

    def _plan(
        self, activities: tuple[str, ...], placements: tuple[str, ...]
    ) -> list[tuple[tuple[str, str, str], CapRule]]:
        plan = []
        for offer_id in sorted(self._catalog.capped_offer_ids(activities)):
            offer = self._catalog.offers.get(offer_id)
            for rule in offer.caps if offer is not None else ():
                for placement in placements if rule.per_placement else ("",):
                    plan.append(((offer_id, rule.rule_id, placement), rule))
        return plan

    def _key(self, offer_id: str, rule: CapRule, placement: str) -> CounterKey:
        if not rule.per_profile and rule.repeat is None:
            # The epoch is part of the memo: a rebuild that keeps this snapshot may move it.
            memo = (offer_id, rule.rule_id, placement, self._epochs.get(offer_id, 0))
            key = self._fixed.get(memo)
            if key is None:
                key = self._fixed[memo] = self._make_key(offer_id, rule, placement)
            return key
        return self._make_key(offer_id, rule, placement)

    def _make_key(self, offer_id: str, rule: CapRule, placement: str) -> CounterKey:
        return counter_key(
            self._container_id,
            offer_id,
            rule,
            profile_key=self._profile_key,
            placement_id=placement,
            moment=self._now,
            epoch=self._epochs.get(offer_id, 0),
        )

    def engine_counters(self, counts: Mapping[CounterKey, int]) -> CapCounters:
        return CapCounters(
            counts={
                engine_key: counts.get(key, 0)
                for engine_key, (key, _) in self._by_engine_key.items()
            }
        )

    def consumed(self, result: DecisionResult) -> list[tuple[CounterKey, int]]:
        """The counters the proposed offers consume: rules that count propositions."""
        wanted: list[tuple[CounterKey, int]] = []
        for proposed in result.proposed:
            offer = None if proposed.fallback else self._catalog.offers.get(proposed.offer_id)
            if offer is None:
                continue
            for rule in offer.caps:
                if rule.counts_propositions:
                    placement = proposed.placement_id if rule.per_placement else ""
                    entry = self._by_engine_key.get((proposed.offer_id, rule.rule_id, placement))
                    key = entry[0] if entry else self._key(proposed.offer_id, rule, placement)
                    wanted.append((key, rule.limit))
        return wanted

"""The Decisions use case: one profile, several proposition requests, one answer.

1. Read the profile (one indexed read; its recent events only when some rule names
   ``xEvent``). Tenancy is checked once per container and process (a container never
   changes hands).
2. Read the counters of capping rules that a reservation does not check (impressions,
   clicks, custom events); dry runs and explained decisions read every counter.
3. Decide in memory from the container's compiled snapshot.
4. Unless it is a dry run: record the decision, *reserving* the counters of what was
   proposed — all of them stay within their limits or none is taken. A refused reservation
   names the full counters: the service then reads every count and decides again. Caps are
   therefore exact under any concurrency. Counters in the same SQL database are reserved in
   the record's own transaction (both or neither); counters elsewhere (Redis) are reserved
   first and released if the record fails.

:class:`Attempt` carries one decision through these steps; :meth:`Decisions.decide` waits
for its record, and the decision route awaits it on the event loop instead
(``storage/decision_path.py`` writes records in batches).

A profile store that cannot be read decides for an empty profile; counters that cannot be
read count every capped offer as capped (caps fail closed). Neither fails the request.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
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
from nextoffer.ids import epoch_micros, format_datetime, uuid7
from nextoffer.service.auth import Principal
from nextoffer.service.caps import counter_key
from nextoffer.service.catalogs import CatalogCache, Snapshot
from nextoffer.service.profiles import resolve_profile_id
from nextoffer.service.repository import Repository
from nextoffer.storage.counters import CapCounterStore, CounterKey, SqlCounters, counter_needs
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.store import Store

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


_rngs = threading.local()


def _thread_rng() -> random.Random:
    """One generator per thread, seeded once from the OS: ``random.Random()`` per decision
    read 2.5 KB from the OS each time, and ties need no fresh seed per request."""
    rng: random.Random | None = getattr(_rngs, "rng", None)
    if rng is None:
        rng = _rngs.rng = random.Random()
    return rng


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
        rng_factory: Callable[[], random.Random] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._on_refused = on_refused
        #: The decision path's reads and record writes (group commits on SQLite).
        self._path = store.decision_path
        # Counters in the same database are read through the decision path, and a record
        # reserves them in its own transaction (both or neither; nothing to release).
        self._shared_counters = isinstance(counters, SqlCounters) and counters.shares(store)
        #: Container -> (org, sandbox), for containers this process has seen: a container
        #: never changes hands, so tenancy is checked without a database read per decision.
        self._owners: dict[str, tuple[str, str]] = {}
        self._repository = repository
        self._catalogs = catalogs
        self._counters = counters
        self._clock = clock
        self._rng_factory = rng_factory or _thread_rng

    def snapshot(self, principal: Principal, container_id: str) -> Snapshot:
        owner = self._owners.get(container_id)
        if owner is None:
            with self._store.session() as session:
                record = self._repository.container(session, principal, container_id)
            self._owners[container_id] = (record.org_id, record.sandbox)
        elif owner != (principal.org, principal.sandbox):
            raise NotFound(f"container {container_id} does not exist")
        return self._catalogs.get(container_id)

    def warm(self) -> int:
        """Build every container's snapshot now (a server starting), so that the first
        decisions of a worker do not wait for it; the number built. A container whose
        snapshot cannot be built is left for its first decision to report."""
        with self._store.session() as session:
            container_ids = session.container_ids()
        built = 0
        for container_id in container_ids:
            try:
                self._catalogs.get(container_id)
            except NextOfferError as exc:
                log.warning("snapshot of container %s not built at start: %s", container_id, exc)
                continue
            built += 1
        return built

    def ready_snapshot(self, principal: Principal, container_id: str) -> Snapshot | None:
        """The container's snapshot when getting it needs no IO (tenancy known, snapshot
        checked recently), else ``None``: then :meth:`snapshot` reads the database."""
        if self._owners.get(container_id) != (principal.org, principal.sandbox):
            return None
        return self._catalogs.ready(container_id)

    @property
    def records_async(self) -> bool:
        """Whether :meth:`begin` waits for nothing but the record's future: profile and
        counter reads are local driver reads (SQLite) that never wait for writers. An
        event loop can then run :meth:`begin` itself and await :attr:`Attempt.waiting`."""
        return self._shared_counters and self._path.reads_never_wait

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
        attempt = self.begin(
            principal, container_id, call, snapshot, profile=profile, events=events
        )
        while attempt.waiting is not None:
            wait([attempt.waiting])
            attempt.settle()
        return attempt.outcome()

    def begin(
        self,
        principal: Principal,
        container_id: str,
        call: DecisionCall,
        snapshot: Snapshot,
        *,
        profile: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
    ) -> Attempt:
        """Read, decide and hand the record to the writer; the :class:`Attempt` finishes it."""
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
        return Attempt(self, container_id, snapshot, call, request, reads, profile_id, key, now)

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
            if len(call.identities) == 1 and profile is None:
                # The usual request: identity and attributes in one indexed read.
                namespace, identity = call.identities[0]
                found = self._path.profile(principal.org, principal.sandbox, namespace, identity)
                profile_id, attributes = found if found is not None else (None, None)
                if events is None:
                    events = self._path.events(profile_id, limit=EVENT_LIMIT) if profile_id else []
                return profile_id, attributes, events
            with self._store.session() as session:
                runtime = session.runtime
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

    def _counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        """Current counts where the counters live (missing ones are 0); raises
        :class:`~nextoffer.errors.NextOfferError` when they cannot be read."""
        source = self._path.counts if self._shared_counters else self._counters.read
        return source(keys)

    def _read_counts(
        self, reads: _CapReads, keys: Sequence[tuple[tuple[str, str, str], CounterKey]]
    ) -> dict[tuple[str, str, str], int]:
        """Current counts by engine key; counters that cannot be read count as full."""
        if not keys:
            return {}
        counter_keys = [k for _, k in keys]
        try:
            counts = self._counts(counter_keys)
        except NextOfferError as exc:
            log.error("cap counters unavailable; capped offers count as capped: %s", exc)
            return reads.full(counter_keys)
        return {engine_key: counts[k] for engine_key, k in keys if k in counts}

    def _write(
        self,
        container_id: str,
        call: DecisionCall,
        outcome: DecisionOutcome,
        key: str,
        profile_id: str | None,
        reserve: Sequence[tuple[CounterKey, int]],
    ) -> Future[list[CounterKey]]:
        """Record the decision (reserving ``reserve`` first): resolves to the counters that
        were full, ``[]`` once written."""
        body = self._record_body(call, outcome, key, profile_id)
        record = DecisionRecord(
            proposition_id=outcome.proposition_id,
            container_id=container_id,
            created=body["timestamp"],
            created_us=epoch_micros(outcome.created),
            profile_key=key,
            body=body,
            day=body["timestamp"][:10],
            proposed_offers=[p.offer_id for p in outcome.result.proposed],
            reserve=reserve,
        )
        return self._path.record(record)

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

    def decision_events(
        self, principal: Principal, container_id: str, *, since: datetime, limit: int
    ) -> list[dict[str, Any]]:
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
            return session.runtime.decision_events(
                container_id, since_us=epoch_micros(since), limit=limit
            )


class Attempt:
    """One decision on its way to its answer.

    Decides at once; a recorded decision then waits for its record (:attr:`waiting`, a
    future the decision path resolves). :meth:`settle` takes the record's outcome: done,
    or — when a counter was full or could not be reached — decide again (at most
    ``RESERVE_ATTEMPTS`` times) and wait again.
    """

    def __init__(
        self,
        owner: Decisions,
        container_id: str,
        snapshot: Snapshot,
        call: DecisionCall,
        request: DecisionRequest,
        reads: _CapReads,
        profile_id: str | None,
        profile_key: str,
        now: datetime,
    ) -> None:
        self._owner = owner
        self._container_id = container_id
        self._snapshot = snapshot
        self._call = call
        self._request = request
        self._reads = reads
        self._profile_id = profile_id
        self._key = profile_key
        self._now = now
        self._round = 0
        self._outcome: DecisionOutcome | None = None
        self._wanted: list[tuple[CounterKey, int]] = []
        self._pending: DecisionOutcome | None = None
        #: The record being written, when this decision waits for it.
        self.waiting: Future[list[CounterKey]] | None = None
        # What the engine knows of the counters, by engine key. Counters of rules that count
        # propositions are checked by the reservation itself (all-or-nothing, under their
        # limits), so a recorded decision reads only the others up front and learns of a
        # full one when its reservation is refused. A dry run reserves nothing: it reads
        # the counts of what it would propose instead, and decides again on every count
        # if one is full. An explained decision reports every count: it reads them all.
        self._exact = call.explain
        self._known = owner._read_counts(
            reads, reads.all_keys if self._exact else reads.unreserved_keys
        )
        self._decide()

    def outcome(self) -> DecisionOutcome:
        if self._outcome is None:
            raise RuntimeError("the decision still waits for its record")
        return self._outcome

    def _decide(self) -> None:
        owner, reads, known = self._owner, self._reads, self._known
        while True:
            if self._round >= RESERVE_ATTEMPTS:  # pragma: no cover - the last round is capless
                raise Unavailable("cap counters changed too fast to decide; retry")
            self._round += 1
            if self._round == RESERVE_ATTEMPTS:
                # Still contended: decide without the capped offers rather than not at all.
                known.update(reads.all_full())
            result = decide(
                self._snapshot.catalog,
                self._request,
                counters=CapCounters(counts=known),
                now=self._now,
                rng=owner._rng_factory(),
            )
            outcome = DecisionOutcome(uuid7(self._now), self._now, result)
            if self._call.dry_run:
                full = [] if self._exact else self._without_room(reads.consumed(result))
                if full is None:
                    continue  # the counters could not be read: decided again without caps
                if full:
                    self._full(full, counted=False)
                    continue
                self._outcome = outcome
                return
            self._wanted = wanted = reads.consumed(result)
            if owner._shared_counters:
                # Counters in the same database: reserved in the record's transaction.
                self._pending = outcome
                self.waiting = owner._write(
                    self._container_id, self._call, outcome, self._key, self._profile_id, wanted
                )
                return
            try:
                refused = owner._counters.reserve(wanted)
            except NextOfferError as exc:
                self._unreachable(exc)
                continue
            if refused:
                self._full(refused)
                continue
            self._pending = outcome
            self.waiting = owner._write(
                self._container_id, self._call, outcome, self._key, self._profile_id, ()
            )
            return

    def settle(self) -> None:
        """Take the finished record's outcome; decide again if it was refused."""
        future, self.waiting = self.waiting, None
        if future is None or not future.done():
            raise RuntimeError("settle() needs a finished record")
        error = future.exception()
        if not self._owner._shared_counters:
            # Reserved elsewhere (Redis) before the record: the answer stands either way.
            if error is not None:
                log.error("decision %s not recorded: %s", self._pending.proposition_id, error)
                self._owner._counters.release([k for k, _ in self._wanted])
            self._outcome = self._pending
            return
        if error is not None:
            if not isinstance(error, NextOfferError):
                raise error
            self._unreachable(error)  # neither reserved nor recorded
            self._decide()
            return
        refused = future.result()
        if refused:
            self._full(refused)
            self._decide()
            return
        self._outcome = self._pending

    def _unreachable(self, exc: Exception) -> None:
        log.error("cap counters unavailable; capped offers count as capped: %s", exc)
        self._known.update(self._reads.all_full())

    def _without_room(self, wanted: Sequence[tuple[CounterKey, int]]) -> list[CounterKey] | None:
        """The counters among ``wanted`` with no room left now (a dry run's check in place
        of a reservation); ``None`` when they cannot be read (then all count as full)."""
        if not wanted:
            return []
        needs = counter_needs(wanted)
        try:
            counts = self._owner._counts(list(needs))
        except NextOfferError as exc:
            self._unreachable(exc)
            return None
        return [key for key, (n, limit) in needs.items() if counts.get(key, 0) + n > limit]

    def _full(self, refused: Sequence[CounterKey], *, counted: bool = True) -> None:
        if counted:  # a refused reservation, not a dry run's check
            self._owner._refused()
        if not self._exact:
            # From now on decide on every current count, not on hope.
            self._exact = True
            self._known.update(self._owner._read_counts(self._reads, self._reads.all_keys))
        self._known.update(self._reads.full(refused))


class _CapReads:
    """The counters one request may touch: engine keys (offer, rule, placement) to counter
    keys, built only for the counters a request actually reads or reserves."""

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
        #: request on this snapshot: built once.
        self._fixed: dict[tuple[str, str, str, int], CounterKey] = snapshot.cap_plans.setdefault(
            ("fixed keys",), {}
        )
        activities = tuple(sorted({p.activity_id for p in propositions}))
        placements = tuple(sorted({p.placement_id for p in propositions}))
        plan = snapshot.cap_plans.get((activities, placements))
        if plan is None:
            plan = snapshot.cap_plans[(activities, placements)] = self._plan(activities, placements)
        #: engine key -> its rule, for every capped candidate of the request; and the
        #: entries whose rules a reservation does not check
        self._plan: dict[tuple[str, str, str], CapRule] = plan[0]
        self._unreserved: list[tuple[tuple[str, str, str], CapRule]] = plan[1]
        self._built: dict[tuple[str, str, str], CounterKey] = {}
        self._by_key: dict[CounterKey, tuple[str, str, str]] = {}

    def _plan(
        self, activities: tuple[str, ...], placements: tuple[str, ...]
    ) -> tuple[dict[tuple[str, str, str], CapRule], list[tuple[tuple[str, str, str], CapRule]]]:
        plan = {}
        for offer_id in sorted(self._catalog.capped_offer_ids(activities)):
            offer = self._catalog.offers.get(offer_id)
            for rule in offer.caps if offer is not None else ():
                for placement in placements if rule.per_placement else ("",):
                    plan[(offer_id, rule.rule_id, placement)] = rule
        return plan, [(ek, rule) for ek, rule in plan.items() if not rule.counts_propositions]

    @property
    def all_keys(self) -> list[tuple[tuple[str, str, str], CounterKey]]:
        return [(ek, self._key(ek, rule)) for ek, rule in self._plan.items()]

    @property
    def unreserved_keys(self) -> list[tuple[tuple[str, str, str], CounterKey]]:
        """Counters a reservation does not check: rules counting impressions, clicks, events."""
        return [(ek, self._key(ek, rule)) for ek, rule in self._unreserved]

    def all_full(self) -> dict[tuple[str, str, str], int]:
        """Every counter at its limit: no capped offer is proposed."""
        return {ek: rule.limit for ek, rule in self._plan.items()}

    def full(self, keys: Sequence[CounterKey]) -> dict[tuple[str, str, str], int]:
        """These counters at their limits."""
        found = {}
        for key in keys:
            engine_key = self._by_key.get(key)
            if engine_key is not None:
                found[engine_key] = self._plan[engine_key].limit
        return found

    def _key(self, engine_key: tuple[str, str, str], rule: CapRule) -> CounterKey:
        key = self._built.get(engine_key)
        if key is not None:
            return key
        offer_id, _, placement = engine_key
        epoch = self._epochs.get(offer_id, 0)
        if not rule.per_profile and rule.repeat is None:
            # The epoch is part of the memo: a rebuild that keeps this snapshot may move it.
            memo = (offer_id, rule.rule_id, placement, epoch)
            key = self._fixed.get(memo)
            if key is None:
                key = self._fixed[memo] = self._make_key(offer_id, rule, placement, epoch)
        else:
            key = self._make_key(offer_id, rule, placement, epoch)
        self._built[engine_key] = key
        self._by_key[key] = engine_key
        return key

    def _make_key(self, offer_id: str, rule: CapRule, placement: str, epoch: int) -> CounterKey:
        return counter_key(
            self._container_id,
            offer_id,
            rule,
            profile_key=self._profile_key,
            placement_id=placement,
            moment=self._now,
            epoch=epoch,
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
                    engine_key = (proposed.offer_id, rule.rule_id, placement)
                    wanted.append((self._key(engine_key, rule), rule.limit))
        return wanted

"""One decision on its way to its answer: decide, record (reserving caps), decide again.

:class:`Attempt` decides, then a recorded decision waits for its record; its outcome is
done, or — when a counter was full or could not be reached — decide again (at most
``RESERVE_ATTEMPTS`` times) and wait again. The decision is written once, as a generator
of the IO it needs (counts to read, a record to write), and driven two ways:

* in a thread: :meth:`Attempt.start` reads with the path's methods and hands the record
  over (:attr:`Attempt.waiting`, a future the decision path resolves);
  :meth:`Attempt.settle` takes its outcome (``Decisions.decide``, batch chunks, and
  ``decide_async`` on an ``inline`` path);
* on the running event loop: ``await`` :meth:`Attempt.run` awaits the path's ``on_loop``
  coroutines (``decide_async`` on PostgreSQL and Redis: no thread hop).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

import numpy as np

from nextoffer.engine import (
    CapCounters,
    DecisionRequest,
    DecisionResult,
    Proposition,
    PropositionRequest,
)
from nextoffer.engine import decide as engine_decide
from nextoffer.engine.strategy import Learned
from nextoffer.errors import BadRequest, NextOfferError, Unavailable
from nextoffer.ids import epoch_micros, format_datetime, uuid7
from nextoffer.logs import Throttled
from nextoffer.service.cap_plan import CapPlan, EngineKey
from nextoffer.service.catalogs import Snapshot
from nextoffer.service.learning import ranking_note
from nextoffer.storage.counters import CounterKey, counter_needs
from nextoffer.storage.decision_path import DecisionPath, DecisionRecord, OnLoop, Pending

log = logging.getLogger("nextoffer.decisions")
#: One line every ten seconds while the database is away, not one per decision.
_NOT_RECORDED = Throttled(log)
#: Every decision of an outage of the counters (or of a Redis that lost them) says so.
_UNREACHABLE = Throttled(log)

#: Decide again at most this often when concurrent requests took the last cap units.
RESERVE_ATTEMPTS = 8


#: Not frozen, as the other objects made once per decision (``frozen=True``'s
#: ``__init__`` calls ``object.__setattr__`` per field, docs/benchmarks.md): nothing
#: changes one after it is made.
@dataclass(slots=True)
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
    #: Write the decision event to the decision log. A batch decision does not: its event
    #: is its row in the job's dataset (caps and the offers report count it all the same).
    log: bool = True


@dataclass(slots=True)
class DecisionOutcome:
    proposition_id: str
    created: datetime
    result: DecisionResult
    #: ``created`` in microseconds since the Unix epoch (the record and the response
    #: both need it: converted once).
    created_us: int


#: What a decision waits for next: the counts of these counters, or this record's outcome.
Step: TypeAlias = "list[CounterKey] | DecisionRecord"


class Attempt:
    """One decision, written once as a generator of the IO it needs (:meth:`_run`: count
    reads and its record) and driven either in a thread (:meth:`start`, then
    :meth:`settle` rounds as records finish) or on the running event loop (:meth:`run`,
    awaiting the path's ``on_loop`` coroutines)."""

    def __init__(
        self,
        path: DecisionPath,
        container_id: str,
        snapshot: Snapshot,
        call: DecisionCall,
        request: DecisionRequest,
        plan: CapPlan,
        *,
        profile_id: str | None,
        profile_key: str,
        now: datetime,
        rng: Callable[[], random.Random],
        on_refused: Callable[[], None] | None = None,
        learned: Mapping[str, Learned] | None = None,
        generator: Callable[[], np.random.Generator] | None = None,
        shared: dict[EngineKey, int] | None = None,
    ) -> None:
        self._path = path
        self._container_id = container_id
        self._snapshot = snapshot
        self._call = call
        self._request = request
        self._plan = plan
        self._profile_id = profile_id
        self._key = profile_key
        self._now = now
        self._now_us = epoch_micros(now)
        self._rng = rng
        self._on_refused = on_refused
        self._learned = learned
        self._generator = generator
        #: Counts of counters shared by many decisions of one batch (caps for everyone),
        #: learnt from refusals: a counter found full stays full for the rest of the batch,
        #: so later decisions do not propose its offer only to be refused.
        self._shared = shared
        self._round = 0
        self._outcome: DecisionOutcome | None = None
        #: The record being written, when this decision waits for it (:meth:`start`).
        self.waiting: Pending | None = None
        # What the engine knows of the counters, by engine key. Counters of rules that count
        # propositions are checked by the reservation itself (all-or-nothing, under their
        # limits), so a recorded decision reads only the others up front and learns of a
        # full one when its reservation is refused. A dry run reserves nothing: it reads
        # the counts of what it would propose instead, and decides again on every count
        # if one is full. An explained decision reports every count: it reads them all.
        self._exact = call.explain
        self._known: dict[EngineKey, int] = {}
        self._steps = self._run()

    def outcome(self) -> DecisionOutcome:
        if self._outcome is None:
            raise RuntimeError("the decision still waits for its record")
        return self._outcome

    # -- driven in a thread ------------------------------------------------------------

    def start(self) -> None:
        """Decide, reading counts in this thread, and hand the record to the path: then
        :attr:`waiting` holds it (or the decision is done: a dry run)."""
        self._go(None)

    @property
    def recorded(self) -> bool:
        """Whether the finished record was written as decided: :meth:`settle` then only
        takes the outcome (no IO)."""
        future = self.waiting
        return (
            future is not None
            and future.done()
            and not future.cancelled()
            and future.exception() is None
            and not future.result()
        )

    def settle(self) -> None:
        """Take the finished record's outcome; decide again if it was refused."""
        future, self.waiting = self.waiting, None
        if future is None or not future.done():
            raise RuntimeError("settle() needs a finished record")
        error = future.exception()
        if error is not None and not isinstance(error, NextOfferError):
            raise error
        self._go(error if error is not None else future.result())

    def _go(self, answer: Any) -> None:
        while True:
            try:
                step = self._steps.send(answer)
            except StopIteration as done:
                self._outcome = done.value
                return
            if isinstance(step, DecisionRecord):
                self.waiting = self._path.record(step)
                return
            try:
                answer = self._path.counts(step)
            except NextOfferError as exc:
                answer = exc

    # -- driven on the event loop ------------------------------------------------------

    async def run(self, on_loop: OnLoop) -> DecisionOutcome:
        """Decide, awaiting every read and the record on the running loop."""
        answer: Any = None
        while True:
            try:
                step = self._steps.send(answer)
            except StopIteration as done:
                self._outcome = done.value
                return self.outcome()
            try:
                if isinstance(step, DecisionRecord):
                    answer = await on_loop.record(step)
                else:
                    answer = await on_loop.counts(step)
            except NextOfferError as exc:
                answer = exc

    # -- the decision ------------------------------------------------------------------

    def _run(self) -> Generator[Step, Any, DecisionOutcome]:
        """Yields the counters it needs read (and receives their counts, or the
        NextOfferError that kept them from being read) or its record (and receives the
        counters that refused it, ``[]`` once written, or the NextOfferError that kept
        it from being written: a :class:`BadRequest`, a value the database refuses, is
        raised, since deciding again would write it again); returns the outcome."""
        plan = self._plan
        self._known = known = yield from self._read(
            plan.all_keys if self._exact else plan.unreserved_keys
        )
        if self._shared:
            known.update(self._shared)
        while True:
            if self._round >= RESERVE_ATTEMPTS:  # pragma: no cover - the last round is capless
                raise Unavailable("cap counters changed too fast to decide; retry")
            self._round += 1
            if self._round == RESERVE_ATTEMPTS:
                # Still contended: decide without the capped offers rather than not at all.
                known.update(plan.all_full())
            result = engine_decide(
                self._snapshot.catalog,
                self._request,
                counters=CapCounters(counts=known),
                now=self._now,
                rng=self._rng(),
                learned=self._learned,
                generator=self._generator() if self._generator is not None else None,
            )
            outcome = DecisionOutcome(uuid7(self._now), self._now, result, self._now_us)
            if self._call.dry_run:
                full = [] if self._exact else (yield from self._without_room(plan.consumed(result)))
                if full is None:
                    continue  # the counters could not be read: decided again without caps
                if full:
                    yield from self._full(full, counted=False)
                    continue
                return outcome
            # The record reserves the counters of what it proposes (all or none).
            reserve = plan.consumed(result)
            answer = yield decision_record(
                self._container_id, self._call, outcome, self._key, self._profile_id, reserve
            )
            if isinstance(answer, BadRequest):
                raise answer  # the database refuses a value it carries: again would too
            if isinstance(answer, NextOfferError):  # neither reserved nor recorded
                if not reserve:
                    # Nothing of it needs a reservation: answered, unrecorded (the
                    # database is away; docs/deploy.md), rather than decided again to no
                    # end and refused.
                    _NOT_RECORDED.error(
                        "decision %s not recorded: %s", outcome.proposition_id, answer
                    )
                    return outcome
                self._unreachable(answer)  # decided again, every capped offer as capped
                continue
            if answer:
                yield from self._full(answer)
                continue
            return outcome

    def _read(
        self, keys: Sequence[tuple[EngineKey, CounterKey]]
    ) -> Generator[Step, Any, dict[EngineKey, int]]:
        """Current counts by engine key; counters that cannot be read count as full."""
        if not keys:
            return {}
        counter_keys = [k for _, k in keys]
        counts = yield counter_keys
        if isinstance(counts, NextOfferError):
            _UNREACHABLE.error(
                "cap counters unavailable; capped offers count as capped: %s", counts
            )
            return self._plan.full(counter_keys)
        return {engine_key: counts[k] for engine_key, k in keys if k in counts}

    def _unreachable(self, exc: Exception) -> None:
        _UNREACHABLE.error("cap counters unavailable; capped offers count as capped: %s", exc)
        self._known.update(self._plan.all_full())

    def _without_room(
        self, wanted: Sequence[tuple[CounterKey, int]]
    ) -> Generator[Step, Any, list[CounterKey] | None]:
        """The counters among ``wanted`` with no room left now (a dry run's check in place
        of a reservation); ``None`` when they cannot be read (then all count as full)."""
        if not wanted:
            return []
        needs = counter_needs(wanted)
        counts = yield list(needs)
        if isinstance(counts, NextOfferError):
            self._unreachable(counts)
            return None
        return [key for key, (n, limit) in needs.items() if counts.get(key, 0) + n > limit]

    def _full(
        self, refused: Sequence[CounterKey], *, counted: bool = True
    ) -> Generator[Step, Any, None]:
        if counted and self._on_refused is not None:  # a refused reservation, not a dry run's
            self._on_refused()
        if not self._exact:
            # From now on decide on every current count, not on hope.
            self._exact = True
            self._known.update((yield from self._read(self._plan.all_keys)))
        full = self._plan.full(refused)
        self._known.update(full)
        if self._shared is not None:
            self._shared.update(self._plan.for_everyone(full))


def decision_record(
    container_id: str,
    call: DecisionCall,
    outcome: DecisionOutcome,
    profile_key: str,
    profile_id: str | None,
    reserve: Sequence[tuple[CounterKey, int]],
) -> DecisionRecord:
    """What recording ``outcome`` writes, reserving ``reserve`` first."""
    result = outcome.result
    namespace, identity = call.identities[0] if call.identities else ("", "")
    created = format_datetime(outcome.created)
    body: dict[str, Any] | None = (
        None
        if not call.log
        else {
            "propositionId": outcome.proposition_id,
            "timestamp": created,
            "identity": {"namespace": namespace, "id": identity},
            "profileId": profile_id,
            "profileKey": profile_key,
            "decisionRequestId": call.decision_request_id,
            "propositions": [_logged(p) for p in result.propositions],
        }
    )
    return DecisionRecord(
        proposition_id=outcome.proposition_id,
        container_id=container_id,
        created=created,
        created_us=outcome.created_us,
        profile_key=profile_key,
        body=body,
        day=created[:10],
        proposed_offers=[p.offer_id for p in result.proposed],
        reserve=reserve,
    )


def _logged(proposition: Proposition) -> dict[str, Any]:
    """One proposition as the decision event stores it."""
    options = []
    for option in proposition.options:
        entry: dict[str, Any] = {"id": option.offer_id}
        if option.score is not None:
            entry["score"] = option.score
        options.append(entry)
    fallback = proposition.fallback
    logged: dict[str, Any] = {
        "activity": proposition.activity.at_id,
        "placement": proposition.placement.at_id,
        "options": options,
        "fallback": fallback.offer_id if fallback is not None else None,
    }
    if proposition.ranking is not None:
        logged["ranking"] = ranking_note(*proposition.ranking)
    return logged

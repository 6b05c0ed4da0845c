"""``decide``: the selection pipeline over every proposition request (decisioning-api.md §4).

Per proposition request, in request order:

1. the decision's window (``xdm:startDate``/``xdm:endDate``); outside it → fallback;
2. the criteria that apply to the placement, grouped by ``xdm:ranking.xdm:priority``;
3. per group, the criteria's pre-indexed candidates (approved, with a representation for
   the placement — done at build time) through calendar, offer rule, offer segments,
   the criterion's profile constraint, caps and de-duplication;
4. ranking by priority (lazily: a tier is only evaluated if it can still contribute), by
   formula (every candidate scored; an offer in several criteria keeps its best value) or
   by a ranking strategy (every candidate's posterior sampled, ``strategy.py``), ties
   drawn uniformly at random;
5. later groups fill what earlier groups left; zero options → the fallback.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np

from nextoffer.engine.capping import CapCounters, CapLedger
from nextoffer.engine.catalog import Catalog
from nextoffer.engine.eligibility import MISSING as _MISSING
from nextoffer.engine.eligibility import Evaluation, Failure
from nextoffer.engine.explain import CandidateTrace, Reason, Tracer
from nextoffer.engine.fields import as_utc
from nextoffer.engine.model import ConstraintType, Criterion, Decision, Offer, OrderType, Placement
from nextoffer.engine.ranking import Ranked, draw, score, sort_ranked
from nextoffer.engine.request import DecisionRequest, PropositionRequest, resolve
from nextoffer.engine.result import (
    DecisionResult,
    Proposed,
    Proposition,
    Ranking,
)
from nextoffer.engine.strategy import Learned, Strategy, learn, slots
from nextoffer.engine.strategy import score as strategy_scores


def decide(
    catalog: Catalog,
    request: DecisionRequest,
    *,
    counters: CapCounters,
    now: datetime,
    rng: random.Random,
    learned: Mapping[str, Learned] | None = None,
    generator: np.random.Generator | None = None,
) -> DecisionResult:
    """Decide every proposition request of ``request`` against ``catalog``.

    Pure: reads no clock, no global randomness, no store. ``counters`` are the stored cap
    counts of ``catalog.capped_offer_ids(...)``; ``now`` is the decision time (naive means
    UTC); ``rng`` breaks ties. ``learned`` is what each ranking strategy has learned (by
    strategy ``@id``; none yet when absent) and ``generator`` samples its posteriors
    (derived from ``rng`` when not given, so a seeded ``rng`` decides alike). Raises
    :class:`~nextoffer.errors.NotFound` or :class:`~nextoffer.errors.Unprocessable` (with
    a JSON pointer) for a bad request;
    a rule failing on one offer never raises.
    """
    resolved = resolve(catalog, request)
    proposer = _Proposer(catalog, request, counters, as_utc(now), rng, learned or {}, generator)
    propositions = tuple(proposer.propose(*item) for item in resolved)
    return DecisionResult(propositions, tuple(proposer.proposed))


class _Proposer:
    """The state of one request: evaluation caches, cap ledger, what was already proposed."""

    def __init__(
        self,
        catalog: Catalog,
        request: DecisionRequest,
        counters: CapCounters,
        now: datetime,
        rng: random.Random,
        learned: Mapping[str, Learned],
        generator: np.random.Generator | None,
    ) -> None:
        self.evaluation = Evaluation(
            profile=request.profile,
            events=request.events,
            context=request.context,
            now=now,
            explain=request.explain,
            compile_rule=catalog.compile_rule,
            segment_rules=catalog.segment_rules,
        )
        self.now = now
        self.rng = rng
        self.learned = learned
        self._generator = generator
        self.request = request
        #: Feature slots per strategy (read once per request).
        self._slots: dict[str, tuple[int, ...]] = {}
        #: Strategies with nothing in ``learned``: their prior, for this request only.
        self._cold: dict[str, Learned] = {}
        self.explain = request.explain
        self.ledger = CapLedger(counters)
        self.allow_activities = request.allow_duplicates_across_activities
        self.allow_placements = request.allow_duplicates_across_placements
        #: offer @id -> (activity, placement) scopes it was proposed in by this request
        self.taken: dict[str, list[tuple[str, str]]] = {}
        self.proposed: list[Proposed] = []
        # per proposition
        self.activity_id = ""
        self.placement_id = ""
        self.tracer: Tracer | None = None
        self.ranking: Ranking | None = None

    # ---- one proposition -------------------------------------------------------------
    def propose(
        self, wanted: PropositionRequest, decision: Decision, placement: Placement
    ) -> Proposition:
        self.activity_id = decision.at_id
        self.placement_id = placement_id = placement.at_id
        tracer = self.tracer = Tracer() if self.explain else None
        self.ranking = None
        groups = decision.groups_for(placement_id)
        chosen: list[Ranked] = []
        reason = None
        if decision.start is not None and self.now < decision.start:
            reason = Reason.DECISION_NOT_STARTED
        elif decision.end is not None and self.now > decision.end:
            reason = Reason.DECISION_EXPIRED
        else:
            if tracer is not None:
                self._trace_build_time(groups)
            chosen_ids: set[str] = set()
            for group in groups:
                need = wanted.item_count - len(chosen)
                if need <= 0 and tracer is None:
                    break
                self._select(group, need, chosen, chosen_ids)
        options = tuple([entry.offer.option(placement_id, entry.score) for entry in chosen])
        for entry in chosen:
            if entry.offer.capped:
                self.ledger.record(entry.offer, placement_id)
            self.taken.setdefault(entry.offer.at_id, []).append((decision.at_id, placement_id))
            self.proposed.append(Proposed(entry.offer.at_id, decision.at_id, placement_id))
        fallback = None
        if not options:
            reason = reason or Reason.NO_ELIGIBLE_OPTION
            if decision.fallback is None:
                reason = Reason.FALLBACK_MISSING
            else:
                fallback = decision.fallback.option(placement_id)
                self.proposed.append(
                    Proposed(fallback.offer_id, decision.at_id, placement_id, True)
                )
        trace = None
        if tracer is not None:
            for rank, entry in enumerate(chosen, 1):
                tracer.add(
                    CandidateTrace(
                        entry.offer.at_id,
                        Reason.SELECTED,
                        entry.criterion.index,
                        rank=rank,
                        score=entry.value,
                        priority=entry.offer.priority,
                        estimate=entry.estimate,
                    )
                )
            ranking = self.ranking
            trace = tracer.finish(
                fallback_reason=None if options else reason,
                groups=tuple(tuple(c.index for c in group) for group in groups),
                strategy=ranking.strategy_id if ranking is not None else None,
                explored=ranking.explored if ranking is not None else None,
            )
        return Proposition(
            decision.ref,
            placement.ref,
            options,
            fallback,
            trace,
            self.ranking,
        )

    # ---- one criteria group ----------------------------------------------------------
    def _select(
        self,
        group: Sequence[Criterion],
        need: int,
        chosen: list[Ranked],
        chosen_ids: set[str],
    ) -> None:
        placement_id = self.placement_id
        live: list[Criterion] = []
        for criterion in group:
            constraint = criterion.constraint
            if constraint.type is not ConstraintType.NONE and not constraint.per_offer:
                # Option-invariant constraint: false cancels the whole criterion.
                failure = self.evaluation.constraint(constraint, None)
                if failure is not None:
                    if self.tracer is not None:
                        for offer in criterion.pool.by_placement.get(placement_id, ()):
                            self._trace(offer, criterion, failure)
                    continue
            if self.tracer is None and not self._may_admit(criterion):
                continue  # a condition every candidate needs is false: none is eligible
            live.append(criterion)
        if not live:
            return
        strategy = next((c.strategy for c in live if c.strategy is not None), None)
        if strategy is not None:
            self._by_strategy(strategy, live, need, chosen, chosen_ids)
        elif all(c.order is not OrderType.SCORING_FUNCTION for c in live):
            self._by_priority(live, need, chosen, chosen_ids)
        else:
            self._by_value(live, need, chosen, chosen_ids)

    def _may_admit(self, criterion: Criterion) -> bool:
        """False when a rule part that every candidate here needs does not hold (the
        candidates' own rules would all fail; with a trace they are walked to say so)."""
        required = criterion.pool.required.get(self.placement_id)
        if required:
            holds = self.evaluation.holds
            for rule in required:
                if not holds(rule):
                    return False
        return True

    def _by_priority(
        self, criteria: list[Criterion], need: int, chosen: list[Ranked], chosen_ids: set[str]
    ) -> None:
        """Walk priority tiers, evaluating a tier only while options are still needed."""
        placement_id = self.placement_id
        if len(criteria) == 1:
            only = criteria[0]
            offers: Sequence[Offer] = only.pool.by_placement.get(placement_id, ())
            owners: dict[str, list[Criterion]] | None = None
        else:
            owners = {}
            merged: dict[str, Offer] = {}
            for criterion in criteria:
                for offer in criterion.pool.by_placement.get(placement_id, ()):
                    merged.setdefault(offer.at_id, offer)
                    owners.setdefault(offer.at_id, []).append(criterion)
            offers = sorted(merged.values(), key=lambda o: (-o.priority, o.at_id))
        tracing = self.tracer is not None
        eligible, take = self._eligible, self._take  # hot loop: bind once
        # One criterion whose constraint was checked already, no trace: a plain candidate
        # (``Offer.plain``) is checked here, inline, as ``_eligible`` would check it.
        inline = criteria[0] if owners is None and not tracing else None
        if inline is not None and inline.constraint.per_offer:
            inline = None
        cache, invariant = self.evaluation.cached, self.evaluation.invariant
        ledger, taken, now = self.ledger, self.taken, self.now
        start, end = 0, len(offers)
        while start < end and (need > 0 or tracing):
            priority = offers[start].priority
            stop = start + 1
            while stop < end and offers[stop].priority == priority:
                stop += 1
            tier: list[Ranked] = []
            for position in range(start, stop):
                offer = offers[position]
                at_id = offer.at_id
                if at_id in chosen_ids:
                    continue
                if inline is not None and offer.plain:
                    if (offer.start is not None and now < offer.start) or (
                        offer.end is not None and now > offer.end
                    ):
                        continue
                    rule = offer.rule
                    if rule is not None:
                        result = cache.get(rule, _MISSING)
                        if result is _MISSING:
                            result = invariant(rule)
                        if result is not True:
                            if result is False:
                                continue
                            # A truthy value or a failure: the full check decides.
                            admitted = eligible(offer, criteria)
                            if admitted is not None:
                                tier.append(Ranked(offer, admitted, float(priority)))
                            continue
                    if offer.capped and ledger.check(offer, placement_id) is not None:
                        continue
                    if taken and at_id in taken and self._duplicate(offer) is not None:
                        continue
                    tier.append(Ranked(offer, inline, float(priority)))
                    continue
                admitted = eligible(offer, criteria if owners is None else owners[at_id])
                if admitted is not None:
                    tier.append(Ranked(offer, admitted, float(priority)))
            start = stop
            if tier:
                need = take(tier, need, chosen, chosen_ids)

    def _by_value(
        self, criteria: list[Criterion], need: int, chosen: list[Ranked], chosen_ids: set[str]
    ) -> None:
        """Score every eligible candidate; an offer in several criteria keeps its best value."""
        best: dict[str, Ranked] = {}
        for criterion in criteria:
            formula = criterion.formula if criterion.order is OrderType.SCORING_FUNCTION else None
            for offer in criterion.pool.by_placement.get(self.placement_id, ()):
                if offer.at_id in chosen_ids or self._eligible(offer, (criterion,)) is None:
                    continue
                if formula is None:
                    entry = Ranked(offer, criterion, float(offer.priority))
                else:
                    value = score(self.evaluation, formula, offer)
                    if isinstance(value, Failure):
                        if self.tracer is not None:
                            self._trace(offer, criterion, value)
                        continue
                    entry = Ranked(offer, criterion, value, value)
                previous = best.get(offer.at_id)
                if previous is None or entry.value > previous.value:
                    best[offer.at_id] = entry
        ranked = sort_ranked(list(best.values()))
        start, end = 0, len(ranked)
        while start < end and (need > 0 or self.tracer is not None):
            stop = start + 1
            while stop < end and ranked[stop].value == ranked[start].value:
                stop += 1
            need = self._take(ranked[start:stop], need, chosen, chosen_ids)
            start = stop

    def _by_strategy(
        self,
        strategy: Strategy,
        criteria: list[Criterion],
        need: int,
        chosen: list[Ranked],
        chosen_ids: set[str],
    ) -> None:
        """Sample the strategy's posterior for every candidate, then walk them in draw
        order, checking eligibility only until enough are found (like priority tiers; a
        trace walks all). Draws are independent, so the eligible come out ranked exactly as
        if only they had been drawn for.

        Adobe's rule (checked on save) makes every criterion of the group use the same
        strategy; an offer in several criteria is admitted by the first that admits it.
        """
        placement_id = self.placement_id
        owners: dict[str, list[Criterion]] | None = None
        candidates: Sequence[Offer]
        if len(criteria) == 1:
            candidates = criteria[0].pool.by_placement.get(placement_id, ())
        else:
            owners = {}
            merged: dict[str, Offer] = {}
            for criterion in criteria:
                for offer in criterion.pool.by_placement.get(placement_id, ()):
                    merged.setdefault(offer.at_id, offer)
                    owners.setdefault(offer.at_id, []).append(criterion)
            candidates = tuple(merged.values())
        if not candidates:
            return
        active = self._slots.get(strategy.at_id)
        if active is None:
            request = self.request
            active = self._slots[strategy.at_id] = slots(strategy, request.profile, request.context)
        if self._generator is None:
            self._generator = np.random.default_rng(self.rng.getrandbits(64))
        learned = self.learned.get(strategy.at_id)
        if learned is None:  # nothing learned yet: a posterior of the prior, for this call
            learned = self._cold.setdefault(strategy.at_id, learn(strategy.type, {}))
        scores = strategy_scores(strategy, learned, candidates, active, self._generator)
        draws, estimates = scores.draws, scores.estimates
        tracing = self.tracer is not None
        before = len(chosen)
        # Offers chosen by an earlier group are skipped before their check (as priority
        # tiers do); with none, only the admitted are looked up (a walk meets each position
        # once, so only a list holding an offer twice could repeat one), which spares
        # reading the @id of every offer checked.
        earlier = tracing or bool(chosen_ids)
        for position in scores.order:
            if need <= 0 and not tracing:
                break
            offer = candidates[position]
            if earlier and offer.at_id in chosen_ids:
                continue
            admitted = self._eligible(offer, criteria if owners is None else owners[offer.at_id])
            if admitted is None or (not earlier and offer.at_id in chosen_ids):
                continue
            entry = Ranked(
                offer, admitted, float(draws[position]), None, float(estimates[position])
            )
            if need > 0:  # no tie to break: draws are continuous
                chosen.append(entry)
                chosen_ids.add(offer.at_id)
                need -= 1
            else:  # a trace walks on: the rest is cut off
                self._take((entry,), 0, chosen, chosen_ids)
        self.ranking = Ranking(
            strategy.at_id,
            active,
            scores.explored,
            tuple([entry.offer.at_id for entry in chosen[before:]]),
        )

    def _take(
        self, tier: Sequence[Ranked], need: int, chosen: list[Ranked], chosen_ids: set[str]
    ) -> int:
        """Draw from one tier; the rest of it is cut off. Returns what is still needed."""
        if not tier:
            return need
        if need > 0 and len(tier) == 1:  # the common case: no tie to break
            entry = tier[0]
            chosen.append(entry)
            chosen_ids.add(entry.offer.at_id)
            return need - 1
        picks = draw(tier, need, self.rng) if need > 0 else []
        for entry in picks:
            chosen.append(entry)
            chosen_ids.add(entry.offer.at_id)
        if self.tracer is not None and len(picks) < len(tier):
            for entry in tier:
                if entry.offer.at_id not in chosen_ids:
                    self.tracer.add(
                        CandidateTrace(
                            entry.offer.at_id,
                            Reason.RANK_CUTOFF,
                            entry.criterion.index,
                            score=entry.value,
                            priority=entry.offer.priority,
                            estimate=entry.estimate,
                        )
                    )
        return need - len(picks)

    # ---- one candidate ---------------------------------------------------------------
    def _eligible(self, offer: Offer, criteria: Sequence[Criterion]) -> Criterion | None:
        """The criterion that admits ``offer`` after every eligibility stage, or ``None``."""
        failure = self.evaluation.offer(offer)
        if failure is not None:
            if self.tracer is not None:
                self._trace(offer, criteria[0], failure)
            return None
        admitted = None
        if len(criteria) == 1 and not criteria[0].constraint.per_offer:
            admitted = criteria[0]  # fast path: its invariant constraint was checked already
        for criterion in criteria if admitted is None else ():
            constraint = criterion.constraint
            if constraint.per_offer:
                failure = self.evaluation.constraint(constraint, offer)
                if failure is not None:
                    continue
            admitted = criterion
            break
        if admitted is None:
            if failure is not None:  # always: every criterion refused with a failure
                self._trace(offer, criteria[-1], failure)
            return None
        failure = self.ledger.check(offer, self.placement_id) if offer.capped else None
        if failure is None and self.taken and offer.at_id in self.taken:
            failure = self._duplicate(offer)
        if failure is not None:
            self._trace(offer, admitted, failure)
            return None
        return admitted

    def _duplicate(self, offer: Offer) -> Failure | None:
        for activity_id, placement_id in self.taken[offer.at_id]:
            same_activity = activity_id == self.activity_id
            same_placement = placement_id == self.placement_id
            if (
                (not same_activity and not self.allow_activities)
                or (not same_placement and not self.allow_placements)
                or (
                    same_activity
                    and same_placement
                    and not (self.allow_activities and self.allow_placements)
                )
            ):
                return Failure(
                    Reason.DUPLICATE, f"already proposed for {activity_id} in {placement_id}"
                )
        return None

    # ---- tracing ---------------------------------------------------------------------
    def _trace(self, offer: Offer, criterion: Criterion, failure: Failure) -> None:
        if self.tracer is not None:
            self.tracer.add(
                CandidateTrace(
                    offer.at_id,
                    failure.reason,
                    criterion.index,
                    detail=failure.detail,
                    rule_id=failure.rule_id,
                    counter=failure.counter,
                    limit=failure.limit,
                    priority=offer.priority,
                )
            )

    def _trace_build_time(self, groups: Sequence[Sequence[Criterion]]) -> None:
        """Members removed at build time: not approved, or no representation here."""
        tracer = self.tracer
        if tracer is None:
            return
        for group in groups:
            for criterion in group:
                for offer in criterion.pool.members:
                    if offer.status != "approved":
                        reason, detail = Reason.NOT_APPROVED, f"status {offer.status!r}"
                    elif self.placement_id not in offer.representations:
                        reason, detail = Reason.NO_REPRESENTATION, None
                    else:
                        continue
                    tracer.add(
                        CandidateTrace(
                            offer.at_id,
                            reason,
                            criterion.index,
                            detail=detail,
                            priority=offer.priority,
                        )
                    )

"""Why each candidate was (not) proposed: the explain trace.

A trace is built only when the request asks for it (``DecisionRequest.explain``); with
``explain`` false the selection code never creates a :class:`CandidateTrace` and never
evaluates a candidate it does not need, so tracing costs nothing.

One :class:`CandidateTrace` per offer per proposition. When an offer is met more than
once (several criteria, several groups), the trace keeps the outcome that got furthest
down the pipeline (:attr:`Reason.stage`), so a selected offer always reads ``SELECTED``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Reason(Enum):
    """Why a candidate stopped where it did, or why the fallback was returned.

    The value is the stable wire name; :attr:`stage` orders candidate reasons along the
    pipeline (decisioning-api.md §4.1).
    """

    # --- candidate outcomes, in pipeline order -------------------------------------
    #: The offer's ``xdm:status`` is not ``approved`` (build time, §4.1 step 3).
    NOT_APPROVED = "notApproved"
    #: The offer has no representation whose ``xdm:placement`` is the requested placement.
    NO_REPRESENTATION = "noRepresentation"
    #: The offer's catalog entry is broken (its rule did not compile or is missing, a bad date).
    INVALID_OFFER = "invalidOffer"
    #: ``now`` is before the offer's ``xdm:selectionConstraint.xdm:startDate``.
    NOT_STARTED = "notStarted"
    #: ``now`` is after the offer's ``xdm:selectionConstraint.xdm:endDate``.
    EXPIRED = "expired"
    #: The offer's eligibility rule evaluated to false (``detail`` names the failing part).
    RULE_FALSE = "ruleFalse"
    #: The offer's eligibility rule failed at run time: the offer is out, the request goes on.
    RULE_ERROR = "ruleError"
    #: The offer's own segment constraint is not met by the profile's segment membership.
    SEGMENT_NOT_MET = "segmentNotMet"
    #: The criterion's profile constraint rule(s) evaluated to false.
    CONSTRAINT_FALSE = "constraintFalse"
    #: The criterion's profile constraint rule failed at run time (or did not compile).
    CONSTRAINT_ERROR = "constraintError"
    #: The criterion's segment constraint (``anySegments``/``allSegments``) is not met.
    CONSTRAINT_SEGMENT_NOT_MET = "constraintSegmentNotMet"
    #: ``xdm:globalCap`` reached: ``counter`` ≥ ``limit`` (counter includes this request).
    GLOBAL_CAP_REACHED = "globalCapReached"
    #: ``xdm:profileCap`` reached for this profile: ``counter`` ≥ ``limit``.
    PROFILE_CAP_REACHED = "profileCapReached"
    #: The ranking formula failed or returned a non-number for this offer.
    FORMULA_ERROR = "formulaError"
    #: Already proposed by an earlier proposition of the request and duplicates are disallowed.
    DUPLICATE = "duplicate"
    #: Eligible, but ranked below the item count (or a higher group filled it).
    RANK_CUTOFF = "rankCutoff"
    #: Proposed; the trace carries its 1-based ``rank`` and, with a formula, its ``score``.
    SELECTED = "selected"

    # --- why a proposition fell back -----------------------------------------------
    #: No candidate survived the pipeline (the only reason that depends on offers).
    NO_ELIGIBLE_OPTION = "noEligibleOption"
    #: ``now`` is before the decision's ``xdm:startDate``: no offer was considered.
    DECISION_NOT_STARTED = "decisionNotStarted"
    #: ``now`` is after the decision's ``xdm:endDate``: no offer was considered.
    DECISION_EXPIRED = "decisionExpired"
    #: The decision's ``xdm:fallback`` does not resolve to a fallback offer in the catalog.
    FALLBACK_MISSING = "fallbackMissing"
    #: The fallback offer has no representation for the placement (content is ``None``).
    FALLBACK_WITHOUT_REPRESENTATION = "fallbackWithoutRepresentation"

    @property
    def stage(self) -> int:
        """Position along the candidate pipeline; higher means the offer got further."""
        return _STAGE.get(self, -1)


_CANDIDATE_REASONS = tuple(Reason)[: tuple(Reason).index(Reason.SELECTED) + 1]
_STAGE = {reason: position for position, reason in enumerate(_CANDIDATE_REASONS)}


@dataclass(frozen=True, slots=True)
class CandidateTrace:
    """What happened to one candidate offer in one proposition."""

    offer_id: str
    reason: Reason
    #: Index in ``xdm:criteria`` of the criterion that brought the offer in (or ranked it).
    criterion: int
    #: Human detail: the failing sub-condition, the rule error message, the duplicate's scope.
    detail: str | None = None
    #: The eligibility rule involved (offer rule or criterion constraint rule), if any.
    rule_id: str | None = None
    #: Cap stages: the counter seen (stored count + this request's propositions) and the cap.
    counter: int | None = None
    limit: int | None = None
    #: ``SELECTED``: 1-based position among the proposition's options.
    rank: int | None = None
    #: The ranking value used (formula score, or the priority when no formula ranked it).
    score: float | None = None
    priority: int | None = None
    #: Ranked by a strategy: its model's estimate of the reward (``score`` is the draw).
    estimate: float | None = None


@dataclass(frozen=True, slots=True)
class PropositionTrace:
    """The explain trace of one proposition: every candidate, and why the fallback (if any)."""

    candidates: tuple[CandidateTrace, ...]
    #: Set when the proposition returned the fallback; ``None`` when it returned options.
    fallback_reason: Reason | None = None
    #: Criteria (indices into ``xdm:criteria``) that applied to the placement, by group.
    groups: tuple[tuple[int, ...], ...] = ()
    #: The ranking strategy that ranked candidates, and whether it served at random.
    strategy: str | None = None
    explored: bool | None = None


class Tracer:
    """Collects candidate traces for one proposition (only created when explaining)."""

    __slots__ = ("_by_offer",)

    def __init__(self) -> None:
        self._by_offer: dict[str, CandidateTrace] = {}

    def add(self, trace: CandidateTrace) -> None:
        """Record ``trace`` unless the offer already got further down the pipeline."""
        current = self._by_offer.get(trace.offer_id)
        if current is None or trace.reason.stage > current.reason.stage:
            self._by_offer[trace.offer_id] = trace

    def get(self, offer_id: str) -> CandidateTrace | None:
        return self._by_offer.get(offer_id)

    def finish(
        self,
        *,
        fallback_reason: Reason | None,
        groups: tuple[tuple[int, ...], ...],
        strategy: str | None = None,
        explored: bool | None = None,
    ) -> PropositionTrace:
        """The trace, candidates ordered selected-first by rank, then by offer id."""
        ordered = sorted(
            self._by_offer.values(),
            key=lambda t: (t.rank is None, t.rank or 0, -t.reason.stage, t.offer_id),
        )
        return PropositionTrace(tuple(ordered), fallback_reason, groups, strategy, explored)

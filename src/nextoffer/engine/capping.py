"""Capping: how many times an offer may still be proposed (decisioning-api.md §5.1).

The engine does not count. The service passes in what it knows of the counters as
:class:`CapCounters` (``service/attempt.py``): the counts of rules a reservation does not
check (impressions, clicks, events), and of every rule once a reservation was refused or
when explaining. Recording the decision *reserves* the counters of
``DecisionResult.proposed`` — all under their limits, or none and the service decides
again — so rules that count propositions need no read first. Inside one request the engine
adds its own earlier propositions to the stored counts (:class:`CapLedger`), so an offer
with ``xdm:profileCap: 1`` is not proposed twice by two scopes of the same request.

An offer is capped when ``count >= cap``: a cap of 3 allows the 1st, 2nd and 3rd
proposition and refuses the 4th.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nextoffer.engine.eligibility import Failure
from nextoffer.engine.explain import Reason
from nextoffer.engine.frequency import CapRule
from nextoffer.engine.model import Offer


#: Not frozen (made once per decision: a frozen ``__init__`` sets each field through
#: ``object.__setattr__``); nothing changes one after it is made.
@dataclass(slots=True)
class CapCounters:
    """Stored counts of the capping rules a request may touch (missing means 0).

    The service's form is ``counts``, keyed by (offer ``@id``, rule id, placement ``@id``
    — ``""`` for rules that count the offer across placements), already for the right
    scope (everyone or this profile) and period. ``global_counts``/``profile_counts`` by
    offer are the short form for the ``globalCap``/``profileCap`` rules alone.
    """

    #: Propositions of the offer to anyone ("in totality"), for ``xdm:globalCap``.
    global_counts: Mapping[str, int] = field(default_factory=dict)
    #: Propositions of the offer to the requesting profile, for ``xdm:profileCap``.
    profile_counts: Mapping[str, int] = field(default_factory=dict)
    #: Every rule's count: (offer @id, rule id, placement @id or "") -> count.
    counts: Mapping[tuple[str, str, str], int] = field(default_factory=dict)

    def count(self, offer_id: str, rule: CapRule, placement_id: str) -> int:
        value = self.counts.get(
            (offer_id, rule.rule_id, placement_id if rule.per_placement else "")
        )
        return value if value is not None else self.short(offer_id, rule)

    def short(self, offer_id: str, rule: CapRule) -> int:
        """The count of ``globalCap``/``profileCap`` from the short form (0 otherwise)."""
        if rule.rule_id == "globalCap":
            return self.global_counts.get(offer_id, 0)
        if rule.rule_id == "profileCap":
            return self.profile_counts.get(offer_id, 0)
        return 0


class CapLedger:
    """Stored counts plus the propositions already made in this request."""

    __slots__ = ("_counters", "_local")

    def __init__(self, counters: CapCounters) -> None:
        self._counters = counters
        self._local: dict[tuple[str, str, str], int] = {}

    def check(self, offer: Offer, placement_id: str) -> Failure | None:
        """``None`` while the offer is under every capping rule; the first one reached otherwise."""
        counters, local = self._counters, self._local
        stored = counters.counts
        for rule in offer.caps:
            key = (offer.at_id, rule.rule_id, placement_id if rule.per_placement else "")
            count = stored.get(key)
            if count is None:
                count = counters.short(offer.at_id, rule)
            if local and rule.counts_propositions:
                count += local.get(key, 0)
            if count >= rule.limit:
                reason = (
                    Reason.PROFILE_CAP_REACHED if rule.per_profile else Reason.GLOBAL_CAP_REACHED
                )
                return Failure(reason, counter=count, limit=rule.limit, detail=rule.rule_id)
        return None

    def record(self, offer: Offer, placement_id: str) -> None:
        """Count one proposition of a capped offer made by this request."""
        for rule in offer.caps:
            if rule.counts_propositions:
                key = (offer.at_id, rule.rule_id, placement_id if rule.per_placement else "")
                self._local[key] = self._local.get(key, 0) + 1

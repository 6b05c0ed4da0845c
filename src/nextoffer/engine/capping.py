"""Capping: how many times an offer may still be proposed (decisioning-api.md §5.1).

The engine does not count. The service reads the counters of
``catalog.capped_offer_ids(activity_ids)`` in one batch, passes them in as
:class:`CapCounters`, and after the decision increments them from
``DecisionResult.proposed`` (unless it is a dry run). Inside one request the engine
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
from nextoffer.engine.model import Offer

_NONE: Mapping[str, int] = {}


@dataclass(frozen=True, slots=True)
class CapCounters:
    """Stored proposition counts, per offer ``@id`` (missing means 0)."""

    #: Propositions of the offer to anyone ("in totality").
    global_counts: Mapping[str, int] = field(default_factory=dict)
    #: Propositions of the offer to the requesting profile.
    profile_counts: Mapping[str, int] = field(default_factory=dict)


NO_COUNTS = CapCounters(_NONE, _NONE)


class CapLedger:
    """Stored counts plus the propositions already made in this request."""

    __slots__ = ("_counters", "_local")

    def __init__(self, counters: CapCounters) -> None:
        self._counters = counters
        self._local: dict[str, int] = {}

    def check(self, offer: Offer) -> Failure | None:
        """``None`` while the offer is under both caps; the failing cap otherwise."""
        extra = self._local.get(offer.at_id, 0)
        cap = offer.global_cap
        if cap is not None:
            count = self._counters.global_counts.get(offer.at_id, 0) + extra
            if count >= cap:
                return Failure(Reason.GLOBAL_CAP_REACHED, counter=count, limit=cap)
        cap = offer.profile_cap
        if cap is not None:
            count = self._counters.profile_counts.get(offer.at_id, 0) + extra
            if count >= cap:
                return Failure(Reason.PROFILE_CAP_REACHED, counter=count, limit=cap)
        return None

    def record(self, offer: Offer) -> None:
        """Count one proposition of a capped offer made by this request."""
        if offer.global_cap is not None or offer.profile_cap is not None:
            self._local[offer.at_id] = self._local.get(offer.at_id, 0) + 1

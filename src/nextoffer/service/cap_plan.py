"""Which cap counters one decision request may touch, and their names.

A request names activities and placements; its :class:`CapPlan` maps the engine's keys
for capped candidates — (offer, rule, placement) — to :class:`CounterKey` names (scope,
period and epoch included), built only for the counters the request reads or reserves.
The rules per (activities, placements) are found once per snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from nextoffer.engine import Catalog, DecisionResult, PropositionRequest
from nextoffer.engine.frequency import CapRule
from nextoffer.service.caps import counter_key
from nextoffer.service.catalogs import Snapshot
from nextoffer.storage.counters import CounterKey

#: The engine's name for a counter: (offer id, rule id, placement id or "").
EngineKey = tuple[str, str, str]
_Rules = tuple[dict[EngineKey, CapRule], list[tuple[EngineKey, CapRule]]]
#: The key of a snapshot's counters that are the same for every request (``CapPlan``).
_FIXED = ("fixed keys",)
#: The key of a snapshot's rules that count propositions, per offer (``CapPlan``).
_COUNTING = ("counting rules",)


def _rules(catalog: Catalog, activities: tuple[str, ...], placements: tuple[str, ...]) -> _Rules:
    """The capping rules of every capped candidate, and those a reservation does not check."""
    rules: dict[EngineKey, CapRule] = {}
    for offer_id in sorted(catalog.capped_offer_ids(activities)):
        offer = catalog.offers.get(offer_id)
        for rule in offer.caps if offer is not None else ():
            for placement in placements if rule.per_placement else ("",):
                rules[(offer_id, rule.rule_id, placement)] = rule
    return rules, [(ek, rule) for ek, rule in rules.items() if not rule.counts_propositions]


class CapPlan:
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
        plans = snapshot.cap_plans
        fixed = plans.get(_FIXED)
        if fixed is None:
            fixed = plans[_FIXED] = {}
        self._fixed: dict[tuple[str, str, str, int], CounterKey] = fixed
        #: Per offer, its rules that count propositions (what a proposal consumes): the
        #: same for every request on this snapshot, found once per offer.
        counting = plans.get(_COUNTING)
        if counting is None:
            counting = plans[_COUNTING] = {}
        self._counting: dict[str, tuple[CapRule, ...]] = counting
        activities: tuple[str, ...]
        placements: tuple[str, ...]
        if len(propositions) == 1:  # the usual request: one activity, one placement
            activities, placements = (propositions[0].activity_id,), (propositions[0].placement_id,)
        else:
            activities = tuple(sorted({p.activity_id for p in propositions}))
            placements = tuple(sorted({p.placement_id for p in propositions}))
        rules = plans.get((activities, placements))
        if rules is None:
            rules = plans[(activities, placements)] = _rules(self._catalog, activities, placements)
        #: engine key -> its rule, for every capped candidate of the request; and the
        #: entries whose rules a reservation does not check
        self._rules: dict[EngineKey, CapRule] = rules[0]
        self._unreserved: list[tuple[EngineKey, CapRule]] = rules[1]
        self._built: dict[EngineKey, CounterKey] = {}
        self._by_key: dict[CounterKey, EngineKey] = {}

    @property
    def all_keys(self) -> list[tuple[EngineKey, CounterKey]]:
        return [(ek, self._key(ek, rule)) for ek, rule in self._rules.items()]

    @property
    def unreserved_keys(self) -> list[tuple[EngineKey, CounterKey]]:
        """Counters a reservation does not check: rules counting impressions, clicks, events."""
        return [(ek, self._key(ek, rule)) for ek, rule in self._unreserved]

    def all_full(self) -> dict[EngineKey, int]:
        """Every counter at its limit: no capped offer is proposed."""
        return {ek: rule.limit for ek, rule in self._rules.items()}

    def full(self, keys: Sequence[CounterKey]) -> dict[EngineKey, int]:
        """These counters at their limits."""
        found = {}
        for key in keys:
            engine_key = self._by_key.get(key)
            if engine_key is not None:
                found[engine_key] = self._rules[engine_key].limit
        return found

    def for_everyone(self, counts: dict[EngineKey, int]) -> dict[EngineKey, int]:
        """The entries of ``counts`` whose counters every profile shares (not per profile):
        the same counter for every decision of a batch (one ``now``)."""
        return {ek: n for ek, n in counts.items() if not self._rules[ek].per_profile}

    def _key(self, engine_key: EngineKey, rule: CapRule) -> CounterKey:
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
        counting = self._counting
        for proposed in result.proposed:
            if proposed.fallback:
                continue
            offer_id = proposed.offer_id
            rules = counting.get(offer_id)
            if rules is None:
                offer = self._catalog.offers.get(offer_id)
                rules = counting[offer_id] = (
                    tuple(rule for rule in offer.caps if rule.counts_propositions)
                    if offer is not None
                    else ()
                )
            for rule in rules:
                placement = proposed.placement_id if rule.per_placement else ""
                wanted.append((self._key((offer_id, rule.rule_id, placement), rule), rule.limit))
        return wanted

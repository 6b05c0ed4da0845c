"""From an offer's capping rules to the counters that hold their counts.

The engine knows the rules (``Offer.caps``, :mod:`nextoffer.engine.frequency`); the counter
store knows numbers by :class:`~nextoffer.storage.counters.CounterKey`. This module names
the counter a rule uses for one scope, placement and moment — the same name whether a
decision reads it, a decision reserves it, or an impression adds to it.
"""

from __future__ import annotations

from datetime import datetime

from nextoffer.engine.frequency import CapRule, period_of
from nextoffer.storage.counters import EVERYONE, CounterKey


def counter_key(
    container_id: str,
    offer_id: str,
    rule: CapRule,
    *,
    profile_key: str,
    placement_id: str,
    moment: datetime,
    epoch: int = 0,
) -> CounterKey:
    """The counter of ``rule`` for this profile (if per profile), placement (if per placement)
    and the period ``moment`` falls in. ``epoch`` moves on when the offer's dates restart its
    counting (spec §5.2), so old counts stay behind."""
    return CounterKey(
        container_id=container_id,
        offer_id=offer_id,
        rule=f"{rule.rule_id}#{epoch}" if epoch else rule.rule_id,
        scope=profile_key if rule.per_profile else EVERYONE,
        placement=placement_id if rule.per_placement else "",
        period=period_of(rule, moment),
    )

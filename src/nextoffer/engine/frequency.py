"""Capping rules of an offer: what is counted, for whom, per what, over which period.

Two sources, one model (:class:`CapRule`):

* ``xdm:cappingConstraint`` (spec decisioning-api §5.1): ``xdm:globalCap`` and
  ``xdm:profileCap`` count propositions of the offer, forever.
* ``xdm:frequencyCappingConstraints`` (§5.2, the XDM frequency-capping schema; up to 10
  per offer): each counts one kind of event — ``decisioning`` (propositions),
  ``impression``, ``click`` or ``custom`` (experience events matching ``xdm:customQuery``)
  — for everyone (``global``) or per profile, for the offer across placements or for each
  placement apart (``xdm:entity``), optionally per period (``xdm:repeat``: N days, weeks
  or months; periods start at 00:00 UTC, weeks on Sunday, months on the 1st; at most
  2 years).

An offer is capped when any rule's counter has reached its limit. Pure: no IO, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from nextoffer.errors import Unprocessable

MAX_RULES = 10
#: "Any duration you choose cannot exceed 2 years."
MAX_PERIOD = {"day": 731, "week": 104, "month": 24}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: 1970-01-04 was a Sunday: week periods count from there.
_FIRST_SUNDAY_DAYS = 3


class CapEvent(Enum):
    """What a capping rule counts."""

    #: Propositions of the offer (a decision that returned it; dry runs excluded).
    DECISIONING = "decisioning"
    #: ``decisioning.propositionDisplay`` feedback naming the offer.
    IMPRESSION = "impression"
    #: ``decisioning.propositionInteract`` feedback naming the offer.
    CLICK = "click"
    #: Experience events of the profile for which ``xdm:customQuery`` is true.
    CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class CapRule:
    #: Stable name of the counter: the same rule keeps its counts when its limit changes.
    rule_id: str
    limit: int
    per_profile: bool
    per_placement: bool
    events: frozenset[CapEvent]
    #: (unit, count) of the reset period, or None for a rule that never resets.
    repeat: tuple[str, int] | None = None
    custom_query: str | None = None
    #: True when the rule counts propositions (``CapEvent.DECISIONING`` in ``events``):
    #: read for every capped candidate, so found once here.
    counts_propositions: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts_propositions", CapEvent.DECISIONING in self.events)


def _period_index(unit: str, count: int, moment: datetime) -> int:
    moment = moment.astimezone(UTC)
    if unit == "day":
        return (moment - _EPOCH).days // count
    if unit == "week":
        return ((moment - _EPOCH).days - _FIRST_SUNDAY_DAYS) // 7 // count
    return ((moment.year - 1970) * 12 + moment.month - 1) // count


def period_of(rule: CapRule, moment: datetime) -> int:
    """The counter period ``moment`` falls in (0 for rules that never reset).

    Periods are aligned on the calendar (00:00 UTC; Sundays; the 1st of the month), so
    every process and node computes the same period from the clock alone.
    """
    if rule.repeat is None:
        return 0
    unit, count = rule.repeat
    # +1 keeps 0 free for "never resets", so a rule that gains a period gets new counters.
    return _period_index(unit, count, moment) + 1


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _fail(message: str, pointer: str) -> Unprocessable:
    return Unprocessable(message, pointer=pointer)


def _rule(spec: Any, where: str) -> CapRule | None:
    if not isinstance(spec, Mapping):
        raise _fail("a capping rule must be an object", where)
    enabled = spec.get("xdm:enabled", True)
    if not isinstance(enabled, bool):
        raise _fail("xdm:enabled must be true or false", f"{where}/xdm:enabled")
    limit = spec.get("xdm:limit", spec.get("xdm:count"))
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _fail("xdm:limit must be an integer of at least 1", f"{where}/xdm:limit")
    scope = spec.get("xdm:scope", "global")
    if scope not in ("global", "profile"):
        raise _fail("xdm:scope must be global or profile", f"{where}/xdm:scope")
    entity = spec.get("xdm:entity", "offer")
    if entity not in ("offer", "placement"):
        raise _fail("xdm:entity must be offer or placement", f"{where}/xdm:entity")
    raw_events = spec.get("xdm:events", ["decisioning"])
    if not isinstance(raw_events, list) or not raw_events:
        raise _fail("xdm:events must be a non-empty array", f"{where}/xdm:events")
    events: set[CapEvent] = set()
    for index, name in enumerate(raw_events):
        try:
            events.add(CapEvent(name))
        except ValueError:
            known = ", ".join(e.value for e in CapEvent)
            raise _fail(
                f"unknown capping event {name!r}; use one of {known}", f"{where}/xdm:events/{index}"
            ) from None
    query = spec.get("xdm:customQuery")
    if CapEvent.CUSTOM in events and (not isinstance(query, str) or not query.strip()):
        raise _fail(
            "a custom capping event needs xdm:customQuery (a PQL condition)",
            f"{where}/xdm:customQuery",
        )
    repeat = None
    raw_repeat = spec.get("xdm:repeat")
    if raw_repeat is not None:
        if not isinstance(raw_repeat, Mapping):
            raise _fail("xdm:repeat must be an object", f"{where}/xdm:repeat")
        if raw_repeat.get("xdm:enabled", True) is True:
            unit = raw_repeat.get("xdm:unit")
            if unit not in MAX_PERIOD:
                raise _fail(
                    "xdm:repeat/xdm:unit must be day, week or month", f"{where}/xdm:repeat/xdm:unit"
                )
            count = raw_repeat.get("xdm:unitCount", 1)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise _fail(
                    "xdm:unitCount must be an integer of at least 1",
                    f"{where}/xdm:repeat/xdm:unitCount",
                )
            if count > MAX_PERIOD[unit]:
                raise _fail(
                    f"a capping period may not exceed 2 years ({MAX_PERIOD[unit]} {unit}s)",
                    f"{where}/xdm:repeat/xdm:unitCount",
                )
            repeat = (unit, count)
    if not enabled:
        return None
    kinds = sorted(e.value for e in events)
    rule_id = "f:" + _digest(
        kinds, scope, entity, repeat, query if CapEvent.CUSTOM in events else None
    )
    return CapRule(
        rule_id=rule_id,
        limit=limit,
        per_profile=scope == "profile",
        per_placement=entity == "placement",
        events=frozenset(events),
        repeat=repeat,
        custom_query=query if CapEvent.CUSTOM in events else None,
    )


def cap_rules(body: Mapping[str, Any], *, prefix: str = "") -> tuple[CapRule, ...]:
    """Every capping rule of an offer body; :class:`Unprocessable` names a bad one."""
    rules: list[CapRule] = []
    legacy = body.get("xdm:cappingConstraint")
    if isinstance(legacy, Mapping):
        for key, per_profile in (("xdm:globalCap", False), ("xdm:profileCap", True)):
            limit = legacy.get(key)
            if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1:
                name = key.split(":")[1]
                rules.append(
                    CapRule(name, limit, per_profile, False, frozenset({CapEvent.DECISIONING}))
                )
    specs = body.get("xdm:frequencyCappingConstraints")
    if specs is None:
        return tuple(rules)
    where = f"{prefix}/xdm:frequencyCappingConstraints"
    if not isinstance(specs, list):
        raise _fail("xdm:frequencyCappingConstraints must be an array", where)
    if len(specs) > MAX_RULES:
        raise _fail(f"an offer may have at most {MAX_RULES} capping rules", where)
    for index, spec in enumerate(specs):
        rule = _rule(spec, f"{where}/{index}")
        if rule is not None:
            rules.append(rule)
    return tuple(rules)

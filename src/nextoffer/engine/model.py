"""The compiled library objects a :class:`~nextoffer.engine.catalog.Catalog` holds.

Each is a frozen dataclass built once by :func:`~nextoffer.engine.build.build_catalog`
from a stored xcore instance; ``body`` keeps the instance's ``_instance`` object so the
API layer can serialise any metadata it wants without the engine knowing the wire form.
Objects compare by identity (``eq=False``): two offers are the same offer only if they
are the same catalog entry.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from nextoffer.engine.frequency import CapRule
from nextoffer.engine.result import FallbackOption, ObjectRef, Option
from nextoffer.engine.strategy import Strategy


class CompiledRule(Protocol):
    """What ``nextoffer.pql.compile`` returns: a rule or formula ready to evaluate."""

    def evaluate(
        self,
        *,
        profile: Mapping[str, Any],
        events: Any = None,
        now: datetime | None = None,
        context: Mapping[str, Any] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> Any: ...


#: ``compile(source, *, format="pql/text", kind="rule"|"formula") -> CompiledRule``;
#: raises :class:`nextoffer.errors.PQLError` for invalid source.
CompileRule = Callable[..., CompiledRule]


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """An eligibility rule or a ranking formula, compiled (or not, with ``problem`` saying why)."""

    at_id: str
    source: str
    compiled: CompiledRule | None
    #: True when the source mentions ``offer``: then it is evaluated once per candidate with the
    #: PQL variable ``offer`` bound; otherwise once per request (the value cannot depend on it).
    uses_offer: bool
    problem: str | None = None
    #: ``compiled.evaluate`` (``None`` without ``compiled``), read once at build time: a
    #: decision calls it without loading the compiled rule object first.
    evaluate: Callable[..., Any] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        compiled = self.compiled
        object.__setattr__(self, "evaluate", None if compiled is None else compiled.evaluate)


class ConstraintType(Enum):
    """``xdm:profileConstraintType`` (XDM profile-constraint-details)."""

    #: No constraint: every profile qualifies ("All visitors").
    NONE = "none"
    #: ``xdm:eligibilityRule`` must evaluate to true.
    ELIGIBILITY_RULE = "eligibilityRule"
    #: The profile must be a member of at least one of ``xdm:segmentIdentities``.
    ANY_SEGMENTS = "anySegments"
    #: The profile must be a member of every one of ``xdm:segmentIdentities``.
    ALL_SEGMENTS = "allSegments"
    #: Every rule of ``xdm:eligibilityRules`` (our name; the schema names none) must be true.
    RULES = "rules"


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A segment identity: its id and, when given, the namespace code it lives under."""

    segment_id: str
    namespace: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ProfileConstraint:
    """A criterion's (or offer's) profile constraint, with its rules resolved."""

    type: ConstraintType
    rules: tuple[Rule, ...] = ()
    segments: tuple[SegmentRef, ...] = ()
    #: True when a rule reads ``offer`` and must be evaluated for each candidate
    #: (a field, not a property: it is read for every candidate).
    per_offer: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_offer", any(rule.uses_offer for rule in self.rules))


NO_CONSTRAINT = ProfileConstraint(ConstraintType.NONE)


@dataclass(frozen=True, slots=True, eq=False)
class Placement:
    at_id: str
    instance_id: str
    etag: int
    body: Mapping[str, Any]
    #: As a proposition echoes it (made once, not per decision).
    ref: ObjectRef = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", ObjectRef(self.at_id, self.etag, self.body))


@dataclass(frozen=True, slots=True, eq=False)
class Offer:
    """A personalized offer, with everything the request-independent stages need."""

    at_id: str
    instance_id: str
    etag: int
    body: Mapping[str, Any]
    status: str
    priority: int
    tags: frozenset[str]
    characteristics: Mapping[str, Any]
    #: ``xdm:placement`` → the representation object (first one wins if an offer repeats one).
    representations: Mapping[str, Mapping[str, Any]]
    start: datetime | None
    end: datetime | None
    rule: Rule | None
    #: An offer-level segment constraint (``xdm:selectionConstraint.xdm:profileConstraintType``).
    constraint: ProfileConstraint | None
    #: Capping rules: ``xdm:cappingConstraint`` and ``xdm:frequencyCappingConstraints``.
    caps: tuple[CapRule, ...]
    #: The PQL variable ``offer`` seen by ranking formulas and offer-aware rules.
    variable: Mapping[str, Any]
    #: Why this offer can never be proposed (broken rule reference, unreadable date), if so.
    problem: str | None = None
    #: True when the offer has a capping rule (read for every candidate).
    capped: bool = field(init=False)
    #: True when the only stages before capping are the calendar and an offer rule that
    #: does not read ``offer`` (or none): no problem, no offer-level constraint. The
    #: selection checks such a candidate inline (``selection._Proposer._by_priority``).
    plain: bool = field(init=False)

    #: The option this offer is in a placement when no formula scored it, by placement
    #: ``@id`` (made on first use: the same for every decision of the snapshot).
    _options: dict[str, Option] = field(default_factory=dict, init=False, repr=False)

    def option(self, placement_id: str, score: float | None) -> Option:
        """The offer as an option of ``placement_id``, with its formula ``score`` if any."""
        if score is not None:
            return Option(
                self.at_id,
                self.etag,
                self.body,
                self.representations.get(placement_id),
                self.priority,
                score,
            )
        found = self._options.get(placement_id)
        if found is None:
            found = self._options[placement_id] = Option(
                self.at_id,
                self.etag,
                self.body,
                self.representations.get(placement_id),
                self.priority,
            )
        return found

    def __post_init__(self) -> None:
        object.__setattr__(self, "capped", bool(self.caps))
        rule = self.rule
        object.__setattr__(
            self,
            "plain",
            self.problem is None
            and self.constraint is None
            and (rule is None or (rule.evaluate is not None and not rule.uses_offer)),
        )


@dataclass(frozen=True, slots=True, eq=False)
class Fallback:
    at_id: str
    instance_id: str
    etag: int
    body: Mapping[str, Any]
    representations: Mapping[str, Mapping[str, Any]]
    #: The fallback as proposed in a placement, by placement ``@id`` (made on first use).
    _options: dict[str, FallbackOption] = field(default_factory=dict, init=False, repr=False)

    def option(self, placement_id: str) -> FallbackOption:
        """The fallback as proposed in ``placement_id``."""
        found = self._options.get(placement_id)
        if found is None:
            found = self._options[placement_id] = FallbackOption(
                self.at_id, self.etag, self.body, self.representations.get(placement_id)
            )
        return found


@dataclass(frozen=True, slots=True, eq=False)
class Pool:
    """The offers of one collection (or direct option list), indexed for decisioning."""

    #: Every personalized offer the collection matches, any status, by (-priority, @id)
    #: when iterated (``engine.sorted_chunks``: a build shares its unchanged chunks).
    members: Collection[Offer]
    #: placement ``@id`` → approved members with a representation for it, by (-priority, @id).
    by_placement: Mapping[str, tuple[Offer, ...]]
    #: placement ``@id`` → conditions every candidate's rule needs (top-level ``and``
    #: operands they all share, none reading ``offer``): when one does not hold for a
    #: request, no candidate there can be eligible and the pool is not walked.
    required: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)


class OrderType(Enum):
    """``xdm:ranking.xdm:order.xdm:orderEvaluationType``."""

    #: Offer priority (the default when no order is given).
    STATIC = "static"
    #: A ranking formula (``xdm:function``) scores each offer; the score is returned.
    SCORING_FUNCTION = "scoringFunction"
    #: A ranking strategy (``xdm:rankingStrategy``) samples its model per decision.
    RANKING_STRATEGY = "rankingStrategy"


@dataclass(frozen=True, slots=True, eq=False)
class Criterion:
    """One entry of a decision's ``xdm:criteria``."""

    index: int
    #: Placements the criterion applies to; empty means any placement.
    placements: frozenset[str]
    pool: Pool
    #: ``xdm:ranking.xdm:priority``: criteria with equal values form one group; higher first.
    group_priority: int
    constraint: ProfileConstraint
    order: OrderType
    #: The ranking formula when ``order`` is ``SCORING_FUNCTION`` (``None`` if it is missing).
    formula: Rule | None
    #: The ranking strategy when ``order`` is ``RANKING_STRATEGY`` (``None`` if it is
    #: missing: then the criterion ranks by priority, and the catalog reports it).
    strategy: Strategy | None = None

    def applies_to(self, placement_id: str) -> bool:
        return not self.placements or placement_id in self.placements


@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    """An offer activity: its window, criteria and fallback."""

    at_id: str
    instance_id: str
    etag: int
    body: Mapping[str, Any]
    status: str
    start: datetime | None
    end: datetime | None
    criteria: tuple[Criterion, ...]
    fallback_id: str | None
    fallback: Fallback | None
    #: ``groups_for`` by placement, found on first use (the decision never changes; a
    #: rebuild that changes it makes a new one).
    _groups: dict[str, tuple[tuple[Criterion, ...], ...]] = field(
        default_factory=dict, init=False, repr=False
    )
    #: As a proposition echoes it (made once, not per decision).
    ref: ObjectRef = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", ObjectRef(self.at_id, self.etag, self.body))

    def covers(self, placement_id: str) -> bool:
        """True when at least one criterion applies to the placement."""
        return bool(self.groups_for(placement_id))

    def groups_for(self, placement_id: str) -> tuple[tuple[Criterion, ...], ...]:
        """Applicable criteria grouped by ``group_priority`` (higher first), in list order."""
        found = self._groups.get(placement_id)
        if found is None:
            found = self._groups[placement_id] = self._group(placement_id)
        return found

    def _group(self, placement_id: str) -> tuple[tuple[Criterion, ...], ...]:
        applicable = [c for c in self.criteria if c.applies_to(placement_id)]
        if len(applicable) == 1:
            return ((applicable[0],),)
        by_priority: dict[int, list[Criterion]] = {}
        for criterion in applicable:
            by_priority.setdefault(criterion.group_priority, []).append(criterion)
        return tuple(tuple(by_priority[p]) for p in sorted(by_priority, reverse=True))

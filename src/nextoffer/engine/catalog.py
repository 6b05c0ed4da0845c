"""The catalog: an immutable, pre-indexed snapshot of an Offer Library container.

:func:`build_catalog` does all the work that does not depend on a request (decisioning-api.md
§1: "any constraints defined by the business logic that aren't dependent on runtime context
will be evaluated" at activation): compiling rules and formulas, resolving collection
membership, dropping offers that are not ``approved``, indexing offers by the placements
they have a representation for, and sorting each (collection, placement) list by priority.
:func:`~nextoffer.engine.selection.decide` then only walks short, sorted lists.
"""

from __future__ import annotations

import re
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from immutables import Map, MapMutation

from nextoffer.engine.diagnostics import CatalogError, CatalogErrorKind
from nextoffer.engine.fields import non_negative_int, obj, parse_time, prop, strings
from nextoffer.engine.frequency import cap_rules
from nextoffer.engine.model import (
    NO_CONSTRAINT,
    CompileRule,
    ConstraintType,
    Criterion,
    Decision,
    Fallback,
    Offer,
    OrderType,
    Placement,
    Pool,
    ProfileConstraint,
    Rule,
    SegmentRef,
)
from nextoffer.engine.sorted_chunks import SortedChunks
from nextoffer.engine.strategy import Strategy, StrategyType
from nextoffer.errors import PQLError, Unprocessable

_NS = "https://ns.adobe.com/experience/offer-management/"
PLACEMENT = _NS + "offer-placement"
PERSONALIZED_OFFER = _NS + "personalized-offer"
FALLBACK_OFFER = _NS + "fallback-offer"
COLLECTION = _NS + "offer-filter"
TAG = _NS + "tag"
ELIGIBILITY_RULE = _NS + "eligibility-rule"
DECISION = _NS + "offer-activity"
RANKING_FORMULA = _NS + "ranking-function"
RANKING_STRATEGY = "https://ns.nextoffer.dev/offer-management/ranking-strategy"
#: ``xdm:orderEvaluationType`` as the dps API writes a strategy order.
_ORDER_ALIASES = {"ranking-strategy": "rankingStrategy"}

_OFFER_WORD = re.compile(r"\boffer\b")
_EMPTY: Map[str, Any] = Map()


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """``mapping`` as a catalog keeps it: a persistent :class:`Map` as it is (nothing can
    change it, and the next build shares it), anything else copied behind a read-only view."""
    return mapping if isinstance(mapping, Map) else MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class CatalogInstance:
    """A stored xcore instance as the engine receives it.

    ``schema`` is the versionless schema URI; ``body`` is the ``_instance`` object.
    """

    schema: str
    at_id: str
    instance_id: str
    etag: int
    body: Mapping[str, Any]


class Catalog:
    """An immutable decisioning snapshot; build it with :func:`build_catalog`."""

    __slots__ = (
        "_capped",
        "_memo",
        "compile_rule",
        "decisions",
        "errors",
        "fallbacks",
        "offers",
        "placements",
        "segment_rules",
        "strategies",
    )

    def __init__(
        self,
        *,
        placements: Mapping[str, Placement],
        offers: Mapping[str, Offer],
        fallbacks: Mapping[str, Fallback],
        decisions: Mapping[str, Decision],
        errors: tuple[CatalogError, ...],
        compile_rule: CompileRule | None = None,
        strategies: Mapping[str, Strategy] | None = None,
        memo: _Memo | None = None,
        segment_rules: Mapping[str, Any] | None = None,
        capped: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.placements: Mapping[str, Placement] = _frozen(placements)
        self.offers: Mapping[str, Offer] = _frozen(offers)
        self.fallbacks: Mapping[str, Fallback] = _frozen(fallbacks)
        self.decisions: Mapping[str, Decision] = _frozen(decisions)
        #: Ranking strategies by ``@id`` (those a criterion names, and the others).
        self.strategies: Mapping[str, Strategy] = MappingProxyType(dict(strategies or {}))
        #: Every problem found while building; empty for a healthy library.
        self.errors: tuple[CatalogError, ...] = errors
        #: The compiler the snapshot was built with (explain uses it to name false sub-rules).
        self.compile_rule = compile_rule
        #: Segment definitions (audiences) by id, compiled: a segment constraint naming one
        #: is met when its rule is true of the profile (as well as by ``segmentMembership``).
        self.segment_rules: Mapping[str, Any] = MappingProxyType(dict(segment_rules or {}))
        #: Per decision, the capped offers it may propose (``capped``: as the builder
        #: kept them per pool; else found here).
        self._capped: Mapping[str, frozenset[str]] = MappingProxyType(
            dict(capped)
            if capped is not None
            else {at_id: _capped_ids(decision) for at_id, decision in decisions.items()}
        )
        #: What the next build may reuse (see ``build_catalog(previous=…)``).
        self._memo = memo

    def capped_offer_ids(self, activity_ids: Iterable[str]) -> frozenset[str]:
        """``@id``s of the capped offers these decisions may propose: the counters to fetch."""
        found: frozenset[str] = frozenset()
        for activity_id in activity_ids:
            found |= self._capped.get(activity_id, frozenset())
        return found

    def candidates(self, activity_id: str, placement_id: str) -> tuple[Offer, ...]:
        """The compiled candidate set of a decision scope (the §1.2 "activity-to-offers").

        Approved offers of the applicable criteria's collections that have a representation
        for the placement, without duplicates, in criteria order then priority order.
        """
        decision = self.decisions.get(activity_id)
        if decision is None:
            return ()
        seen: dict[str, Offer] = {}
        for criterion in decision.criteria:
            if criterion.applies_to(placement_id):
                for offer in criterion.pool.by_placement.get(placement_id, ()):
                    seen.setdefault(offer.at_id, offer)
        return tuple(seen.values())


def _capped_ids(decision: Decision) -> frozenset[str]:
    return frozenset(
        offer.at_id
        for criterion in decision.criteria
        for offers in criterion.pool.by_placement.values()
        for offer in offers
        if offer.capped
    )


def _default_compile() -> CompileRule:
    from nextoffer import pql  # deferred: the engine must import without the rule language

    compile_rule: CompileRule = pql.compile
    return compile_rule


def build_catalog(
    instances: Iterable[CatalogInstance] | Mapping[str, CatalogInstance],
    *,
    compile_rule: CompileRule | None = None,
    previous: Catalog | None = None,
    changed: Collection[str] | None = None,
    removed: Collection[str] | None = None,
    segments: Mapping[str, str] | None = None,
    pause: Callable[[], None] | None = None,
) -> Catalog:
    """Compile a library into a :class:`Catalog`. Never raises for bad content.

    ``compile_rule`` defaults to :func:`nextoffer.pql.compile`; it is the seam tests use.
    ``previous``, a catalog of an earlier version of the same library built with the same
    ``compile_rule``, lets the build reuse what did not change: the rule, formula and
    offer objects whose instances (``@id``, instance id, etag) and resolved rules are the
    same, their errors, a collection's pool when its members are the same objects, and
    each rule's shared-part analysis. The result is the catalog a build from scratch
    would give; only the work differs.

    With ``previous``, ``instances`` as a mapping by ``@id`` and ``changed`` naming every
    ``@id`` added or changed since (removed ones are those missing from ``instances``),
    the build touches only those and what uses them: its cost follows the change, not the
    library. ``removed`` names the removed ones when the caller knows them (else they are
    found by comparing every ``@id``). The previous build's indexes are persistent maps
    (:class:`immutables.Map`): the new build shares all of them but the entries it
    replaces, so nothing the size of the library is copied or walked.

    ``segments`` are the tenant's segment definitions (id -> PQL text); one that does not
    compile is left out (it was checked when saved).

    ``pause`` is called between small pieces of the work (each instance built, each phase
    of a patch, each copy of an index): the caller's chance to let other threads run (a
    server answering decisions while it refreshes; ``service/catalogs.py``).
    """
    compile_rule = compile_rule or _default_compile()
    memo = previous._memo if previous is not None else None
    builder = _Builder(compile_rule, memo, pause)
    if isinstance(instances, Mapping):
        if memo is not None and changed is not None:
            catalog = builder.patch(instances, changed, removed)
        else:
            catalog = builder.build(instances.values())
    else:
        catalog = builder.build(instances)
    if segments:
        rules = {}
        for segment_id, source in segments.items():
            builder.pause()
            try:
                rules[segment_id] = compile_rule(source, format="pql/text", kind="rule")
            except PQLError:
                continue
        catalog.segment_rules = MappingProxyType(rules)
    return catalog


#: A rule's compiled form, its conjuncts, and those that do not read ``offer``.
_Parts = tuple[Any, tuple[str, ...], frozenset[str]]


@dataclass(slots=True)
class _PoolMemo:
    """A collection's pool as built, and what patching it needs."""

    stamp: tuple[str, int]
    pool: Pool
    #: Per placement, what ``Pool.required`` is computed from (kept, not recounted).
    tallies: dict[str, _Tally]
    #: ``@id``s of the capped offers of ``pool.by_placement`` (``Catalog.capped_offer_ids``).
    capped: frozenset[str]


def _add_parts(
    counts: dict[str, int] | MapMutation[str, int], parts: frozenset[str], sign: int
) -> None:
    """Add ``sign`` to the count of each of ``parts``; a count that reaches 0 goes."""
    for part in parts:
        left = counts.get(part, 0) + sign
        if left:
            counts[part] = left
        else:
            del counts[part]


@dataclass(slots=True)
class _Tally:
    """The rule parts of a placement's candidates, counted (see ``_Builder._required``)."""

    #: Part → how many counted candidates' rules have it (parts not reading ``offer``).
    counts: dict[str, int] | Map[str, int]
    #: Candidates counted: approved, usable, their rule split into parts.
    counted: int = 0
    #: Candidates that leave nothing shared (no rule, or a rule that cannot be split).
    blockers: int = 0

    def copy(self) -> _Tally:
        """A tally to change while this one stays as it is: the counts become a persistent
        map (shared, not copied: a pool of 10,000 offers with their own rules counts
        tens of thousands of parts)."""
        counts = self.counts if isinstance(self.counts, Map) else Map(self.counts)
        return _Tally(counts, self.counted, self.blockers)


@dataclass(slots=True)
class _Memo:
    """One build's products, by ``@id``, for the next build to reuse."""

    stamps: Map[str, tuple[str, int]]
    #: Versionless schema → ``@id`` → instance.
    by_schema: Map[str, Map[str, CatalogInstance]]
    rules: Map[str, Rule]
    formulas: Map[str, Rule]
    offers: Map[str, Offer]
    #: Errors (unfinished) that an instance's own content caused, by its ``@id``.
    errors: dict[str, list[CatalogError]]
    #: collection ``@id`` → (its stamp, the pool built from it).
    pools: dict[str, _PoolMemo]
    #: A compiled rule → its parts that do not read ``offer`` (``_required``).
    own_parts: Map[str, _Parts]
    #: Tag → offers carrying it, in (-priority, @id) order (persistent: a build makes new
    #: sequences sharing the unchanged chunks).
    tag_index: Map[str, SortedChunks[Offer]]
    #: A rule's ``@id`` → the offers whose rule or constraint names it (a changed rule's
    #: offers are built again without walking every offer).
    rule_users: Map[str, frozenset[str]]


def _feature_parser() -> Any:
    from nextoffer import pql  # deferred, as _default_compile

    return pql.feature


def _rules_of(offer: Offer) -> list[Rule]:
    """The rules an offer resolved: its eligibility rule and its constraint's."""
    used = [offer.rule] if offer.rule is not None else []
    if offer.constraint is not None:
        used.extend(offer.constraint.rules)
    return used


def _schema_key(schema: str) -> str:
    return schema.split(";", 1)[0].strip()


def _sort_key(offer: Offer) -> tuple[int, str]:
    return (-offer.priority, offer.at_id)


def _no_pause() -> None:
    return None


def _chunked(members: Collection[Offer]) -> SortedChunks[Offer]:
    """A pool's members as the sorted chunks this module builds them as."""
    if isinstance(members, SortedChunks):
        return members
    return SortedChunks.of(_sort_key, sorted(members, key=_sort_key))


#: Offers in (-priority, @id) order, shared chunk by chunk between builds.
_NO_OFFERS: SortedChunks[Offer] = SortedChunks(_sort_key)
_EMPTY_POOL = Pool(_NO_OFFERS, MappingProxyType({}))


def _position(ordered: list[Offer], offer: Offer) -> int:
    """Where ``offer`` is in ``ordered`` (sorted by :func:`_sort_key`, ``@id``s unique)."""
    at = bisect_left(ordered, _sort_key(offer), key=_sort_key)
    if at == len(ordered) or ordered[at] is not offer:
        raise ValueError(f"{offer.at_id} is not where its order puts it")
    return at


class _Builder:
    """One build: collects errors and the "who uses what" graph while compiling."""

    def __init__(
        self,
        compile_rule: CompileRule,
        memo: _Memo | None = None,
        pause: Callable[[], None] | None = None,
    ) -> None:
        self.compile_rule = compile_rule
        self.old = memo
        #: Called between small pieces of the work (``build_catalog(pause=…)``).
        self.pause = pause or _no_pause
        #: Rule parts found this build (a dict), or the previous build's being patched.
        self.own_parts: dict[str, _Parts] | MapMutation[str, _Parts] = {}
        self.pool_memo: dict[str, _PoolMemo] = {}
        #: Offers of the previous build replaced or removed, and those new or rebuilt.
        self.moved: tuple[list[Offer], list[Offer]] = ([], [])
        self.errors: list[CatalogError] = []
        self.by_schema: Map[str, Map[str, CatalogInstance]] = Map()
        #: ``@id``s new or changed since the previous build (all of them without one).
        self.changed: Collection[str] = ()
        self.uses: dict[str, set[str]] = {}  # referenced @id -> @ids referencing it
        self.rules: Map[str, Rule] = Map()
        self.formulas: Map[str, Rule] = Map()
        self.pools: dict[str, Pool] = {}
        #: ``id()`` of a pool of this build → its capped offers' ``@id``s (``_pool_capped``).
        self.capped: dict[int, frozenset[str]] = {}
        self.conjuncts: dict[str, Rule | None] = {}  # shared rule parts, by their text
        self.strategies: dict[str, Strategy] = {}

    # ---- entry point -----------------------------------------------------------------
    def build(self, instances: Iterable[CatalogInstance]) -> Catalog:
        stamps: dict[str, tuple[str, int]] = {}
        by_schema: dict[str, dict[str, CatalogInstance]] = {}
        pause = self.pause
        for instance in instances:
            pause()
            by_schema.setdefault(_schema_key(instance.schema), {})[instance.at_id] = instance
            stamps[instance.at_id] = (instance.instance_id, instance.etag)
        self.by_schema = Map({schema: Map(by_id) for schema, by_id in by_schema.items()})
        pause()
        old = self.old
        self.changed = (
            stamps.keys()
            if old is None
            else {at_id for at_id, stamp in stamps.items() if old.stamps.get(at_id) != stamp}
        )
        self.rules = Map(
            (
                i.at_id,
                self._reused(i, "rules")
                or self._rule(i, ("condition",), CatalogErrorKind.INVALID_RULE, "rule"),
            )
            for i in self._all(ELIGIBILITY_RULE)
        )
        self.formulas = Map(
            (
                i.at_id,
                self._reused(i, "formulas")
                or self._rule(i, ("expression",), CatalogErrorKind.INVALID_FORMULA, "formula"),
            )
            for i in self._all(RANKING_FORMULA)
        )
        offers = {
            i.at_id: self._reused_offer(i) or self._offer(i) for i in self._all(PERSONALIZED_OFFER)
        }
        self.moved = (
            ([o for at_id, o in old.offers.items() if offers.get(at_id) is not o])
            if old is not None
            else [],
            ([o for at_id, o in offers.items() if old.offers.get(at_id) is not o])
            if old is not None
            else [],
        )
        users: dict[str, set[str]] = {}
        for offer in offers.values():
            for rule in _rules_of(offer):
                users.setdefault(rule.at_id, set()).add(offer.at_id)
        rule_users = Map({at_id: frozenset(found) for at_id, found in users.items()})
        return self._finish(Map(stamps), Map(offers), rule_users)

    def patch(
        self,
        instances: Mapping[str, CatalogInstance],
        changed: Collection[str],
        removed: Collection[str] | None = None,
    ) -> Catalog:
        """The previous build, with ``changed`` (and what uses them) built again and what
        left ``instances`` taken out; see :func:`build_catalog`. Every index is the
        previous one with only those entries replaced (persistent maps)."""
        old = self.old
        assert old is not None
        if removed is None:  # not told: every @id compared
            removed = [at_id for at_id in old.stamps if at_id not in instances]
        touched = {*changed, *removed}
        stamps = old.stamps.mutate()
        schemas: dict[str, MapMutation[str, CatalogInstance]] = {}

        def of_schema(schema: str) -> MapMutation[str, CatalogInstance]:
            if schema not in schemas:
                schemas[schema] = old.by_schema.get(schema, _EMPTY).mutate()
            return schemas[schema]

        for at_id in touched:
            if stamps.pop(at_id, None) is not None:
                for schema, by_id in old.by_schema.items():  # a handful of schemas
                    if at_id in by_id:
                        del of_schema(schema)[at_id]
        for at_id in changed:
            instance = instances.get(at_id)
            if instance is not None:
                of_schema(_schema_key(instance.schema))[at_id] = instance
                stamps[at_id] = (instance.instance_id, instance.etag)
        every_schema = old.by_schema.mutate()
        for schema, mutation in schemas.items():
            every_schema[schema] = mutation.finish()
        self.by_schema = every_schema.finish()
        new_stamps = stamps.finish()
        self.changed = {at_id for at_id in changed if at_id in new_stamps}
        rebuilt: set[str] = set()
        self.pause()
        for schema, names, kind, what in (
            (ELIGIBILITY_RULE, ("condition",), CatalogErrorKind.INVALID_RULE, "rule"),
            (
                RANKING_FORMULA,
                ("expression",),
                CatalogErrorKind.INVALID_FORMULA,
                "formula",
            ),
        ):
            table = (old.rules if what == "rule" else old.formulas).mutate()
            for at_id in touched:
                table.pop(at_id, None)
                instance = self.by_schema.get(schema, _EMPTY).get(at_id)
                if instance is not None:
                    table[at_id] = self._rule(instance, names, kind, what)
                    rebuilt.add(at_id)
            if what == "rule":
                self.rules = table.finish()
            else:
                self.formulas = table.finish()
            self.pause()
        own_parts = old.own_parts.mutate()
        for at_id in removed:
            own_parts.pop(at_id, None)
        self.own_parts = own_parts
        offers = old.offers.mutate()
        new_offers = self.by_schema.get(PERSONALIZED_OFFER, _EMPTY)
        affected = {a for a in touched if a in old.offers or a in new_offers}
        for at_id in touched:  # the offers using a changed or removed rule
            if at_id in old.rules or at_id in self.rules:
                affected |= old.rule_users.get(at_id, frozenset())
        for at_id in affected:
            offers.pop(at_id, None)
            instance = new_offers.get(at_id)
            if instance is not None:
                offers[at_id] = self._offer(instance)
                rebuilt.add(at_id)
        patched = offers.finish()
        self.pause()
        for at_id, errors in old.errors.items():  # the unchanged ones' own problems
            if at_id not in rebuilt and (
                at_id in self.rules or at_id in self.formulas or at_id in patched
            ):
                self.errors.extend(errors)
        self.moved = (
            [old.offers[a] for a in affected if a in old.offers],
            [patched[a] for a in affected if a in patched],
        )
        users = old.rule_users.mutate()
        for sign, moved in ((-1, self.moved[0]), (1, self.moved[1])):
            for offer in moved:
                for rule in _rules_of(offer):
                    found = users.get(rule.at_id, frozenset())
                    found = found | {offer.at_id} if sign > 0 else found - {offer.at_id}
                    if found:
                        users[rule.at_id] = found
                    else:
                        users.pop(rule.at_id, None)
        self.pause()
        return self._finish(new_stamps, patched, users.finish())

    def _finish(
        self,
        stamps: Map[str, tuple[str, int]],
        offers: Map[str, Offer],
        rule_users: Map[str, frozenset[str]],
    ) -> Catalog:
        """Everything after the offers: placements, fallbacks, tags, pools, decisions."""
        pause = self.pause
        placements = {
            i.at_id: Placement(i.at_id, i.instance_id, i.etag, i.body) for i in self._all(PLACEMENT)
        }
        pause()
        fallbacks = {i.at_id: self._fallback(i) for i in self._all(FALLBACK_OFFER)}
        pause()
        self.tag_index = self._tag_index(offers)
        self.offers = offers
        pause()
        self.strategies = {i.at_id: self._strategy(i) for i in self._all(RANKING_STRATEGY)}
        pause()
        decisions = {i.at_id: self._decision(i, fallbacks, placements) for i in self._all(DECISION)}
        capped = {
            at_id: frozenset().union(*(self._pool_capped(c.pool) for c in decision.criteria))
            for at_id, decision in decisions.items()
        }
        pause()
        own_parts = self.own_parts
        memo = _Memo(
            stamps=stamps,
            by_schema=self.by_schema,
            rules=self.rules,
            formulas=self.formulas,
            offers=offers,
            errors={},
            pools=self.pool_memo,
            own_parts=Map(own_parts) if isinstance(own_parts, dict) else own_parts.finish(),
            tag_index=self.tag_index,
            rule_users=rule_users,
        )
        for error in self.errors:
            memo.errors.setdefault(error.at_id, []).append(error)
        return Catalog(
            placements=placements,
            offers=offers,
            fallbacks=fallbacks,
            decisions=decisions,
            errors=self._finish_errors(decisions, rule_users),
            compile_rule=self.compile_rule,
            strategies=self.strategies,
            memo=memo,
            capped=capped,
        )

    def _tag_index(self, offers: Map[str, Offer]) -> Map[str, SortedChunks[Offer]]:
        """Tag → the offers carrying it, by (-priority, @id): the previous build's
        sequences with the offers that changed taken out and put back in order (sharing
        every chunk they do not touch), when few did."""
        old = self.old
        if old is not None:
            gone, came = self.moved
            if len(gone) + len(came) <= max(16, len(offers) // 8):
                index = old.tag_index.mutate()
                for offer in gone:
                    for tag in offer.tags:
                        index[tag] = index[tag].remove(offer)
                for offer in came:
                    for tag in offer.tags:
                        index[tag] = index.get(tag, _NO_OFFERS).insert(offer)
                for tag in {tag for offer in gone for tag in offer.tags}:
                    if not index[tag]:
                        del index[tag]
                self.pause()
                return index.finish()
        fresh: dict[str, list[Offer]] = {}
        for offer in sorted(offers.values(), key=_sort_key):
            for tag in offer.tags:
                fresh.setdefault(tag, []).append(offer)
        return Map({tag: SortedChunks.of(_sort_key, listed) for tag, listed in fresh.items()})

    # ---- reuse of the previous build ---------------------------------------------------
    def _carry_errors(self, at_id: str) -> None:
        assert self.old is not None
        errors = self.old.errors.get(at_id)
        if errors:
            self.errors.extend(errors)

    def _reused(self, instance: CatalogInstance, table: str) -> Rule | None:
        """The previous build's rule or formula for an unchanged instance."""
        old = self.old
        if old is None or instance.at_id in self.changed:
            return None
        rule: Rule | None = getattr(old, table).get(instance.at_id)
        if rule is not None:
            self._carry_errors(instance.at_id)
        return rule

    def _reused_offer(self, instance: CatalogInstance) -> Offer | None:
        """The previous build's offer when it and every rule it resolved are unchanged."""
        old = self.old
        if old is None or instance.at_id in self.changed:
            return None
        offer = old.offers.get(instance.at_id)
        if offer is None:
            return None
        rule = offer.rule
        if rule is not None:
            if self.rules.get(rule.at_id) is not rule:
                return None  # the rule it uses changed or went away: built again
            self._use(rule.at_id, instance.at_id)
        if offer.constraint is not None:
            if any(self.rules.get(r.at_id) is not r for r in offer.constraint.rules):
                return None
            for r in offer.constraint.rules:
                self._use(r.at_id, instance.at_id)
        self._carry_errors(instance.at_id)
        return offer

    def _all(self, schema: str) -> list[CatalogInstance]:
        return sorted(self.by_schema.get(schema, {}).values(), key=lambda i: i.at_id)

    def _error(
        self, kind: CatalogErrorKind, instance: CatalogInstance, message: str, **more: Any
    ) -> None:
        self.errors.append(
            CatalogError(
                kind,
                instance.at_id,
                instance.schema,
                instance.instance_id,
                instance.etag,
                message,
                **more,
            )
        )

    def _use(self, referenced: str, by: str) -> None:
        self.uses.setdefault(referenced, set()).add(by)

    # ---- rules and formulas ----------------------------------------------------------
    def _rule(
        self, instance: CatalogInstance, names: tuple[str, ...], kind: CatalogErrorKind, what: str
    ) -> Rule:
        self.pause()
        expression = next((obj(instance.body, n) for n in names if obj(instance.body, n)), {})
        source = prop(expression, "value")
        fmt = prop(expression, "format", "pql/text")
        if not isinstance(source, str) or not isinstance(fmt, str):
            problem = f"the {what} has no PQL text"
            self._error(kind, instance, problem)
            return Rule(instance.at_id, "", None, False, problem)
        uses_offer = _OFFER_WORD.search(source) is not None
        try:
            compiled = self.compile_rule(source, format=fmt, kind=what)
        except PQLError as error:
            self._error(kind, instance, error.message, line=error.line, column=error.column)
            return Rule(instance.at_id, source, None, uses_offer, error.message)
        except Exception as error:  # a compiler bug must not take the whole snapshot down
            problem = f"{type(error).__name__}: {error}"
            self._error(kind, instance, problem)
            return Rule(instance.at_id, source, None, uses_offer, problem)
        return Rule(instance.at_id, source, compiled, uses_offer)

    def _rule_ref(self, rule_id: str, instance: CatalogInstance, table: Mapping[str, Rule]) -> Rule:
        self._use(rule_id, instance.at_id)
        rule = table.get(rule_id)
        if rule is None:
            problem = f"references {rule_id}, which is not in the library"
            self._error(CatalogErrorKind.MISSING_REFERENCE, instance, problem, reference=rule_id)
            return Rule(rule_id, "", None, False, problem)
        return rule

    def _constraint(self, spec: Mapping[str, Any], instance: CatalogInstance) -> ProfileConstraint:
        """Parse an XDM profile-constraint-details object (criterion or offer)."""
        raw_type = prop(spec, "profileConstraintType")
        rule_id = prop(spec, "eligibilityRule")
        if raw_type is None:
            raw_type = "eligibilityRule" if isinstance(rule_id, str) else "none"
        try:
            kind = ConstraintType(raw_type)
        except ValueError:
            self._error(
                CatalogErrorKind.INVALID_VALUE,
                instance,
                f"unknown profileConstraintType {raw_type!r}",
            )
            return ProfileConstraint(ConstraintType.RULES, (Rule("", "", None, False, "bad"),))
        if kind is ConstraintType.NONE:
            return NO_CONSTRAINT
        if kind is ConstraintType.ELIGIBILITY_RULE:
            if not isinstance(rule_id, str):
                self._error(
                    CatalogErrorKind.INVALID_VALUE,
                    instance,
                    "eligibilityRule constraint without a rule",
                )
                return ProfileConstraint(kind, (Rule("", "", None, False, "no rule"),))
            return ProfileConstraint(kind, (self._rule_ref(rule_id, instance, self.rules),))
        if kind is ConstraintType.RULES:
            ids = strings(spec, "eligibilityRules")
            return ProfileConstraint(
                kind, tuple(self._rule_ref(r, instance, self.rules) for r in ids)
            )
        segments = []
        for identity in prop(spec, "segmentIdentities", ()):
            if isinstance(identity, Mapping):
                segment_id = identity.get("_id") or identity.get("@id") or prop(identity, "id")
                namespace = prop(obj(identity, "namespace"), "code")
                if isinstance(segment_id, str):
                    segments.append(
                        SegmentRef(segment_id, namespace if isinstance(namespace, str) else None)
                    )
        return ProfileConstraint(kind, segments=tuple(segments))

    # ---- ranking strategies ----------------------------------------------------------
    def _strategy(self, instance: CatalogInstance) -> Strategy:
        """A ranking strategy; what cannot be read is reported and left at its default
        (the repository refuses such bodies; this guards stored ones)."""
        body = instance.body
        try:
            kind = StrategyType(prop(body, "strategyType"))
        except ValueError:
            self._error(
                CatalogErrorKind.INVALID_VALUE,
                instance,
                f"unknown strategyType {prop(body, 'strategyType')!r}",
            )
            kind = StrategyType.AUTO
        goal = prop(body, "optimizationGoal", "clicks")
        features = []
        parse_feature = _feature_parser()
        for source in prop(body, "features", ()) if kind is StrategyType.PERSONALIZED else ():
            try:
                features.append(parse_feature(source))
            except PQLError as error:
                self._error(CatalogErrorKind.INVALID_VALUE, instance, f"feature: {error.message}")
        rate = prop(body, "explorationRate", 0.1)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            self._error(CatalogErrorKind.INVALID_VALUE, instance, f"explorationRate {rate!r}")
            rate = 0.1
        return Strategy(
            at_id=instance.at_id,
            instance_id=instance.instance_id,
            etag=instance.etag,
            body=body,
            type=kind,
            goal=goal if isinstance(goal, str) else "clicks",
            features=tuple(features),
            exploration=float(rate) if kind is StrategyType.PERSONALIZED else 0.0,
        )

    # ---- offers ----------------------------------------------------------------------
    def _representations(self, body: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        found: dict[str, Mapping[str, Any]] = {}
        for representation in prop(body, "representations", ()):
            if isinstance(representation, Mapping):
                placement = prop(representation, "placement")
                if isinstance(placement, str):
                    found.setdefault(placement, representation)
        return MappingProxyType(found)

    def _offer(self, instance: CatalogInstance) -> Offer:
        self.pause()
        body = instance.body
        problems: list[str] = []
        selection = obj(body, "selectionConstraint")
        start = end = None
        try:
            start = parse_time(prop(selection, "startDate"))
            end = parse_time(prop(selection, "endDate"))
        except ValueError as error:
            problems.append(f"unreadable selectionConstraint date: {error}")
            self._error(CatalogErrorKind.INVALID_VALUE, instance, problems[-1])
        rule = None
        rule_id = prop(selection, "eligibilityRule")
        if isinstance(rule_id, str):
            rule = self._rule_ref(rule_id, instance, self.rules)
            if rule.compiled is None:
                problems.append(f"eligibility rule {rule_id}: {rule.problem}")
        constraint = None
        # Offer-level segments (dps style, flat in the selection constraint); an offer-level
        # ``eligibilityRule`` type is the ``rule`` above, so only the other types are parsed.
        if prop(selection, "profileConstraintType") not in (None, "none", "eligibilityRule"):
            constraint = self._constraint(selection, instance)
            if any(r.compiled is None for r in constraint.rules):
                problems.append("an offer constraint rule is unusable")
        try:
            caps = cap_rules(body)
        except Unprocessable as exc:
            caps = ()
            problems.append(f"capping: {exc.detail}")
            self._error(CatalogErrorKind.INVALID_VALUE, instance, problems[-1])
        priority = non_negative_int(prop(obj(body, "rank"), "priority", 0))
        if priority is None:
            problems.append("xdm:rank.xdm:priority is not an integer >= 0")
            self._error(CatalogErrorKind.INVALID_VALUE, instance, problems[-1])
        characteristics = obj(body, "characteristics")
        tags = strings(body, "tags")
        variable = {
            "_id": instance.at_id,
            "name": prop(body, "name"),
            "rank": {"priority": priority or 0},
            "characteristics": dict(characteristics),
            "selectionConstraint": {
                "startDate": prop(selection, "startDate"),
                "endDate": prop(selection, "endDate"),
            },
            "tags": list(tags),
        }
        return Offer(
            at_id=instance.at_id,
            instance_id=instance.instance_id,
            etag=instance.etag,
            body=body,
            status=str(prop(body, "status", "")),
            priority=priority or 0,
            tags=frozenset(tags),
            characteristics=characteristics,
            representations=self._representations(body),
            start=start,
            end=end,
            rule=rule,
            constraint=constraint,
            caps=caps,
            variable=variable,  # a plain dict: PQL reads maps as dicts; never mutated
            problem="; ".join(problems) or None,
        )

    def _fallback(self, instance: CatalogInstance) -> Fallback:
        self.pause()
        return Fallback(
            instance.at_id,
            instance.instance_id,
            instance.etag,
            instance.body,
            self._representations(instance.body),
        )

    # ---- collections -----------------------------------------------------------------
    def _pool_of(self, members: Iterable[Offer]) -> Pool:
        return self._new_pool(members)[0]

    def _new_pool(self, members: Iterable[Offer]) -> tuple[Pool, dict[str, _Tally]]:
        ordered = tuple(sorted(set(members), key=_sort_key))
        by_placement: dict[str, list[Offer]] = {}
        pause = self.pause
        for offer in ordered:
            pause()
            if offer.status == "approved":
                for placement in offer.representations:
                    by_placement.setdefault(placement, []).append(offer)
        return self._pool_from(ordered, by_placement)

    def _pool_from(
        self,
        ordered: tuple[Offer, ...],
        by_placement: dict[str, list[Offer]],
        tallies: dict[str, _Tally] | None = None,
    ) -> tuple[Pool, dict[str, _Tally]]:
        if tallies is None:
            tallies = {}
            for placement, offers in by_placement.items():
                tally = tallies[placement] = _Tally({})
                for offer in offers:
                    self.pause()
                    self._count(tally, offer, 1)
                tally.counts = Map(tally.counts)  # kept: later builds change copies of it
        required = {p: self._required(by_placement[p], t) for p, t in tallies.items()}
        pool = Pool(
            SortedChunks.of(_sort_key, ordered),
            MappingProxyType({p: tuple(o) for p, o in by_placement.items() if o}),
            MappingProxyType({p: r for p, r in required.items() if r}),
        )
        self.capped[id(pool)] = self._pool_capped(pool)
        return pool, tallies

    def _pool_capped(self, pool: Pool) -> frozenset[str]:
        """``@id``s of the capped offers of ``pool.by_placement`` (kept per pool of this
        build; found for a pool made elsewhere, such as a criterion's own option list)."""
        found = self.capped.get(id(pool))
        if found is None:
            found = frozenset(
                offer.at_id
                for offers in pool.by_placement.values()
                for offer in offers
                if offer.capped
            )
        return found

    def _patched_pool(self, old: _PoolMemo, belongs: Callable[[Offer], bool]) -> _PoolMemo | None:
        """``old``'s pool with the offers that left or changed taken out and the new or
        rebuilt ones that belong put in, in order (the pool :meth:`_pool_of` would build);
        ``old`` itself when none moved, ``None`` when so many did that building it again
        is as cheap. (The collection is the same: an offer of the previous build was a
        member exactly when it ``belongs``.)"""
        gone, came = self.moved
        removed = [offer for offer in gone if belongs(offer)]
        added = [offer for offer in came if belongs(offer)]
        if not removed and not added:
            return old
        pool = old.pool
        if len(added) + len(removed) > max(16, len(pool.members) // 8):
            return None
        pause = self.pause
        pause()
        ordered = _chunked(pool.members)  # persistent: changed chunk by chunk
        by_placement = dict(pool.by_placement)
        tallies = dict(old.tallies)
        pause()
        capped = set(old.capped)
        moved: dict[str, list[Offer]] = {}

        def placed(placement: str) -> list[Offer]:
            # A placement's list and tally are copied the first time they change.
            if placement not in moved:
                pause()
                moved[placement] = [*by_placement.get(placement, ())]
                found = tallies.get(placement)
                tallies[placement] = found.copy() if found else _Tally({})
            return moved[placement]

        for offer in removed:
            ordered = ordered.remove(offer)
            if offer.status == "approved":
                capped.discard(offer.at_id)
                for placement in offer.representations:
                    listed = placed(placement)
                    del listed[_position(listed, offer)]
                    self._count(tallies[placement], offer, -1)
        for offer in added:
            ordered = ordered.insert(offer)
            if offer.status == "approved":
                if offer.capped and offer.representations:
                    capped.add(offer.at_id)
                for placement in offer.representations:
                    insort(placed(placement), offer, key=_sort_key)
                    self._count(tallies[placement], offer, 1)
        pause()
        for placement, listed in moved.items():
            pause()
            if listed:
                by_placement[placement] = tuple(listed)
            else:
                del by_placement[placement]
                del tallies[placement]
        required = dict(pool.required)
        for placement in moved:
            pause()
            found = (
                self._required(by_placement[placement], tallies[placement])
                if placement in by_placement
                else ()
            )
            if found:
                required[placement] = found
            else:
                required.pop(placement, None)
        pause()
        new = Pool(ordered, MappingProxyType(by_placement), MappingProxyType(required))
        pause()
        return _PoolMemo(old.stamp, new, tallies, frozenset(capped))

    def _count(self, tally: _Tally, offer: Offer, sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) one candidate's rule parts from ``tally``.

        Offers that can never be eligible (a problem, an unusable rule) do not count; an
        offer without a rule, or with a rule the compiler cannot split, blocks sharing.
        """
        rule = offer.rule
        if offer.problem is not None or (rule is not None and rule.compiled is None):
            return
        parts, mine = self._own_parts(rule) if rule is not None else ((), frozenset())
        if not parts:
            tally.blockers += sign
            return
        tally.counted += sign
        counts = tally.counts
        if isinstance(counts, Map):  # a persistent map: changed through a mutation, replaced
            mutation = counts.mutate()
            _add_parts(mutation, mine, sign)
            tally.counts = mutation.finish()
        else:
            _add_parts(counts, mine, sign)

    def _required(self, offers: Sequence[Offer], tally: _Tally) -> tuple[Rule, ...]:
        """The rule parts every one of ``offers`` needs (see ``Pool.required``): those the
        tally counts in every counted candidate, in the order of the first one's rule."""
        if tally.blockers or not tally.counted:
            return ()
        for offer in offers:  # the first counted candidate (almost always the first)
            rule = offer.rule
            if offer.problem is None and rule is not None and rule.compiled is not None:
                parts, mine = self._own_parts(rule)
                if len(parts) == 1 and parts[0] in mine:
                    # The whole rule is the part: one evaluation (and cache entry) serves both.
                    self.conjuncts.setdefault(parts[0], rule)
                # A part every candidate has is one of this one's: counted by all of them.
                counts, counted = tally.counts, tally.counted
                shared = dict.fromkeys(p for p in parts if p in mine and counts.get(p) == counted)
                break
        else:
            return ()
        found = (self._conjunct(part) for part in shared)
        return tuple(rule for rule in found if rule is not None)

    def _own_parts(self, rule: Rule) -> tuple[tuple[str, ...], frozenset[str]]:
        """A rule's conjuncts, and those of them that do not read ``offer`` (kept by the
        rule's ``@id`` for the next build, with the compiled rule they were read from)."""
        found = self.own_parts.get(rule.at_id)
        if (found is None or found[0] is not rule.compiled) and self.old is not None:
            found = self.old.own_parts.get(rule.at_id)
        if found is None or found[0] is not rule.compiled:
            parts = tuple(getattr(rule.compiled, "conjuncts", None) or ())
            found = (
                rule.compiled,
                parts,
                frozenset(p for p in parts if _OFFER_WORD.search(p) is None),
            )
            self.own_parts[rule.at_id] = found
        elif rule.at_id not in self.own_parts:
            self.own_parts[rule.at_id] = found
        return found[1], found[2]

    def _conjunct(self, source: str) -> Rule | None:
        """A shared rule part compiled on its own (once per build); ``None`` if it cannot be."""
        if source not in self.conjuncts:
            try:
                compiled = self.compile_rule(source, format="pql/text", kind="rule")
            except Exception:  # then it is simply not checked up front; the rules still are
                self.conjuncts[source] = None
            else:
                self.conjuncts[source] = Rule(f"conjunct:{source}", source, compiled, False)
        return self.conjuncts[source]

    def _collection_pool(self, collection_id: str, user: CatalogInstance) -> Pool:
        self._use(collection_id, user.at_id)
        if collection_id in self.pools:
            return self.pools[collection_id]
        instance = self.by_schema.get(COLLECTION, _EMPTY).get(collection_id)
        if instance is None:
            self._error(
                CatalogErrorKind.MISSING_REFERENCE,
                user,
                f"references collection {collection_id}, which is not in the library",
                reference=collection_id,
            )
            return _EMPTY_POOL
        filter_type = prop(instance.body, "filterType")
        ids = strings(instance.body, "ids")
        stamp = (instance.instance_id, instance.etag)
        wanted = frozenset(ids)
        belongs: Callable[[Offer], bool] | None = None
        if filter_type == "offers":
            belongs = lambda offer: offer.at_id in wanted  # noqa: E731
        elif filter_type == "anyTags":
            belongs = lambda offer: not wanted.isdisjoint(offer.tags)  # noqa: E731
        elif filter_type == "allTags":
            belongs = lambda offer: bool(wanted) and wanted <= offer.tags  # noqa: E731
        else:
            self._error(
                CatalogErrorKind.INVALID_VALUE, instance, f"unknown filterType {filter_type!r}"
            )
        old = self.old.pools.get(collection_id) if self.old is not None else None
        memo = None
        if old is not None and old.stamp == stamp and belongs is not None:
            memo = self._patched_pool(old, belongs)
        if memo is None:
            members: list[Offer] = []
            if filter_type == "offers":
                members = [self.offers[i] for i in ids if i in self.offers]
            elif filter_type == "anyTags":
                members = [offer for tag in ids for offer in self.tag_index.get(tag, ())]
            elif filter_type == "allTags" and ids:
                members = [o for o in self.tag_index.get(ids[0], ()) if wanted <= o.tags]
            pool, tallies = self._new_pool(members)
            memo = _PoolMemo(stamp, pool, tallies, self._pool_capped(pool))
        self.capped[id(memo.pool)] = memo.capped
        self.pools[collection_id] = memo.pool
        self.pool_memo[collection_id] = memo
        return memo.pool

    # ---- decisions -------------------------------------------------------------------
    def _criteria_specs(self, body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        criteria = prop(body, "criteria")
        if isinstance(criteria, list):
            return [c for c in criteria if isinstance(c, Mapping)]
        # 2019 flat shape: one placement and one filter directly on the activity.
        placement, collection = prop(body, "placement"), prop(body, "filter")
        if isinstance(collection, str):
            return [
                {
                    "xdm:placements": [placement] if isinstance(placement, str) else [],
                    "xdm:optionSelection": {"xdm:filter": collection},
                }
            ]
        return []

    def _criterion(
        self, index: int, spec: Mapping[str, Any], instance: CatalogInstance
    ) -> Criterion:
        selection = obj(spec, "optionSelection")
        collection_id = prop(selection, "filter")
        if isinstance(collection_id, str):
            pool = self._collection_pool(collection_id, instance)
        else:
            pool = self._pool_of(
                self.offers[i] for i in strings(selection, "options") if i in self.offers
            )
        ranking = obj(spec, "ranking")
        order_spec = obj(ranking, "order")
        formula_id = prop(order_spec, "function")
        raw_order = prop(
            order_spec, "orderEvaluationType", "scoringFunction" if formula_id else "static"
        )
        raw_order = _ORDER_ALIASES.get(raw_order, raw_order)
        try:
            order = OrderType(raw_order)
        except ValueError:
            self._error(
                CatalogErrorKind.INVALID_VALUE,
                instance,
                f"unknown orderEvaluationType {raw_order!r}",
            )
            order = OrderType.STATIC
        formula = None
        if order is OrderType.SCORING_FUNCTION:
            if isinstance(formula_id, str):
                formula = self._rule_ref(formula_id, instance, self.formulas)
            else:
                self._error(
                    CatalogErrorKind.INVALID_VALUE, instance, "scoringFunction without xdm:function"
                )
                formula = Rule("", "", None, False, "no formula")
        strategy = None
        if order is OrderType.RANKING_STRATEGY:
            strategy_id = prop(order_spec, "rankingStrategy")
            strategy = self.strategies.get(strategy_id) if isinstance(strategy_id, str) else None
            if isinstance(strategy_id, str):
                self._use(strategy_id, instance.at_id)
            if strategy is None:
                self._error(
                    CatalogErrorKind.UNKNOWN_RANKING_STRATEGY,
                    instance,
                    f"ranking strategy {strategy_id!r} is not in the library; the criterion "
                    "ranks by priority",
                    reference=strategy_id if isinstance(strategy_id, str) else None,
                )
        group = non_negative_int(prop(ranking, "priority", 0))
        return Criterion(
            index=index,
            placements=frozenset(strings(spec, "placements")),
            pool=pool,
            group_priority=group or 0,
            constraint=self._constraint(obj(spec, "profileConstraints"), instance),
            order=order,
            formula=formula,
            strategy=strategy,
        )

    def _decision(
        self,
        instance: CatalogInstance,
        fallbacks: Mapping[str, Fallback],
        placements: Mapping[str, Placement],
    ) -> Decision:
        self.pause()
        body = instance.body
        start = end = None
        try:
            start = parse_time(prop(body, "startDate"))
            end = parse_time(prop(body, "endDate"))
        except ValueError as error:
            self._error(CatalogErrorKind.INVALID_VALUE, instance, f"unreadable date: {error}")
        criteria = tuple(
            self._criterion(i, spec, instance) for i, spec in enumerate(self._criteria_specs(body))
        )
        fallback_id = prop(body, "fallback")
        fallback = fallbacks.get(fallback_id) if isinstance(fallback_id, str) else None
        if isinstance(fallback_id, str):
            self._use(fallback_id, instance.at_id)
        if fallback is None:
            self._error(
                CatalogErrorKind.MISSING_REFERENCE,
                instance,
                f"fallback {fallback_id!r} is not a fallback offer in the library",
                reference=fallback_id if isinstance(fallback_id, str) else None,
            )
        named = sorted({p for c in criteria for p in c.placements})
        for placement_id in named:
            if placement_id not in placements:
                self._error(
                    CatalogErrorKind.MISSING_REFERENCE,
                    instance,
                    f"criterion placement {placement_id} is not in the library",
                    reference=placement_id,
                )
            elif fallback is not None and placement_id not in fallback.representations:
                self._error(
                    CatalogErrorKind.FALLBACK_WITHOUT_REPRESENTATION,
                    instance,
                    f"fallback {fallback.at_id} has no representation for {placement_id}",
                    reference=placement_id,
                )
        return Decision(
            at_id=instance.at_id,
            instance_id=instance.instance_id,
            etag=instance.etag,
            body=body,
            status=str(prop(body, "status", "")),
            start=start,
            end=end,
            criteria=criteria,
            fallback_id=fallback_id if isinstance(fallback_id, str) else None,
            fallback=fallback,
        )

    # ---- dependents ------------------------------------------------------------------
    def _finish_errors(
        self, decisions: Mapping[str, Decision], rule_users: Mapping[str, frozenset[str]]
    ) -> tuple[CatalogError, ...]:
        """The errors with what depends on them and the decisions they reach. Work per
        error, not per offer: a rule's offers come from ``rule_users`` (a reused offer
        was not visited this build) and an offer's decisions from a look-up in each
        pool (its members are sorted), so a library with one broken rule does not make
        every refresh walk every offer."""
        if not self.errors:
            return ()
        reached: dict[str, set[str]] = {}

        def activities_of(at_id: str) -> set[str]:
            # The decisions whose pools hold this offer (none when it is not an offer).
            if at_id not in reached:
                offer = self.offers.get(at_id)
                reached[at_id] = (
                    {
                        decision.at_id
                        for decision in decisions.values()
                        for criterion in decision.criteria
                        if offer in criterion.pool.members
                    }
                    if offer is not None
                    else set()
                )
            return reached[at_id]

        finished = []
        for error in self.errors:
            self.pause()
            dependents = sorted(
                self.uses.get(error.at_id, set()) | rule_users.get(error.at_id, frozenset())
            )
            if error.kind is CatalogErrorKind.MISSING_REFERENCE:
                dependents = []
            activities: set[str] = set()
            for at_id in [error.at_id, *dependents]:
                if at_id in decisions:
                    activities.add(at_id)
                activities |= activities_of(at_id)
            finished.append(
                replace(error, dependents=tuple(dependents), activities=tuple(sorted(activities)))
            )
        return tuple(finished)

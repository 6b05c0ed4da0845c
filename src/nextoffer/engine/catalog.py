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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

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

_OFFER_WORD = re.compile(r"\boffer\b")
_EMPTY_POOL = Pool((), MappingProxyType({}))


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
        "compile_rule",
        "decisions",
        "errors",
        "fallbacks",
        "offers",
        "placements",
        "segment_rules",
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
        segment_rules: Mapping[str, Any] | None = None,
    ) -> None:
        self.placements: Mapping[str, Placement] = MappingProxyType(dict(placements))
        self.offers: Mapping[str, Offer] = MappingProxyType(dict(offers))
        self.fallbacks: Mapping[str, Fallback] = MappingProxyType(dict(fallbacks))
        self.decisions: Mapping[str, Decision] = MappingProxyType(dict(decisions))
        #: Every problem found while building; empty for a healthy library.
        self.errors: tuple[CatalogError, ...] = errors
        #: The compiler the snapshot was built with (explain uses it to name false sub-rules).
        self.compile_rule = compile_rule
        #: Segment definitions (audiences) by id, compiled: a segment constraint naming one
        #: is met when its rule is true of the profile (as well as by ``segmentMembership``).
        self.segment_rules: Mapping[str, Any] = MappingProxyType(dict(segment_rules or {}))
        self._capped: Mapping[str, frozenset[str]] = MappingProxyType(
            {at_id: _capped_ids(decision) for at_id, decision in decisions.items()}
        )

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
    instances: Iterable[CatalogInstance],
    *,
    compile_rule: CompileRule | None = None,
    segments: Mapping[str, str] | None = None,
) -> Catalog:
    """Compile a library into a :class:`Catalog`. Never raises for bad content.

    ``compile_rule`` defaults to :func:`nextoffer.pql.compile`; it is the seam tests use.
    ``segments`` are the tenant's segment definitions (id -> PQL text); one that does not
    compile is left out (it was checked when saved).
    """
    compile_rule = compile_rule or _default_compile()
    catalog = _Builder(compile_rule).build(instances)
    if segments:
        rules = {}
        for segment_id, source in segments.items():
            try:
                rules[segment_id] = compile_rule(source, format="pql/text", kind="rule")
            except PQLError:
                continue
        catalog.segment_rules = MappingProxyType(rules)
    return catalog


def _schema_key(schema: str) -> str:
    return schema.split(";", 1)[0].strip()


def _sort_key(offer: Offer) -> tuple[int, str]:
    return (-offer.priority, offer.at_id)


class _Builder:
    """One build: collects errors and the "who uses what" graph while compiling."""

    def __init__(self, compile_rule: CompileRule) -> None:
        self.compile_rule = compile_rule
        self.errors: list[CatalogError] = []
        self.by_schema: dict[str, dict[str, CatalogInstance]] = {}
        self.uses: dict[str, set[str]] = {}  # referenced @id -> @ids referencing it
        self.rules: dict[str, Rule] = {}
        self.formulas: dict[str, Rule] = {}
        self.pools: dict[str, Pool] = {}
        self.conjuncts: dict[str, Rule | None] = {}  # shared rule parts, by their text

    # ---- entry point -----------------------------------------------------------------
    def build(self, instances: Iterable[CatalogInstance]) -> Catalog:
        for instance in instances:
            self.by_schema.setdefault(_schema_key(instance.schema), {})[instance.at_id] = instance
        self.rules = {
            i.at_id: self._rule(i, ("condition",), CatalogErrorKind.INVALID_RULE, "rule")
            for i in self._all(ELIGIBILITY_RULE)
        }
        self.formulas = {
            i.at_id: self._rule(i, ("expression",), CatalogErrorKind.INVALID_FORMULA, "formula")
            for i in self._all(RANKING_FORMULA)
        }
        placements = {
            i.at_id: Placement(i.at_id, i.instance_id, i.etag, i.body) for i in self._all(PLACEMENT)
        }
        offers = {i.at_id: self._offer(i) for i in self._all(PERSONALIZED_OFFER)}
        fallbacks = {i.at_id: self._fallback(i) for i in self._all(FALLBACK_OFFER)}
        self.tag_index: dict[str, list[Offer]] = {}
        for offer in sorted(offers.values(), key=_sort_key):
            for tag in offer.tags:
                self.tag_index.setdefault(tag, []).append(offer)
        self.offers = offers
        decisions = {i.at_id: self._decision(i, fallbacks, placements) for i in self._all(DECISION)}
        return Catalog(
            placements=placements,
            offers=offers,
            fallbacks=fallbacks,
            decisions=decisions,
            errors=self._finish_errors(decisions),
            compile_rule=self.compile_rule,
        )

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

    def _rule_ref(self, rule_id: str, instance: CatalogInstance, table: dict[str, Rule]) -> Rule:
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
        return Fallback(
            instance.at_id,
            instance.instance_id,
            instance.etag,
            instance.body,
            self._representations(instance.body),
        )

    # ---- collections -----------------------------------------------------------------
    def _pool_of(self, members: Iterable[Offer]) -> Pool:
        ordered = tuple(sorted(set(members), key=_sort_key))
        by_placement: dict[str, list[Offer]] = {}
        for offer in ordered:
            if offer.status == "approved":
                for placement in offer.representations:
                    by_placement.setdefault(placement, []).append(offer)
        required = {p: self._required(o) for p, o in by_placement.items()}
        return Pool(
            ordered,
            MappingProxyType({p: tuple(o) for p, o in by_placement.items()}),
            MappingProxyType({p: r for p, r in required.items() if r}),
        )

    def _required(self, offers: Iterable[Offer]) -> tuple[Rule, ...]:
        """The rule parts every one of ``offers`` needs (see ``Pool.required``).

        Offers that can never be eligible (a problem, an unusable rule) do not count; an
        offer without a rule, or a rule the compiler cannot split, leaves nothing shared.
        """
        common: dict[str, None] | None = None
        for offer in offers:
            rule = offer.rule
            if offer.problem is not None or (rule is not None and rule.compiled is None):
                continue
            parts = getattr(rule.compiled, "conjuncts", None) if rule is not None else None
            if not parts:
                return ()
            mine = {part for part in parts if _OFFER_WORD.search(part) is None}
            if len(parts) == 1 and parts[0] in mine:
                # The whole rule is the part: one evaluation (and cache entry) serves both.
                self.conjuncts.setdefault(parts[0], rule)
            common = (
                dict.fromkeys(p for p in parts if p in mine)
                if common is None
                else {p: None for p in common if p in mine}
            )
            if not common:
                return ()
        found = (self._conjunct(part) for part in common or ())
        return tuple(rule for rule in found if rule is not None)

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
        instance = self.by_schema.get(COLLECTION, {}).get(collection_id)
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
        members: list[Offer]
        if filter_type == "offers":
            members = [self.offers[i] for i in ids if i in self.offers]
        elif filter_type == "anyTags":
            members = [offer for tag in ids for offer in self.tag_index.get(tag, ())]
        elif filter_type == "allTags":
            wanted = frozenset(ids)
            first = self.tag_index.get(ids[0], []) if ids else []
            members = [offer for offer in first if wanted <= offer.tags]
        else:
            self._error(
                CatalogErrorKind.INVALID_VALUE, instance, f"unknown filterType {filter_type!r}"
            )
            members = []
        pool = self.pools[collection_id] = self._pool_of(members)
        return pool

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
        group = non_negative_int(prop(ranking, "priority", 0))
        return Criterion(
            index=index,
            placements=frozenset(strings(spec, "placements")),
            pool=pool,
            group_priority=group or 0,
            constraint=self._constraint(obj(spec, "profileConstraints"), instance),
            order=order,
            formula=formula,
        )

    def _decision(
        self,
        instance: CatalogInstance,
        fallbacks: Mapping[str, Fallback],
        placements: Mapping[str, Placement],
    ) -> Decision:
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
    def _finish_errors(self, decisions: Mapping[str, Decision]) -> tuple[CatalogError, ...]:
        offer_activities: dict[str, set[str]] = {}
        for decision in decisions.values():
            for criterion in decision.criteria:
                for offer in criterion.pool.members:
                    offer_activities.setdefault(offer.at_id, set()).add(decision.at_id)
        finished = []
        for error in self.errors:
            dependents = sorted(self.uses.get(error.at_id, ()))
            if error.kind is CatalogErrorKind.MISSING_REFERENCE:
                dependents = []
            activities: set[str] = set()
            for at_id in [error.at_id, *dependents]:
                if at_id in decisions:
                    activities.add(at_id)
                activities |= offer_activities.get(at_id, set())
            finished.append(
                replace(error, dependents=tuple(dependents), activities=tuple(sorted(activities)))
            )
        return tuple(finished)

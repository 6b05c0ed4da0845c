"""How a :class:`~nextoffer.engine.catalog.Catalog` is built: :func:`build_catalog`
compiles a library's instances into one, from scratch or as a patch of the previous
build (reusing what did not change). The offer pools are ``pools.py``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from immutables import Map, MapMutation

from nextoffer.engine.catalog import (
    COLLECTION,
    DECISION,
    ELIGIBILITY_RULE,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RANKING_FORMULA,
    RANKING_STRATEGY,
    Catalog,
    CatalogInstance,
    Memo,
)
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
from nextoffer.engine.pools import EMPTY_POOL, NO_OFFERS, OFFER_WORD, PoolMemo, Pools, sort_key
from nextoffer.engine.sorted_chunks import SortedChunks
from nextoffer.engine.strategy import Strategy, StrategyType
from nextoffer.errors import PQLError, Unprocessable

_ORDER_ALIASES = {"ranking-strategy": "rankingStrategy"}
_EMPTY: Map[str, Any] = Map()


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
    memo = previous.build_memo if previous is not None else None
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


def _no_pause() -> None:
    return None


class _Builder:
    """One build: collects errors and the "who uses what" graph while compiling."""

    def __init__(
        self,
        compile_rule: CompileRule,
        memo: Memo | None = None,
        pause: Callable[[], None] | None = None,
    ) -> None:
        self.compile_rule = compile_rule
        self.old = memo
        #: Called between small pieces of the work (``build_catalog(pause=…)``).
        self.pause = pause or _no_pause
        self.pool_memo: dict[str, PoolMemo] = {}
        #: Offers of the previous build replaced or removed, and those new or rebuilt.
        self.moved: tuple[list[Offer], list[Offer]] = ([], [])
        self.errors: list[CatalogError] = []
        self.by_schema: Map[str, Map[str, CatalogInstance]] = Map()
        #: ``@id``s new or changed since the previous build (all of them without one).
        self.changed: Collection[str] = ()
        self.uses: dict[str, set[str]] = {}  # referenced @id -> @ids referencing it
        self.rules: Map[str, Rule] = Map()
        self.formulas: Map[str, Rule] = Map()
        #: Collection ``@id`` → its pool, this build.
        self.collections: dict[str, Pool] = {}
        self.pools = Pools(compile_rule, self.pause, memo.own_parts if memo is not None else None)
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
        self.pools.own_parts = own_parts
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
            at_id: frozenset().union(*(self.pools.capped_of(c.pool) for c in decision.criteria))
            for at_id, decision in decisions.items()
        }
        pause()
        own_parts = self.pools.own_parts
        memo = Memo(
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
                        index[tag] = index.get(tag, NO_OFFERS).insert(offer)
                for tag in {tag for offer in gone for tag in offer.tags}:
                    if not index[tag]:
                        del index[tag]
                self.pause()
                return index.finish()
        fresh: dict[str, list[Offer]] = {}
        for offer in sorted(offers.values(), key=sort_key):
            for tag in offer.tags:
                fresh.setdefault(tag, []).append(offer)
        return Map({tag: SortedChunks.of(sort_key, listed) for tag, listed in fresh.items()})

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
        uses_offer = OFFER_WORD.search(source) is not None
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
    def _collection_pool(self, collection_id: str, user: CatalogInstance) -> Pool:
        self._use(collection_id, user.at_id)
        if collection_id in self.collections:
            return self.collections[collection_id]
        instance = self.by_schema.get(COLLECTION, _EMPTY).get(collection_id)
        if instance is None:
            self._error(
                CatalogErrorKind.MISSING_REFERENCE,
                user,
                f"references collection {collection_id}, which is not in the library",
                reference=collection_id,
            )
            return EMPTY_POOL
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
            memo = self.pools.patched(old, belongs, self.moved)
        if memo is None:
            members: list[Offer] = []
            if filter_type == "offers":
                members = [self.offers[i] for i in ids if i in self.offers]
            elif filter_type == "anyTags":
                members = [offer for tag in ids for offer in self.tag_index.get(tag, ())]
            elif filter_type == "allTags" and ids:
                members = [o for o in self.tag_index.get(ids[0], ()) if wanted <= o.tags]
            pool, tallies = self.pools.new(members)
            memo = PoolMemo(stamp, pool, tallies, self.pools.capped_of(pool))
        self.pools.capped[id(memo.pool)] = memo.capped
        self.collections[collection_id] = memo.pool
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
            pool = self.pools.of(
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
                    f"criterion {index}: ranking strategy {strategy_id!r} is not in the"
                    " library; the criterion ranks by offer priority until it is",
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

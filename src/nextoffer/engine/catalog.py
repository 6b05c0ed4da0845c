"""The catalog: an immutable, pre-indexed snapshot of an Offer Library container.

``build.py`` compiles one (:func:`~nextoffer.engine.build.build_catalog`) with all the
work that does not depend on a request (decisioning-api.md §1: "any constraints defined
by the business logic that aren't dependent on runtime context will be evaluated" at
activation): compiling rules and formulas, resolving collection membership, dropping
offers that are not ``approved``, indexing offers by the placements they have a
representation for, and sorting each (collection, placement) list by priority.
:func:`~nextoffer.engine.selection.decide` then only walks short, sorted lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from immutables import Map

from nextoffer.engine.diagnostics import CatalogError
from nextoffer.engine.model import (
    CompileRule,
    Decision,
    Fallback,
    Offer,
    Placement,
    Rule,
)
from nextoffer.engine.pools import Parts, PoolMemo
from nextoffer.engine.sorted_chunks import SortedChunks
from nextoffer.engine.strategy import Strategy

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
    """An immutable decisioning snapshot; ``build.py``'s :func:`build_catalog` builds one."""

    __slots__ = (
        "_capped",
        "build_memo",
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
        memo: Memo | None = None,
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
        #: What the next build may reuse (``build_catalog(previous=…)``); only ``build.py``
        #: reads it.
        self.build_memo = memo

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


@dataclass(slots=True)
class Memo:
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
    pools: dict[str, PoolMemo]
    #: A compiled rule → its parts that do not read ``offer`` (``Pools._required``).
    own_parts: Map[str, Parts]
    #: Tag → offers carrying it, in (-priority, @id) order (persistent: a build makes new
    #: sequences sharing the unchanged chunks).
    tag_index: Map[str, SortedChunks[Offer]]
    #: A rule's ``@id`` → the offers whose rule or constraint names it (a changed rule's
    #: offers are built again without walking every offer).
    rule_users: Map[str, frozenset[str]]

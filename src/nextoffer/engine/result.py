"""What :func:`~nextoffer.engine.selection.decide` returns.

Everything the API layer needs to serialise Adobe's response (ids, etags, names,
characteristics, priority, the representation and its components, the score) and
everything the service needs afterwards (``proposed``: what to count and record).
Serialisation itself is not done here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from nextoffer.engine.explain import PropositionTrace

# Results are NamedTuples: immutable like frozen dataclasses, but built several times faster
# (a decision creates a dozen of them; frozen-dataclass __init__ showed up in profiles).


def _name(body: Mapping[str, Any]) -> str | None:
    name = body.get("xdm:name", body.get("name"))
    return name if isinstance(name, str) else None


def _components(representation: Mapping[str, Any] | None) -> tuple[Mapping[str, Any], ...]:
    if representation is None:
        return ()
    found = representation.get("xdm:components", representation.get("components"))
    return tuple(c for c in found if isinstance(c, Mapping)) if isinstance(found, list) else ()


def _characteristics(body: Mapping[str, Any]) -> Mapping[str, Any]:
    found = body.get("xdm:characteristics", body.get("characteristics"))
    return found if isinstance(found, Mapping) else {}


class ObjectRef(NamedTuple):
    """A decision or placement as echoed in a proposition (``body`` for metadata)."""

    at_id: str
    etag: int
    body: Mapping[str, Any]

    @property
    def name(self) -> str | None:
        return _name(self.body)


class Option(NamedTuple):
    """A chosen personalized offer with the content chosen for the placement."""

    offer_id: str
    etag: int
    #: The offer's ``_instance`` (``xdm:name``, ``xdm:characteristics``, …).
    body: Mapping[str, Any]
    #: The representation whose ``xdm:placement`` is the requested placement (§4.8).
    representation: Mapping[str, Any] | None
    priority: int = 0
    #: The ranking formula's value when a formula ranked this option (``xdm:score``).
    score: float | None = None

    @property
    def components(self) -> tuple[Mapping[str, Any], ...]:
        """The representation's ``xdm:components`` (every language variant)."""
        return _components(self.representation)

    @property
    def name(self) -> str | None:
        return _name(self.body)

    @property
    def characteristics(self) -> Mapping[str, Any]:
        return _characteristics(self.body)


class FallbackOption(NamedTuple):
    """The decision's fallback offer, returned when no option remained."""

    offer_id: str
    etag: int
    body: Mapping[str, Any]
    #: ``None`` only for a fallback that lacks a representation for the placement
    #: (reported in ``catalog.errors`` when the criteria name the placement).
    representation: Mapping[str, Any] | None

    @property
    def components(self) -> tuple[Mapping[str, Any], ...]:
        return _components(self.representation)

    @property
    def name(self) -> str | None:
        return _name(self.body)

    @property
    def characteristics(self) -> Mapping[str, Any]:
        return _characteristics(self.body)


class Ranking(NamedTuple):
    """How a ranking strategy ranked one proposition: what the feedback on it trains."""

    strategy_id: str
    #: The request's active feature slots (``engine.strategy.slots``).
    slots: tuple[int, ...]
    #: True when the decision served at random (personalized exploration).
    explored: bool
    #: The options the strategy ranked (a later group may have added others).
    offer_ids: tuple[str, ...]


class Proposition(NamedTuple):
    """The answer to one proposition request, in request order.

    Exactly one of ``options`` (non-empty) and ``fallback`` is set, except when the
    decision's fallback is missing from the catalog: then both are empty/``None`` and the
    trace (and ``catalog.errors``) says why.
    """

    activity: ObjectRef
    placement: ObjectRef
    options: tuple[Option, ...]
    fallback: FallbackOption | None
    trace: PropositionTrace | None = None
    #: Set when a ranking strategy ranked options of this proposition.
    ranking: Ranking | None = None


class Proposed(NamedTuple):
    """One offer proposed in one scope: what the service counts and records."""

    offer_id: str
    activity_id: str
    placement_id: str
    #: True for a fallback (fallbacks have no caps; decision events still record them).
    fallback: bool = False


class DecisionResult(NamedTuple):
    propositions: tuple[Proposition, ...]
    #: Every option and fallback proposed, in proposition then rank order.
    proposed: tuple[Proposed, ...]

"""What :func:`~nextoffer.engine.selection.decide` returns.

Everything the API layer needs to serialise Adobe's response (ids, etags, names,
characteristics, priority, the representation and its components, the score) and
everything the service needs afterwards (``proposed``: what to count and record).
Serialisation itself is not done here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nextoffer.engine.explain import PropositionTrace


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A decision or placement as echoed in a proposition (``body`` for metadata)."""

    at_id: str
    etag: int
    body: Mapping[str, Any]

    @property
    def name(self) -> str | None:
        name = self.body.get("xdm:name", self.body.get("name"))
        return name if isinstance(name, str) else None


@dataclass(frozen=True, slots=True)
class Content:
    """An offer (personalized or fallback) with the content chosen for the placement."""

    offer_id: str
    etag: int
    #: The offer's ``_instance`` (``xdm:name``, ``xdm:characteristics``, …).
    body: Mapping[str, Any]
    #: The representation whose ``xdm:placement`` is the requested placement (§4.8);
    #: ``None`` only for a fallback that lacks one (reported in ``catalog.errors``).
    representation: Mapping[str, Any] | None

    @property
    def components(self) -> tuple[Mapping[str, Any], ...]:
        """The representation's ``xdm:components`` (every language variant)."""
        if self.representation is None:
            return ()
        found = self.representation.get("xdm:components", self.representation.get("components"))
        return tuple(c for c in found if isinstance(c, Mapping)) if isinstance(found, list) else ()

    @property
    def name(self) -> str | None:
        name = self.body.get("xdm:name", self.body.get("name"))
        return name if isinstance(name, str) else None

    @property
    def characteristics(self) -> Mapping[str, Any]:
        found = self.body.get("xdm:characteristics", self.body.get("characteristics"))
        return found if isinstance(found, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Option(Content):
    """A chosen personalized offer."""

    priority: int = 0
    #: The ranking formula's value when a formula ranked this option (``xdm:score``).
    score: float | None = None


@dataclass(frozen=True, slots=True)
class FallbackOption(Content):
    """The decision's fallback offer, returned when no option remained."""


@dataclass(frozen=True, slots=True)
class Proposition:
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


@dataclass(frozen=True, slots=True)
class Proposed:
    """One offer proposed in one scope: what the service counts and records."""

    offer_id: str
    activity_id: str
    placement_id: str
    #: True for a fallback (fallbacks have no caps; decision events still record them).
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class DecisionResult:
    propositions: tuple[Proposition, ...]
    #: Every option and fallback proposed, in proposition then rank order.
    proposed: tuple[Proposed, ...]

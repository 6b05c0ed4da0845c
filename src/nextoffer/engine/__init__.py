"""Decisioning: the pure core that picks offers for proposition requests. No IO here.

``build_catalog`` compiles stored xcore instances into an immutable :class:`Catalog`;
``decide`` answers a :class:`DecisionRequest` against it. The clock (``now``), the
randomness (``rng``) and the cap counters are parameters. See ``README.md`` and
``docs/decisioning.md``.
"""

from nextoffer.engine.build import build_catalog
from nextoffer.engine.capping import CapCounters
from nextoffer.engine.catalog import Catalog, CatalogInstance
from nextoffer.engine.diagnostics import CatalogError, CatalogErrorKind
from nextoffer.engine.explain import CandidateTrace, PropositionTrace, Reason
from nextoffer.engine.request import DecisionRequest, PropositionRequest
from nextoffer.engine.result import (
    DecisionResult,
    FallbackOption,
    ObjectRef,
    Option,
    Proposed,
    Proposition,
)
from nextoffer.engine.selection import decide

__all__ = [
    "CandidateTrace",
    "CapCounters",
    "Catalog",
    "CatalogError",
    "CatalogErrorKind",
    "CatalogInstance",
    "DecisionRequest",
    "DecisionResult",
    "FallbackOption",
    "ObjectRef",
    "Option",
    "Proposed",
    "Proposition",
    "PropositionRequest",
    "PropositionTrace",
    "Reason",
    "build_catalog",
    "decide",
]

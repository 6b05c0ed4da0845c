"""Problems found while building a catalog snapshot.

:func:`~nextoffer.engine.build.build_catalog` never raises for a bad library: every
problem becomes a :class:`CatalogError` in ``catalog.errors`` and the objects that depend
on it are made unusable (never proposed). The service turns these into the diagnostics
body of decisioning-api.md §1.1 and may keep serving its last good snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class CatalogErrorKind(Enum):
    """What kind of problem a :class:`CatalogError` reports."""

    #: An eligibility rule has no PQL condition or its condition does not compile.
    INVALID_RULE = "invalidRule"
    #: A ranking formula has no PQL expression or its expression does not compile.
    INVALID_FORMULA = "invalidFormula"
    #: An instance references an ``@id`` that is not in the library (or has the wrong type).
    MISSING_REFERENCE = "missingReference"
    #: A property the engine must read is malformed (a date, a filter type, a constraint type).
    INVALID_VALUE = "invalidValue"
    #: A decision's fallback has no representation for a placement its criteria name.
    FALLBACK_WITHOUT_REPRESENTATION = "fallbackWithoutRepresentation"
    #: A criterion's ``xdm:rankingStrategy`` names no ranking strategy in the library (the
    #: dps API's documented decision names one it offers no way to create): the id is
    #: kept, and the criterion ranks by offer priority until the strategy exists.
    UNKNOWN_RANKING_STRATEGY = "unknownRankingStrategy"


@dataclass(frozen=True, slots=True)
class CatalogError:
    """One problem, named by the instance at fault and the instances it breaks."""

    kind: CatalogErrorKind
    #: ``@id`` of the instance at fault (the rule, or the instance holding a bad reference).
    at_id: str
    schema: str
    instance_id: str
    etag: int
    message: str
    #: PQL errors: 1-based position in the rule source.
    line: int | None = None
    column: int | None = None
    #: MISSING_REFERENCE / FALLBACK_WITHOUT_REPRESENTATION: the ``@id`` involved.
    reference: str | None = None
    #: ``@id``s of instances that use the faulty one directly (offers, decisions).
    dependents: tuple[str, ...] = ()
    #: ``@id``s of decisions affected, directly or through an offer of their collections.
    activities: tuple[str, ...] = ()

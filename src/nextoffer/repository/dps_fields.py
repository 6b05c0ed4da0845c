"""The dps form of the Offer Library as data: its resources and every field's xcore name.

Adobe's newer persistence API (offer-api-dps.md) serves the same objects as xcore in plain
JSON with unprefixed names. nextoffer stores one library; this table is the whole
difference between the two views. :mod:`nextoffer.repository.dps` reads it (no other
module names a dps field), and ``docs/api.md`` prints it (``tests/unit/test_dps_fields.py``
checks that the page and the table agree).

A :class:`Field` pairs a dps key with the xcore key it is stored under; ``inner`` maps the
members of an object value (or of each object in an array value), ``entries`` the members
of each value of a map whose keys are free (a rule's ``definedOn`` variables), and
``values`` the spellings of an enumerated value (dps ↔ xcore). Keys the table does not
name are kept as they are, in both directions, as xcore keeps properties its schemas do
not name.

Adding a kind is one :class:`Resource` row (and its fields, if it has its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    OM,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RANKING_FORMULA,
    RANKING_STRATEGY,
    RULE,
    TAG,
    ObjectType,
)


@dataclass(frozen=True, slots=True)
class Field:
    dps: str
    xcore: str
    inner: tuple[Field, ...] = ()
    entries: tuple[Field, ...] = ()
    #: dps spelling → xcore spelling of an enumerated value; other values are kept.
    values: Mapping[str, str] = field(default_factory=dict)


def _same(*names: str) -> tuple[Field, ...]:
    """Keys spelt alike in both forms."""
    return tuple(Field(name, name) for name in names)


def _xdm(*names: str) -> tuple[Field, ...]:
    """``name`` ↔ ``xdm:name`` for each name (the rule for most members)."""
    return tuple(Field(name, f"xdm:{name}") for name in names)


#: Component and placement content types: the dps short names (offer-api-dps §2.1).
COMPONENT_TYPES: Mapping[str, str] = {
    "html": OM + "content-component-html",
    "imagelink": OM + "content-component-imagelink",
    "text": OM + "content-component-text",
    "json": OM + "content-component-json",
}
#: Collection filter types: kebab-case in dps, camelCase in xcore (§2.4).
FILTER_TYPES: Mapping[str, str] = {
    "offers": "offers",
    "any-tags": "anyTags",
    "all-tags": "allTags",
}
#: A criterion's order: kebab-case in dps (``ranking-strategy`` documented; the others by
#: analogy), the XDM enum in xcore (§2.7).
ORDER_TYPES: Mapping[str, str] = {
    "static": "static",
    "scoring-function": "scoringFunction",
    "ranking-strategy": "rankingStrategy",
}

_NAMED = _xdm("name", "description")
_PQL = _xdm("type", "format", "value")
_DEFINED_ON = Field(
    "definedOn",
    "xdm:definedOn",
    entries=(
        Field("schema", "xdm:schema", inner=(Field("ref", "$ref"), *_same("version"))),
        *_xdm("referencePaths"),
    ),
)
_SEGMENTS = Field("segmentIdentities", "xdm:segmentIdentities", inner=_xdm("id", "namespace"))

OFFER_FIELDS: tuple[Field, ...] = (
    *_NAMED,
    *_xdm("status"),
    Field(
        "representations",
        "xdm:representations",
        inner=(
            *_xdm("channel", "placement"),
            Field(
                "components",
                "xdm:components",
                inner=(
                    Field("type", "@type", values=COMPONENT_TYPES),
                    Field("format", "dc:format"),
                    Field("language", "dc:language"),
                    *_xdm("content", "deliveryURL", "linkURL", "copyline"),
                ),
            ),
        ),
    ),
    Field(
        "selectionConstraint",
        "xdm:selectionConstraint",
        inner=(
            *_xdm("startDate", "endDate", "profileConstraintType", "eligibilityRule"),
            *_xdm("eligibilityRules"),
            _SEGMENTS,
        ),
    ),
    Field("rank", "xdm:rank", inner=_xdm("priority")),
    Field("cappingConstraint", "xdm:cappingConstraint", inner=_xdm("globalCap", "profileCap")),
    Field(
        "frequencyCappingConstraints",
        "xdm:frequencyCappingConstraints",
        inner=(
            *_xdm("enabled", "limit", "count", "startDate", "endDate", "scope", "entity"),
            *_xdm("placement", "events", "customQuery", "duration", "index"),
            Field("repeat", "xdm:repeat", inner=_xdm("enabled", "unit", "unitCount")),
        ),
    ),
    *_xdm("fCapConstraintsLastIndex", "tags", "characteristics"),
    *_same("labels"),
)

PLACEMENT_FIELDS: tuple[Field, ...] = (
    *_NAMED,
    *_xdm("channel"),
    Field("componentType", "xdm:componentType", values=COMPONENT_TYPES),
    *_xdm("contentTypes", "itemCount", "allowDuplicatePlacements", "returnContent"),
    Field(
        "returnMetaData",
        "xdm:returnMetaData",
        inner=_xdm(
            "decisionName",
            "offerName",
            "offerAttributes",
            "offerPriority",
            "placementName",
            "channelType",
            "contentType",
        ),
    ),
    *_same("labels"),
)

COLLECTION_FIELDS: tuple[Field, ...] = (
    *_NAMED,
    Field("filterType", "xdm:filterType", values=FILTER_TYPES),
    *_xdm("ids"),
    *_same("labels"),
)

TAG_FIELDS: tuple[Field, ...] = (*_NAMED, *_same("labels"))

RULE_FIELDS: tuple[Field, ...] = (
    *_NAMED,
    Field("condition", "xdm:condition", inner=_PQL),
    _DEFINED_ON,
    *_same("labels"),
)

DECISION_FIELDS: tuple[Field, ...] = (
    *_NAMED,
    *_xdm("status", "startDate", "endDate", "fallback"),
    Field(
        "criteria",
        "xdm:criteria",
        inner=(
            *_xdm("placements"),
            Field(
                "rank",
                "xdm:ranking",
                inner=(
                    *_xdm("priority"),
                    Field(
                        "order",
                        "xdm:order",
                        inner=(
                            Field(
                                "orderEvaluationType", "xdm:orderEvaluationType", values=ORDER_TYPES
                            ),
                            *_xdm("function", "rankingStrategy"),
                        ),
                    ),
                ),
            ),
            Field(
                "profileConstraint",
                "xdm:profileConstraints",
                inner=(
                    *_xdm("profileConstraintType", "eligibilityRule", "eligibilityRules"),
                    _SEGMENTS,
                ),
            ),
            Field(
                "optionSelection",
                "xdm:optionSelection",
                inner=_xdm("filter", "options", "optionSelectionType"),
            ),
        ),
    ),
    # The 2019 flat decision (one placement, one collection), as xcore stores it.
    *_xdm("placement", "filter"),
    *_same("labels"),
)

RANKING_FORMULA_FIELDS: tuple[Field, ...] = (
    *_NAMED,
    Field("expression", "xdm:expression", inner=_PQL),
    *_same("returnType", "exdFunction"),
    _DEFINED_ON,
    *_same("labels"),
)


#: nextoffer's AI ranking strategies, named in the dps style (beyond Adobe: dps offers no
#: way to create the strategies its decisions name).
RANKING_STRATEGY_FIELDS: tuple[Field, ...] = (
    *_NAMED,
    *_xdm("strategyType", "optimizationGoal", "features", "explorationRate"),
    *_same("labels"),
)


@dataclass(frozen=True, slots=True)
class Resource:
    """One dps collection: ``/data/core/dps/<path>[?offer-type=<offer_type>]``."""

    path: str
    type: ObjectType
    #: The ``offer-type`` query value that selects this resource on ``/offers``.
    offer_type: str | None
    #: The schema version the dps form reports in ``schemas[]`` (offer-api-dps §2).
    version: str
    fields: tuple[Field, ...]

    @property
    def schema(self) -> str:
        return f"{self.type.schema_id};version={self.version}"


RESOURCES: tuple[Resource, ...] = (
    Resource("offers", PERSONALIZED_OFFER, "personalized", "0.15", OFFER_FIELDS),
    Resource("offers", FALLBACK_OFFER, "fallback", "0.8", OFFER_FIELDS),
    Resource("placements", PLACEMENT, None, "0.5", PLACEMENT_FIELDS),
    Resource("offer-collections", COLLECTION, None, "0.4", COLLECTION_FIELDS),
    Resource("offer-rules", RULE, None, "0.3", RULE_FIELDS),
    Resource("tags", TAG, None, "0.1", TAG_FIELDS),
    Resource("offer-decisions", DECISION, None, "0.8", DECISION_FIELDS),
    Resource("ranking-formulas", RANKING_FORMULA, None, "0.3", RANKING_FORMULA_FIELDS),
    Resource("ranking-strategies", RANKING_STRATEGY, None, "1.0", RANKING_STRATEGY_FIELDS),
)

#: The paths of :data:`RESOURCES`, in order, once each.
PATHS: tuple[str, ...] = tuple(dict.fromkeys(r.path for r in RESOURCES))

#: The envelope of a dps document and the xcore envelope property each one is.
ENVELOPE: Mapping[str, str] = {
    "id": "@id",
    "etag": "repo:etag",
    "created": "repo:createdDate",
    "modified": "repo:lastModifiedDate",
    "createdBy": "repo:createdBy",
    "lastModifiedBy": "repo:lastModifiedBy",
    "createdByClientId": "repo:createdByClientId",
    "lastModifiedByClientId": "repo:lastModifiedByClientId",
}


# -- the table as docs/api.md prints it ------------------------------------------------------


def _rows(fields: tuple[Field, ...], dps: str, xcore: str) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for f in fields:
        d, x = f"{dps}{f.dps}", f"{xcore}{f.xcore}"
        values = ", ".join(
            f"`{a}` → `{b.replace(OM, '…/')}`" for a, b in f.values.items() if a != b
        )
        rows.append((d, x, values))
        rows += _rows(f.inner, d + ".", x + ".")
        rows += _rows(f.entries, d + ".<name>.", x + ".<name>.")
    return rows


def markdown() -> str:
    """Every field mapping, one table per resource (docs/api.md, "The dps form")."""
    out: list[str] = []
    by_fields: dict[int, list[Resource]] = {}
    for resource in RESOURCES:
        by_fields.setdefault(id(resource.fields), []).append(resource)
    for resources in by_fields.values():
        names = ", ".join(
            f"`{r.path}`" + (f" (`offer-type={r.offer_type}`)" if r.offer_type else "")
            for r in resources
        )
        head = "| dps | xcore | values (dps → xcore; `…/` is the offer-management namespace) |"
        out += [f"**{names}**", "", head, "|---|---|---|"]
        out += [f"| `{d}` | `{x}` | {v} |" for d, x, v in _rows(resources[0].fields, "", "")]
        out.append("")
    return "\n".join(out)

"""The object types of the Offer Library and how clients name them (spec §3, §8).

A client names a type by its schema id, optionally with ``;version=``. Requests may name
an older version than the one we store; stored instances report the current version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nextoffer.errors import BadRequest

OM = "https://ns.adobe.com/experience/offer-management/"
#: nextoffer's own kinds (beyond Adobe's Offer Library) live under this namespace.
NEXTOFFER_OM = "https://ns.nextoffer.dev/offer-management/"
CONTAINER_SCHEMA = "https://ns.adobe.com/experience/xcore/container"
RESULTS_SCHEMA = "https://ns.adobe.com/experience/xcore/hal/results"
HOME_SCHEMA = "https://ns.adobe.com/experience/xcore/hal/home"


@dataclass(frozen=True, slots=True)
class ObjectType:
    """One schema of the repository."""

    name: str  # the @id type segment, e.g. "personalized-offer"
    label: str  # what the UI calls it
    stored_version: str  # the version reported in ``schemas[]``
    namespace: str = OM  # where the schema id lives: Adobe's, or nextoffer's own

    @property
    def schema_id(self) -> str:
        return self.namespace + self.name

    @property
    def versioned_schema(self) -> str:
        return f"{self.schema_id};version={self.stored_version}"


PLACEMENT = ObjectType("offer-placement", "placement", "0.4")
PERSONALIZED_OFFER = ObjectType("personalized-offer", "personalized offer", "0.5")
FALLBACK_OFFER = ObjectType("fallback-offer", "fallback offer", "0.5")
COLLECTION = ObjectType("offer-filter", "collection", "0.3")
TAG = ObjectType("tag", "collection qualifier", "0.1")
RULE = ObjectType("eligibility-rule", "decision rule", "0.3")
DECISION = ObjectType("offer-activity", "decision", "0.5")
RANKING_FORMULA = ObjectType("ranking-function", "ranking formula", "0.3")
#: An AI ranking strategy (decisioning-api.md §4.4), nextoffer's own kind.
RANKING_STRATEGY = ObjectType("ranking-strategy", "ranking strategy", "1.0", NEXTOFFER_OM)

OBJECT_TYPES: dict[str, ObjectType] = {
    t.schema_id: t
    for t in (
        PLACEMENT,
        PERSONALIZED_OFFER,
        FALLBACK_OFFER,
        COLLECTION,
        TAG,
        RULE,
        DECISION,
        RANKING_FORMULA,
        RANKING_STRATEGY,
    )
}
BY_NAME: dict[str, ObjectType] = {t.name: t for t in OBJECT_TYPES.values()}

_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True, slots=True)
class SchemaRef:
    """A schema as a client named it: the type, and the version asked for (if any)."""

    type: ObjectType
    version: str | None
    text: str  # exactly as the client wrote it, for ``schemaNs``


def parse_schema_ref(text: str, *, where: str = "schema") -> SchemaRef:
    """Resolve ``https://…/<type>[;version=N]`` (quotes allowed) to a known object type.

    Any version up to the one we store is accepted (clients send older versions; the
    instance is stored at ours). Unknown schemas and newer versions are a 400.
    """
    raw = text.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        raw = raw[1:-1].strip()
    base, _, params = raw.partition(";")
    version: str | None = None
    if params:
        key, _, value = params.strip().partition("=")
        if key.strip().lower() != "version" or not _VERSION.match(value.strip()):
            raise BadRequest(f"{where}: unsupported schema parameter in {text!r}")
        version = value.strip()
    object_type = OBJECT_TYPES.get(base.strip())
    if object_type is None:
        known = ", ".join(sorted(OBJECT_TYPES))
        raise BadRequest(f"{where}: unknown schema {base.strip()!r}; known schemas: {known}")
    if version is not None and _version_key(version) > _version_key(object_type.stored_version):
        raise BadRequest(
            f"{where}: {object_type.schema_id} version {version} is newer than the supported "
            f"version {object_type.stored_version}"
        )
    return SchemaRef(object_type, version, text)


#: The id schemes of ``@id``: ``xcore:`` for objects created through the xcore API (and
#: migrated ones), ``dps:`` for objects created through the dps API (offer-api-dps §1).
ID_SCHEMES = ("xcore", "dps")
_AT_ID = re.compile(r"^(?:xcore|dps):([a-z-]+):([0-9a-f]{1,16})$")


def at_id_type(value: str) -> ObjectType | None:
    """The object type an ``xcore:<type>:<hex>`` (or ``dps:…``) reference names, if any."""
    match = _AT_ID.match(value)
    return BY_NAME.get(match.group(1)) if match else None

"""The dps view of a stored instance (offer-api-dps.md): documents, receipts, bodies.

Pure functions over the table of :mod:`nextoffer.repository.dps_fields`: a dps body
becomes the xcore body the repository validates and stores (:func:`to_xcore`), a stored
instance the dps document a client reads (:func:`document`), and a pointer into the
stored body the pointer into the client's document (:func:`dps_pointer`), so validation
errors name what the client sent. Reading a stored body, an xcore key is found in its
prefixed form first, then bare (``xdm:description``, then ``description``), as the engine
reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonpointer

from nextoffer.errors import BadRequest, Unprocessable
from nextoffer.ids import parse_datetime
from nextoffer.repository import patch
from nextoffer.repository.dps_fields import Field, Resource
from nextoffer.repository.records import InstanceRecord

#: Members of a dps document or receipt that the repository writes; a create ignores them
#: (a document read elsewhere can be posted back), except ``id`` (assigned here: a 422).
READ_ONLY = frozenset(
    {
        "created",
        "modified",
        "etag",
        "schemas",
        "createdBy",
        "lastModifiedBy",
        "createdByClientId",
        "lastModifiedByClientId",
        "createdDate",
        "lastModifiedDate",
        "sandboxId",
    }
)


def _bare(key: str) -> str:
    return key.split(":", 1)[1] if key.startswith("xdm:") else key


def _value(field: Field, value: Any, *, to_xcore: bool) -> Any:
    if field.values and isinstance(value, str):
        spelling = (field.values if to_xcore else {x: d for d, x in field.values.items()}).get(
            value
        )
        return value if spelling is None else spelling
    if field.inner:
        return _convert(field.inner, value, to_xcore=to_xcore)
    if field.entries and isinstance(value, dict):
        return {k: _convert(field.entries, v, to_xcore=to_xcore) for k, v in value.items()}
    return value


_Index = tuple[dict[str, Field], dict[str, Field], dict[str, Field]]
#: Per field tuple, by identity (the tuple is kept, so its id is never reused): its fields
#: by dps name, by xcore name and by bare xcore name.
_INDEX: dict[int, tuple[tuple[Field, ...], _Index]] = {}


def _index(fields: tuple[Field, ...]) -> _Index:
    entry = _INDEX.get(id(fields))
    if entry is None or entry[0] is not fields:
        index = (
            {f.dps: f for f in fields},
            {f.xcore: f for f in fields},
            {_bare(f.xcore): f for f in fields},
        )
        entry = _INDEX[id(fields)] = (fields, index)
    return entry[1]


def _convert(fields: tuple[Field, ...], node: Any, *, to_xcore: bool) -> Any:
    if isinstance(node, list):
        return [_convert(fields, item, to_xcore=to_xcore) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    by_dps, by_xcore, by_bare = _index(fields)
    if to_xcore:
        for key, value in node.items():
            field = by_dps.get(key)
            if field is None:
                out.setdefault(key, value)  # not in the table: kept as sent
            else:
                out[field.xcore] = _value(field, value, to_xcore=True)
        return out
    for key, value in node.items():
        if key in by_xcore:
            field = by_xcore[key]
            out[field.dps] = _value(field, value, to_xcore=False)
    for key, value in node.items():
        if key in by_xcore:
            continue
        field = by_bare.get(key)
        if field is None:
            out.setdefault(key, value)
        elif field.dps not in out:
            out[field.dps] = _value(field, value, to_xcore=False)
    return out


def to_xcore(resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
    """The xcore body of a dps body (``id`` and envelope members not included)."""
    converted: dict[str, Any] = _convert(resource.fields, dict(body), to_xcore=True)
    return converted


def to_dps(resource: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
    """The dps members of a stored body (its ``@id`` is the document's ``id``)."""
    members = {k: v for k, v in body.items() if k != "@id"}
    converted: dict[str, Any] = _convert(resource.fields, members, to_xcore=False)
    return converted


def create_body(resource: Resource, body: Any) -> dict[str, Any]:
    """The xcore body to create from a dps create body."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", pointer="/")
    if "id" in body:
        raise Unprocessable(
            "id is assigned by the repository and cannot be sent on create", pointer="/id"
        )
    return to_xcore(resource, {k: v for k, v in body.items() if k not in READ_ONLY})


# -- dates -------------------------------------------------------------------------------


def _millis(stamp: str) -> str:
    """``2023-05-31T15:09:11.771`` (milliseconds, no zone) of a stored RFC 3339 date."""
    if len(stamp) == 27 and stamp[19] == "." and stamp[26] == "Z":
        return stamp[:23]  # the repository's own form (ids.format_datetime): UTC, µs
    moment = parse_datetime(stamp)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def receipt_date(stamp: str) -> str:
    """The receipts' form: ``2023-05-31T15:09:11.771Z``."""
    return _millis(stamp) + "Z"


def document_date(stamp: str) -> str:
    """The documents' form: ``2022-09-16T18:59:23.063+00:00``."""
    return _millis(stamp) + "+00:00"


# -- wire shapes ---------------------------------------------------------------------------


def document(resource: Resource, record: InstanceRecord) -> dict[str, Any]:
    """The dps form of an instance, as looked up and listed (offer-api-dps §1.1)."""
    audit = record.audit
    envelope: dict[str, Any] = {
        "created": document_date(audit.created),
        "modified": document_date(audit.modified),
        "etag": record.etag,
        "schemas": [resource.schema],
        "createdBy": audit.created_by,
        "lastModifiedBy": audit.modified_by,
        "id": record.at_id,
    }
    # A stored member spelt like an envelope member (an xcore client's ``etag``) is not
    # shown; an update through this form keeps it (``patch_view``).
    members = to_dps(resource, record.body)
    return {**envelope, **{k: v for k, v in members.items() if k not in envelope}}


def receipt(record: InstanceRecord, *, sandbox_id: str) -> dict[str, Any]:
    """The body answered to create and update."""
    audit = record.audit
    return {
        "etag": record.etag,
        "createdBy": audit.created_by,
        "lastModifiedBy": audit.modified_by,
        "id": record.at_id,
        "sandboxId": sandbox_id,
        "createdDate": receipt_date(audit.created),
        "lastModifiedDate": receipt_date(audit.modified),
        "createdByClientId": audit.created_client,
        "lastModifiedByClientId": audit.modified_client,
    }


# -- patches and pointers ------------------------------------------------------------------


def _as_stored(fields: tuple[Field, ...], written: Any, stored: Any) -> Any:
    """``written`` (members in their prefixed spelling) with each member spelt as ``stored``
    spells it: a member an xcore client stored bare (``condition``, as in Adobe's rule
    example) stays bare, so that client reads it where it wrote it."""
    if not isinstance(written, dict) or not isinstance(stored, dict):
        return written
    _, by_xcore, _ = _index(fields)
    out: dict[str, Any] = {}
    for key, value in written.items():
        field = by_xcore.get(key)
        if field is None:
            out[key] = value
            continue
        bare = _bare(key)
        spelt = bare if bare != key and bare in stored and key not in stored else key
        inner = stored.get(spelt)
        if field.inner and isinstance(value, dict):
            value = _as_stored(field.inner, value, inner)
        elif field.entries and isinstance(value, dict) and isinstance(inner, dict):
            value = {k: _as_stored(field.entries, v, inner.get(k)) for k, v in value.items()}
        out[spelt] = value
    return out


def patch_view(resource: Resource) -> patch.View:
    """JSON Patch over the dps document: only the object's members change."""

    def body(
        record: InstanceRecord, before: dict[str, Any], patched: dict[str, Any]
    ) -> dict[str, Any]:
        envelope = ("id", *READ_ONLY)
        for key in envelope:
            if patched.get(key) != before.get(key):
                raise Unprocessable(f"{key} is not editable", pointer=f"/{key}")
        members = {k: v for k, v in patched.items() if k not in envelope}
        written = _as_stored(resource.fields, to_xcore(resource, members), record.body)
        # Stored members the document cannot show are kept: those spelt like the envelope,
        # and a bare spelling beside its prefixed one (an xcore client's ``name`` beside
        # ``xdm:name``, of which the document shows the prefixed one) while that one is.
        _, by_xcore, by_bare = _index(resource.fields)
        hidden = {
            k: v
            for k, v in record.body.items()
            if k in envelope
            or (
                k in by_bare
                and k not in by_xcore
                and by_bare[k].xcore in record.body
                and by_bare[k].xcore in written
            )
        }
        return {**hidden, **written, "@id": record.at_id}

    return patch.View(
        render=lambda record: document(resource, record),
        body=body,
        prefix="",
        replace_adds=True,
    )


def dps_pointer(resource: Resource, pointer: str) -> str:
    """The pointer into a dps body of a pointer into the stored (xcore) body."""
    if not pointer.startswith("/"):
        return pointer
    out: list[str] = []
    fields: tuple[Field, ...] = resource.fields
    entries: tuple[Field, ...] | None = None
    for raw in pointer[1:].split("/"):
        token = jsonpointer.unescape(raw)
        if entries is not None:  # a free key of a map (a rule's definedOn variable)
            out.append(raw)
            fields, entries = entries, None
            continue
        if token.isdigit() or token == "-":
            out.append(raw)
            continue
        if not out and token == "@id":
            out.append("id")
            fields = ()
            continue
        field = next((f for f in fields if token in (f.xcore, _bare(f.xcore))), None)
        if field is None:
            out.append(raw)
            fields = ()
            continue
        out.append(jsonpointer.escape(field.dps))
        fields, entries = field.inner, (field.entries or None)
    return "/" + "/".join(out)

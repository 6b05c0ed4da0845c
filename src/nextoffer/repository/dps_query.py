"""The dps list parameters (offer-api-dps §1.1) as a :class:`~nextoffer.repository.query.ListQuery`.

dps pages take ``property`` (``[!]field[op]value``, repeatable or comma-separated),
``orderby`` (``-name,id``), ``limit`` and ``start``; fields are dps names (``name``,
``rank.priority``, ``id``, ``modified``). Each is translated to the xcore path it is stored
under through the field table, and the query runs on the same SQL search as xcore's
lists. No IO. Choices: ``docs/api.md`` ("The dps form").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from nextoffer.errors import BadRequest
from nextoffer.repository import query as q
from nextoffer.repository.dps_fields import ENVELOPE, Field, Resource
from nextoffer.repository.objects import SchemaRef

#: The order of a page that names none (Adobe's examples page by ``-modified``).
DEFAULT_ORDER = "-modified"

_KNOWN = {"property", "orderby", "limit", "start"}
#: A comma starts a new expression only before something shaped like ``[!]field[op…]``,
#: so a comma inside a value (``name==a,b``) stays in it.
_SPLIT = re.compile(r",(?=!?[A-Za-z_@$][\w.:@$-]*(?:==|!=|<=|>=|<|>|~|,|$))")
_OPERATOR = re.compile(r"==|!=|<=|>=|<|>|~")


def _field_path(resource: Resource, dotted: str, *, where: str) -> tuple[q.Path, Field | None]:
    """The xcore path (and the table's field, if it names one) of a dps field path."""
    name = dotted.strip()
    if not name:
        raise BadRequest(f"{where}: a field name is missing", pointer=where)
    if name in ENVELOPE and name != "id":
        envelope = ENVELOPE[name]
        return q.parse_path(envelope, where=where), None
    parts: list[str] = []
    fields: tuple[Field, ...] = resource.fields
    entries: tuple[Field, ...] | None = None
    last: Field | None = None
    for index, part in enumerate(name.split(".")):
        if index == 0 and part == "id":
            parts.append("@id")
            fields, last = (), None
            continue
        if entries is not None:
            parts.append(part)
            fields, entries, last = entries, None, None
            continue
        field = next((f for f in fields if f.dps == part), None)
        if field is None:
            parts.append(part)
            fields, last = (), None
            continue
        parts.append(field.xcore)
        fields, entries, last = field.inner, (field.entries or None), field
    stored = ".".join([q.INSTANCE_PREFIX, *parts])
    with _in_dps_terms(stored, name):
        return q.parse_path(stored, where=where), last


@contextmanager
def _in_dps_terms(stored: str, sent: str) -> Iterator[None]:
    """A query error about the xcore path ``stored`` told in the dps text ``sent`` the
    client wrote (its message named ``_instance.xdm:…`` paths the client never saw)."""
    try:
        yield
    except BadRequest as exc:
        raise BadRequest(exc.detail.replace(stored, sent), pointer=exc.pointer) from exc


def parse_filter(resource: Resource, expression: str, *, where: str = "property") -> q.Filter:
    """``[!]field[op value]``: a dps expression as a filter on the stored form."""
    negated = expression.startswith("!") and not expression.startswith("!=")
    text = expression[1:] if negated else expression
    match = _OPERATOR.search(text)
    field_text = text[: match.start()] if match else text
    path, field = _field_path(resource, field_text, where=where)
    with _in_dps_terms(path.text, field_text.strip()):
        if match is None:
            flt = q.parse_filter(path.text, where=where)
        else:
            value = text[match.end() :]
            if field is not None and field.values and match.group() in ("==", "!="):
                value = field.values.get(value, value)  # any-tags → anyTags
            flt = q.parse_filter(f"{path.text}{match.group()}{value}", where=where)
    return q.Filter(flt.path, flt.op, flt.literal, negated=negated)


def _order(resource: Resource, text: str) -> str:
    keys = []
    for item in text.split(","):
        stripped = item.strip()
        sign = "-" if stripped.startswith("-") else ""
        name = stripped[1:] if stripped[:1] in ("+", "-") else stripped
        path, _ = _field_path(resource, name, where="orderby")
        _require_field(resource, name)
        keys.append(sign + path.text)
    return ",".join(keys)


def _require_field(resource: Resource, dotted: str) -> None:
    """Refuse an order by a name no item of ``resource`` has: it would order by nothing,
    silently (as xcore lists refuse ``orderby=-title``). Below a field, any member goes
    (``characteristics.<key>``)."""
    first = dotted.strip().split(".", 1)[0]
    if first in ENVELOPE or any(f.dps == first for f in resource.fields):
        return
    known = ", ".join(sorted({*ENVELOPE, *(f.dps for f in resource.fields)}))
    raise BadRequest(
        f"orderby: {resource.path} have no field {first!r}; order by one of: {known}",
        pointer="orderby",
    )


def parse_list(resource: Resource, pairs: Iterable[tuple[str, str]]) -> q.ListQuery:
    """Validate a dps list request's parameters (names case-insensitive, empty = absent,
    unknown ignored, as on xcore lists); ``total`` counts the whole filtered list."""
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        lowered = key.lower()
        if lowered in _KNOWN and value:
            params.setdefault(lowered, []).append(value)
    expressions = [e for value in params.get("property", []) for e in _SPLIT.split(value) if e]
    if len(expressions) > q.MAX_FILTERS:
        raise BadRequest(f"at most {q.MAX_FILTERS} property filters", pointer="property")
    filters = tuple(parse_filter(resource, e) for e in expressions)
    order_text = q.single(params, "orderby")
    order = q.parse_order(_order(resource, order_text or DEFAULT_ORDER))
    start_text = q.single(params, "start")
    start = q.parse_cursor(start_text, order) if start_text is not None else None
    limit = q.parse_limit(q.single(params, "limit"))
    schema = SchemaRef(resource.type, None, resource.type.schema_id)
    return q.ListQuery(
        schema=schema,
        filters=filters,
        order=order,
        ordered_by_client=order_text is not None,
        start=start,
        limit=limit,
        count_from_start=False,
    )

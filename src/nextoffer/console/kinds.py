"""The library's object types as the console shows them: a form, the body it writes, and
where the repository's 422 pointers land among the form's fields.

A form edits the members it knows and keeps every other member of the stored body as it
is (an offer's frequency caps, a rule's ``xdm:definedOn``): the console never drops what
the API wrote. The body is validated by the repository, exactly as the API's would be.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from wtforms import SelectMultipleField
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # new in 3.3; stubs lag

from nextoffer.console import forms
from nextoffer.ids import format_datetime, parse_datetime
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RANKING_FORMULA,
    RULE,
    TAG,
    ObjectType,
)

#: The choices of reference fields: type → ``[(@id, name, body)]``.
Options = Mapping[ObjectType, list[tuple[str, str, dict[str, Any]]]]
#: Body index → form row, per repeated group (blank rows are not written).
Rows = dict[str, list[int]]


@dataclass(frozen=True, slots=True)
class Kind:
    slug: str  # the path segment: /console/<slug>
    object_type: ObjectType
    title: str
    noun: str
    form: type[forms.ConsoleForm]
    to_data: Callable[[Mapping[str, Any]], dict[str, Any]]
    to_body: Callable[[Any, dict[str, Any], Options], tuple[dict[str, Any], Rows]]
    #: (pointer pattern, field name); ``{0}`` in the name is the form row of group 1.
    pointers: tuple[tuple[str, str], ...]
    #: (form field path, referenced type, may be empty): the selects to fill.
    references: tuple[tuple[str, ObjectType, bool], ...] = ()
    statuses: tuple[str, ...] = ()
    #: Extra list columns: (header, function of the body).
    columns: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = field(default=())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _named(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": _text(body.get("xdm:name", body.get("name"))),
        "description": _text(body.get("xdm:description", body.get("description"))),
    }


def _put_named(form: Any, body: dict[str, Any]) -> None:
    body.pop("name", None)  # the unprefixed form of an older client: one name only
    body["xdm:name"] = form.name.data or ""
    description = (form.description.data or "").strip()
    body.pop("description", None)
    if description:
        body["xdm:description"] = description
    else:
        body.pop("xdm:description", None)


_NAMED_POINTERS = (
    (r"^/(xdm:)?name", "name"),
    (r"^/(xdm:)?description", "description"),
)


def _date_in(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value).astimezone(UTC).replace(tzinfo=None)
    except ValueError:
        return None


def _date_out(value: datetime | None) -> str | None:
    return format_datetime(value.replace(tzinfo=UTC)) if value is not None else None


def _set(body: dict[str, Any], key: str, value: Any) -> None:
    if value is None or value == "" or value == []:
        body.pop(key, None)
    else:
        body[key] = value


# -- placements and tags -------------------------------------------------------------------


def _placement_data(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_named(body),
        "channel": body.get("xdm:channel"),
        "componentType": body.get("xdm:componentType"),
    }


def _placement_body(form: Any, body: dict[str, Any], _o: Options) -> tuple[dict[str, Any], Rows]:
    _put_named(form, body)
    body["xdm:channel"] = form.channel.data
    body["xdm:componentType"] = form.componentType.data
    return body, {}


def _tag_body(form: Any, body: dict[str, Any], _o: Options) -> tuple[dict[str, Any], Rows]:
    _put_named(form, body)
    return body, {}


# -- rules and ranking formulas ---------------------------------------------------------


def _pql_holder(body: Mapping[str, Any], key: str) -> tuple[str, Mapping[str, Any]]:
    """The member holding the PQL (``xdm:condition`` or ``condition``) and its value."""
    for name in (f"xdm:{key}", key):
        holder = body.get(name)
        if isinstance(holder, Mapping):
            return name, holder
    return f"xdm:{key}", {}


def _pql_text(body: Mapping[str, Any], key: str) -> str:
    name, holder = _pql_holder(body, key)
    prefix = "xdm:" if name.startswith("xdm:") else ""
    value = holder.get(prefix + "value")
    return value if isinstance(value, str) else ""


def _put_pql(body: dict[str, Any], key: str, text: str) -> None:
    name, holder = _pql_holder(body, key)
    prefix = "xdm:" if name.startswith("xdm:") else ""
    body[name] = {
        **holder,
        prefix + "type": holder.get(prefix + "type", "PQL"),
        prefix + "format": "pql/text",
        prefix + "value": text,
    }


def _rule_data(body: Mapping[str, Any]) -> dict[str, Any]:
    return {**_named(body), "condition": _pql_text(body, "condition")}


def _rule_body(form: Any, body: dict[str, Any], _o: Options) -> tuple[dict[str, Any], Rows]:
    _put_named(form, body)
    _put_pql(body, "condition", form.condition.data or "")
    return body, {}


def _ranking_data(body: Mapping[str, Any]) -> dict[str, Any]:
    return {**_named(body), "expression": _pql_text(body, "expression")}


def _ranking_body(form: Any, body: dict[str, Any], _o: Options) -> tuple[dict[str, Any], Rows]:
    _put_named(form, body)
    _put_pql(body, "expression", form.expression.data or "")
    return body, {}


# -- collections ------------------------------------------------------------------------


def _collection_data(body: Mapping[str, Any]) -> dict[str, Any]:
    filter_type = body.get("xdm:filterType", "anyTags")
    ids = [i for i in body.get("xdm:ids") or body.get("ids") or [] if isinstance(i, str)]
    return {
        **_named(body),
        "filterType": filter_type,
        "tags": ids if filter_type != "offers" else [],
        "offers": ids if filter_type == "offers" else [],
    }


def _collection_body(form: Any, body: dict[str, Any], _o: Options) -> tuple[dict[str, Any], Rows]:
    _put_named(form, body)
    body["xdm:filterType"] = form.filterType.data
    body.pop("ids", None)
    body["xdm:ids"] = list(form.offers.data if form.filterType.data == "offers" else form.tags.data)
    return body, {}


# -- offers -----------------------------------------------------------------------------

_FORMATS = {"html": "text/html", "text": "text/plain", "json": "application/json"}


def _representation_data(rep: Mapping[str, Any]) -> dict[str, Any]:
    components = rep.get("xdm:components") or []
    first: Mapping[str, Any] = components[0] if components else {}
    fmt = _text(first.get("dc:format"))
    url = first.get("xdm:deliveryURL")
    kind = "image" if isinstance(url, str) and not first.get("xdm:content") else "html"
    for name, mime in _FORMATS.items():
        if fmt == mime:
            kind = name
    languages = first.get("dc:language") or []
    return {
        "placement": rep.get("xdm:placement"),
        "kind": kind,
        "content": _text(url if kind == "image" else first.get("xdm:content")),
        "link": _text(first.get("xdm:linkURL")),
        "language": languages[0] if languages else "",
    }


def _characteristics_text(value: Any) -> str:
    if not isinstance(value, Mapping):
        return ""
    return "\n".join(f"{k}={v}" for k, v in value.items())


def _offer_data(body: Mapping[str, Any]) -> dict[str, Any]:
    constraint = body.get("xdm:selectionConstraint") or {}
    caps = body.get("xdm:cappingConstraint") or {}
    reps = [r for r in body.get("xdm:representations") or [] if isinstance(r, Mapping)]
    return {
        **_named(body),
        "status": body.get("xdm:status", "draft"),
        "tags": [t for t in body.get("xdm:tags") or [] if isinstance(t, str)],
        "characteristics": _characteristics_text(body.get("xdm:characteristics")),
        "representations": [_representation_data(r) for r in reps] + [{"language": "en-us"}],
        "startDate": _date_in(constraint.get("xdm:startDate")),
        "endDate": _date_in(constraint.get("xdm:endDate")),
        "rule": constraint.get("xdm:eligibilityRule", ""),
        "priority": (body.get("xdm:rank") or {}).get("xdm:priority", 0),
        "globalCap": caps.get("xdm:globalCap"),
        "profileCap": caps.get("xdm:profileCap"),
    }


def _parse_characteristics(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if key.strip():
            out[key.strip()] = value.strip() if sep else ""
    return out


def _representations(form: Any, body: dict[str, Any], options: Options) -> Rows:
    placements = {at_id: b for at_id, _n, b in options.get(PLACEMENT, [])}
    old = {
        r.get("xdm:placement"): r
        for r in body.get("xdm:representations") or []
        if isinstance(r, Mapping)
    }
    written: list[dict[str, Any]] = []
    rows: list[int] = []
    for index, entry in enumerate(form.representations.entries):
        sub = entry.form
        placement = sub.placement.data or ""
        content = sub.content.data or ""
        if not placement and not content.strip():
            continue  # the blank row for a new representation
        target = placements.get(placement, {})
        component_type = target.get("xdm:componentType", forms.COMPONENT + "html")
        component: dict[str, Any] = {"@type": component_type}
        kind = sub.kind.data
        if kind == "image":
            component["xdm:deliveryURL"] = content.strip()
        else:
            component["xdm:content"] = content
            component["dc:format"] = _FORMATS.get(kind, "text/html")
        if sub.link.data:
            component["xdm:linkURL"] = sub.link.data.strip()
        if sub.language.data:
            component["dc:language"] = [sub.language.data.strip()]
        previous = old.get(placement) or {}
        rep: dict[str, Any] = {
            **previous,
            "xdm:placement": placement,
            "xdm:components": [component],
        }
        channel = target.get("xdm:channel")
        if isinstance(channel, str):
            rep["xdm:channel"] = channel
        written.append(rep)
        rows.append(index)
    body["xdm:representations"] = written
    return {"representations": rows}


def _offer_common(form: Any, body: dict[str, Any], options: Options) -> Rows:
    _put_named(form, body)
    body["xdm:status"] = form.status.data
    _set(body, "xdm:tags", list(form.tags.data or []))
    characteristics = _parse_characteristics(form.characteristics.data or "")
    _set(body, "xdm:characteristics", characteristics or None)
    return _representations(form, body, options)


def _fallback_body(
    form: Any, body: dict[str, Any], options: Options
) -> tuple[dict[str, Any], Rows]:
    return body, _offer_common(form, body, options)


def _offer_body(form: Any, body: dict[str, Any], options: Options) -> tuple[dict[str, Any], Rows]:
    rows = _offer_common(form, body, options)
    constraint = dict(body.get("xdm:selectionConstraint") or {})
    _set(constraint, "xdm:startDate", _date_out(form.startDate.data))
    _set(constraint, "xdm:endDate", _date_out(form.endDate.data))
    if form.rule.data:
        constraint["xdm:profileConstraintType"] = "eligibilityRule"
        constraint["xdm:eligibilityRule"] = form.rule.data
    else:
        constraint.pop("xdm:eligibilityRule", None)
        if constraint.get("xdm:profileConstraintType") == "eligibilityRule":
            constraint["xdm:profileConstraintType"] = "none"
        constraint.setdefault("xdm:profileConstraintType", "none")
    body["xdm:selectionConstraint"] = constraint
    body["xdm:rank"] = {**(body.get("xdm:rank") or {}), "xdm:priority": form.priority.data or 0}
    caps = dict(body.get("xdm:cappingConstraint") or {})
    _set(caps, "xdm:globalCap", form.globalCap.data)
    _set(caps, "xdm:profileCap", form.profileCap.data)
    _set(body, "xdm:cappingConstraint", caps or None)
    return body, rows


_OFFER_POINTERS = (
    *_NAMED_POINTERS,
    (r"^/xdm:status", "status"),
    (r"^/xdm:tags", "tags"),
    (r"^/xdm:characteristics", "characteristics"),
    (r"^/xdm:representations/(\d+)/xdm:placement", "representations-{0}-placement"),
    (r"^/xdm:representations/(\d+)/xdm:components/\d+/dc:language", "representations-{0}-language"),
    (r"^/xdm:representations/(\d+)/xdm:components/\d+/xdm:linkURL", "representations-{0}-link"),
    (r"^/xdm:representations/(\d+)", "representations-{0}-content"),
    (r"^/xdm:selectionConstraint/xdm:startDate", "startDate"),
    (r"^/xdm:selectionConstraint/xdm:endDate", "endDate"),
    (r"^/xdm:selectionConstraint/xdm:eligibilityRule", "rule"),
    (r"^/xdm:rank", "priority"),
    (r"^/xdm:cappingConstraint/xdm:globalCap", "globalCap"),
    (r"^/xdm:cappingConstraint/xdm:profileCap", "profileCap"),
)


# -- decisions --------------------------------------------------------------------------


def _criterion_data(criterion: Mapping[str, Any]) -> dict[str, Any]:
    selection = criterion.get("xdm:optionSelection") or {}
    constraints = criterion.get("xdm:profileConstraints") or {}
    order = (criterion.get("xdm:ranking") or {}).get("xdm:order") or {}
    return {
        "placements": list(criterion.get("xdm:placements") or []),
        "collection": selection.get("xdm:filter", ""),
        "rule": constraints.get("xdm:eligibilityRule", ""),
        "formula": order.get("xdm:function", ""),
    }


def _decision_data(body: Mapping[str, Any]) -> dict[str, Any]:
    criteria = [c for c in body.get("xdm:criteria") or [] if isinstance(c, Mapping)]
    return {
        **_named(body),
        "status": body.get("xdm:status", "draft"),
        "startDate": _date_in(body.get("xdm:startDate")),
        "endDate": _date_in(body.get("xdm:endDate")),
        "fallback": body.get("xdm:fallback", ""),
        "criteria": [_criterion_data(c) for c in criteria] + [{}],
    }


def _decision_body(form: Any, body: dict[str, Any], _o: Options) -> tuple[dict[str, Any], Rows]:
    _put_named(form, body)
    body["xdm:status"] = form.status.data
    _set(body, "xdm:startDate", _date_out(form.startDate.data))
    _set(body, "xdm:endDate", _date_out(form.endDate.data))
    _set(body, "xdm:fallback", form.fallback.data or None)
    old = [c for c in body.get("xdm:criteria") or [] if isinstance(c, Mapping)]
    written: list[dict[str, Any]] = []
    rows: list[int] = []
    for index, entry in enumerate(form.criteria.entries):
        sub = entry.form
        if not sub.placements.data and not sub.collection.data:
            continue  # the blank row for a new criterion
        criterion: dict[str, Any] = dict(old[index]) if index < len(old) else {}
        criterion["xdm:placements"] = list(sub.placements.data or [])
        selection = dict(criterion.get("xdm:optionSelection") or {})
        _set(selection, "xdm:filter", sub.collection.data or None)
        criterion["xdm:optionSelection"] = selection
        constraints = dict(criterion.get("xdm:profileConstraints") or {})
        if sub.rule.data:
            constraints["xdm:profileConstraintType"] = "eligibilityRule"
            constraints["xdm:eligibilityRule"] = sub.rule.data
        else:
            constraints.pop("xdm:eligibilityRule", None)
            if constraints.get("xdm:profileConstraintType", "eligibilityRule") == "eligibilityRule":
                constraints["xdm:profileConstraintType"] = "none"
        criterion["xdm:profileConstraints"] = constraints
        ranking = dict(criterion.get("xdm:ranking") or {})
        if sub.formula.data:
            ranking["xdm:order"] = {
                "xdm:orderEvaluationType": "scoringFunction",
                "xdm:function": sub.formula.data,
            }
        elif (ranking.get("xdm:order") or {}).get("xdm:orderEvaluationType") != "rankingStrategy":
            ranking["xdm:order"] = {"xdm:orderEvaluationType": "static"}
        criterion["xdm:ranking"] = ranking
        written.append(criterion)
        rows.append(index)
    body["xdm:criteria"] = written
    return body, {"criteria": rows}


_DECISION_POINTERS = (
    *_NAMED_POINTERS,
    (r"^/xdm:status", "status"),
    (r"^/xdm:startDate", "startDate"),
    (r"^/xdm:endDate", "endDate"),
    (r"^/xdm:fallback", "fallback"),
    (r"^/xdm:criteria/(\d+)/xdm:placements", "criteria-{0}-placements"),
    (r"^/xdm:criteria/(\d+)/xdm:optionSelection", "criteria-{0}-collection"),
    (r"^/xdm:criteria/(\d+)/xdm:profileConstraints", "criteria-{0}-rule"),
    (r"^/xdm:criteria/(\d+)/xdm:ranking", "criteria-{0}-formula"),
    (r"^/xdm:criteria$", "criteria-0-placements"),
)


def _status(body: Mapping[str, Any]) -> str:
    return _text(body.get("xdm:status"))


def _placement_label(body: Mapping[str, Any]) -> str:
    component = _text(body.get("xdm:componentType")).rpartition("-")[2]
    channel = _text(body.get("xdm:channel")).rpartition("/")[2]
    return f"{channel} · {component}" if channel else component


def _pql_label(key: str) -> Callable[[Mapping[str, Any]], str]:
    def label(body: Mapping[str, Any]) -> str:
        text = _pql_text(body, key)
        return text if len(text) <= 80 else text[:77] + "…"

    return label


KINDS: dict[str, Kind] = {
    k.slug: k
    for k in (
        Kind(
            "offers",
            PERSONALIZED_OFFER,
            "Offers",
            "offer",
            forms.OfferForm,
            _offer_data,
            _offer_body,
            _OFFER_POINTERS,
            (
                ("tags", TAG, True),
                ("rule", RULE, True),
                ("representations.placement", PLACEMENT, False),
            ),
            statuses=("draft", "approved", "archived"),
            columns=(("Status", _status),),
        ),
        Kind(
            "fallback-offers",
            FALLBACK_OFFER,
            "Fallback offers",
            "fallback offer",
            forms.FallbackOfferForm,
            _offer_data,
            _fallback_body,
            _OFFER_POINTERS,
            (("tags", TAG, True), ("representations.placement", PLACEMENT, False)),
            statuses=("draft", "approved", "archived"),
            columns=(("Status", _status),),
        ),
        Kind(
            "placements",
            PLACEMENT,
            "Placements",
            "placement",
            forms.PlacementForm,
            _placement_data,
            _placement_body,
            (
                *_NAMED_POINTERS,
                (r"^/xdm:channel", "channel"),
                (r"^/xdm:componentType", "componentType"),
            ),
            columns=(("Channel · type", _placement_label),),
        ),
        Kind(
            "collections",
            COLLECTION,
            "Collections",
            "collection",
            forms.CollectionForm,
            _collection_data,
            _collection_body,
            (
                *_NAMED_POINTERS,
                (r"^/xdm:filterType", "filterType"),
                (r"^/xdm:ids", "tags"),
            ),
            (("tags", TAG, True), ("offers", PERSONALIZED_OFFER, True)),
            columns=(("Filter", lambda b: _text(b.get("xdm:filterType"))),),
        ),
        Kind(
            "rules",
            RULE,
            "Decision rules",
            "decision rule",
            forms.RuleForm,
            _rule_data,
            _rule_body,
            (*_NAMED_POINTERS, (r"^/(xdm:)?condition", "condition")),
            columns=(("Condition", _pql_label("condition")),),
        ),
        Kind(
            "decisions",
            DECISION,
            "Decisions",
            "decision",
            forms.DecisionForm,
            _decision_data,
            _decision_body,
            _DECISION_POINTERS,
            (
                ("fallback", FALLBACK_OFFER, False),
                ("criteria.placements", PLACEMENT, False),
                ("criteria.collection", COLLECTION, False),
                ("criteria.rule", RULE, True),
                ("criteria.formula", RANKING_FORMULA, True),
            ),
            statuses=("draft", "live", "archived"),
            columns=(("Status", _status),),
        ),
        Kind(
            "tags",
            TAG,
            "Collection qualifiers",
            "collection qualifier",
            forms.TagForm,
            _named,
            _tag_body,
            _NAMED_POINTERS,
        ),
        Kind(
            "ranking",
            RANKING_FORMULA,
            "Ranking formulas",
            "ranking formula",
            forms.RankingForm,
            _ranking_data,
            _ranking_body,
            (*_NAMED_POINTERS, (r"^/(xdm:)?expression", "expression")),
            columns=(("Formula", _pql_label("expression")),),
        ),
    )
}

BY_TYPE: dict[ObjectType, Kind] = {k.object_type: k for k in KINDS.values()}


def fill_choices(form: Any, kind: Kind, options: Options) -> None:
    """Set the choices of every reference select of ``form`` (repeated rows included)."""
    for path, object_type, optional in kind.references:
        found = [
            SelectChoice(at_id, name or at_id) for at_id, name, _b in options.get(object_type, [])
        ]
        group, _, name = path.partition(".")
        fields = (
            [getattr(entry.form, name) for entry in getattr(form, group).entries]
            if name
            else [getattr(form, group)]
        )
        for select in fields:
            if isinstance(select, SelectMultipleField):
                select.choices = found  # nothing chosen is the empty choice
            else:
                select.choices = [
                    SelectChoice("", "— none —" if optional else "— choose —"),
                    *found,
                ]


def field_for(kind: Kind, pointer: str, rows: Rows) -> str | None:
    """The form field a repository pointer names (``None``: the form as a whole)."""
    for pattern, name in kind.pointers:
        match = re.match(pattern, pointer)
        if match is None:
            continue
        if "{0}" not in name:
            return name
        group = name.partition("-")[0]
        index = int(match.group(1)) if match.groups() and match.group(1) else 0
        kept = rows.get(group, [])
        row = kept[index] if index < len(kept) else index
        return name.format(row)
    return None


def summary(body: Mapping[str, Any]) -> str:
    """A body as indented JSON (the read-only view beside a form)."""
    return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True)

"""The library's object types as the console shows them: a form, the body it writes, and
where the repository's 422 pointers land among the form's fields.

A form edits the members it knows and keeps every other member of the stored body as it
is (an offer's frequency caps, a rule's ``xdm:definedOn``): the console never drops what
the API wrote. The body is validated by the repository, exactly as the API's would be.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wtforms import SelectMultipleField
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # new in 3.3; stubs lag

from nextoffer.console import bodies, decision_bodies, forms, offer_bodies
from nextoffer.errors import NotFound
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RANKING_FORMULA,
    RANKING_STRATEGY,
    RULE,
    TAG,
    ObjectType,
)
from nextoffer.repository.records import InstanceRecord, RevisionRecord

Options = bodies.Options
Rows = bodies.Rows


@dataclass(frozen=True, slots=True)
class Kind:
    slug: str  # the path segment: /console/<slug>
    object_type: ObjectType
    title: str
    noun: str
    form: type[forms.ConsoleForm]
    to_data: Callable[[Mapping[str, Any]], dict[str, Any]]
    to_body: Callable[[Any, dict[str, Any], bodies.Options], tuple[dict[str, Any], bodies.Rows]]
    #: (pointer pattern, field name); ``{0}`` in the name is the form row of group 1.
    pointers: tuple[tuple[str, str], ...]
    #: (form field path, referenced type, may be empty): the selects to fill.
    references: tuple[tuple[str, ObjectType, bool], ...] = ()
    statuses: tuple[str, ...] = ()
    #: Extra list columns: (header, function of the body).
    columns: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = field(default=())

    def check(self, record: InstanceRecord | RevisionRecord) -> None:
        """A 404 unless ``record`` is of this kind: every page under ``/console/<slug>/<id>``
        acts only on an instance of its own kind (a tag's delete button deletes no offer)."""
        if record.schema_id != self.object_type.schema_id:
            raise NotFound(f"{record.instance_id} is not a {self.noun}")


# -- placements and tags -------------------------------------------------------------------


def _placement_data(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **bodies.named(body),
        "channel": body.get("xdm:channel"),
        "componentType": body.get("xdm:componentType"),
    }


def _placement_body(
    form: Any, body: dict[str, Any], _o: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    bodies.put_named(form, body)
    body["xdm:channel"] = form.channel.data
    body["xdm:componentType"] = form.componentType.data
    return body, {}


def _tag_body(
    form: Any, body: dict[str, Any], _o: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    bodies.put_named(form, body)
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
    return {**bodies.named(body), "condition": _pql_text(body, "condition")}


def _rule_body(
    form: Any, body: dict[str, Any], _o: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    bodies.put_named(form, body)
    _put_pql(body, "condition", form.condition.data or "")
    return body, {}


def _ranking_data(body: Mapping[str, Any]) -> dict[str, Any]:
    return {**bodies.named(body), "expression": _pql_text(body, "expression")}


def _ranking_body(
    form: Any, body: dict[str, Any], _o: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    bodies.put_named(form, body)
    _put_pql(body, "expression", form.expression.data or "")
    return body, {}


# -- ranking strategies -----------------------------------------------------------------


def _strategy_data(body: Mapping[str, Any]) -> dict[str, Any]:
    features = body.get("xdm:features")
    rate = body.get("xdm:explorationRate")
    return {
        **bodies.named(body),
        "strategyType": body.get("xdm:strategyType", "auto-optimization"),
        "optimizationGoal": body.get("xdm:optimizationGoal", "clicks"),
        "features": "\n".join(str(f) for f in features) if isinstance(features, list) else "",
        "explorationRate": f"{rate:g}" if isinstance(rate, int | float) else "",
    }


def _rate(text: str) -> Any:
    """The rate as a number when it reads as a finite one; otherwise the text, for the
    repository's 422 ("… is not of type 'number'") beside the field."""
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _strategy_body(
    form: Any, body: dict[str, Any], _o: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    bodies.put_named(form, body)
    body["xdm:strategyType"] = form.strategyType.data
    bodies.put(body, "xdm:optimizationGoal", (form.optimizationGoal.data or "").strip() or None)
    lines = [line.strip() for line in (form.features.data or "").splitlines()]
    bodies.put(body, "xdm:features", [line for line in lines if line])
    rate = (form.explorationRate.data or "").strip()
    bodies.put(body, "xdm:explorationRate", _rate(rate) if rate else None)
    return body, {}


# -- collections ------------------------------------------------------------------------


def _collection_data(body: Mapping[str, Any]) -> dict[str, Any]:
    filter_type = body.get("xdm:filterType", "anyTags")
    ids = [i for i in body.get("xdm:ids") or body.get("ids") or [] if isinstance(i, str)]
    return {
        **bodies.named(body),
        "filterType": filter_type,
        "tags": ids if filter_type != "offers" else [],
        "offers": ids if filter_type == "offers" else [],
    }


def _collection_body(
    form: Any, body: dict[str, Any], _o: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    bodies.put_named(form, body)
    body["xdm:filterType"] = form.filterType.data
    chosen = list(form.offers.data if form.filterType.data == "offers" else form.tags.data)
    # The stored member and order stay (a select sends its choices in its own order, by
    # name); the ids chosen anew follow.
    key = "ids" if "ids" in body and "xdm:ids" not in body else "xdm:ids"
    stored = [i for i in body.get(key) or [] if i in chosen]
    body[key] = [*stored, *(i for i in chosen if i not in stored)]
    return body, {}


# -- offers -----------------------------------------------------------------------------


def _status(body: Mapping[str, Any]) -> str:
    return bodies.text(body.get("xdm:status"))


def _placement_label(body: Mapping[str, Any]) -> str:
    component = bodies.text(body.get("xdm:componentType")).rpartition("-")[2]
    channel = bodies.text(body.get("xdm:channel")).rpartition("/")[2]
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
            offer_bodies.offer_data,
            offer_bodies.offer_body,
            offer_bodies.POINTERS,
            (
                ("tags", TAG, True),
                ("rule", RULE, True),
                ("representations.placement", PLACEMENT, False),
            ),
            statuses=tuple(c.value for c in forms.OFFER_STATUSES),
            columns=(("Status", _status),),
        ),
        Kind(
            "fallback-offers",
            FALLBACK_OFFER,
            "Fallback offers",
            "fallback offer",
            forms.FallbackOfferForm,
            offer_bodies.offer_data,
            offer_bodies.fallback_body,
            offer_bodies.POINTERS,
            (("tags", TAG, True), ("representations.placement", PLACEMENT, False)),
            statuses=tuple(c.value for c in forms.OFFER_STATUSES),
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
                *bodies.NAMED_POINTERS,
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
                *bodies.NAMED_POINTERS,
                (r"^/xdm:filterType", "filterType"),
                (r"^/xdm:ids", "tags"),
            ),
            (("tags", TAG, True), ("offers", PERSONALIZED_OFFER, True)),
            columns=(("Filter", lambda b: bodies.text(b.get("xdm:filterType"))),),
        ),
        Kind(
            "rules",
            RULE,
            "Decision rules",
            "decision rule",
            forms.RuleForm,
            _rule_data,
            _rule_body,
            (*bodies.NAMED_POINTERS, (r"^/(xdm:)?condition", "condition")),
            columns=(("Condition", _pql_label("condition")),),
        ),
        Kind(
            "decisions",
            DECISION,
            "Decisions",
            "decision",
            forms.DecisionForm,
            decision_bodies.decision_data,
            decision_bodies.decision_body,
            decision_bodies.POINTERS,
            (
                ("fallback", FALLBACK_OFFER, False),
                ("criteria.placements", PLACEMENT, False),
                ("criteria.collection", COLLECTION, False),
                ("criteria.rule", RULE, True),
                ("criteria.formula", RANKING_FORMULA, True),
                # The same select: a criterion ranks by a formula or by a strategy.
                ("criteria.formula", RANKING_STRATEGY, True),
            ),
            statuses=tuple(c.value for c in forms.DECISION_STATUSES),
            columns=(("Status", _status),),
        ),
        Kind(
            "tags",
            TAG,
            "Collection qualifiers",
            "collection qualifier",
            forms.TagForm,
            bodies.named,
            _tag_body,
            bodies.NAMED_POINTERS,
        ),
        Kind(
            "ranking",
            RANKING_FORMULA,
            "Ranking formulas",
            "ranking formula",
            forms.RankingForm,
            _ranking_data,
            _ranking_body,
            (*bodies.NAMED_POINTERS, (r"^/(xdm:)?expression", "expression")),
            columns=(("Formula", _pql_label("expression")),),
        ),
        Kind(
            "ranking-strategies",
            RANKING_STRATEGY,
            "Ranking strategies",
            "ranking strategy",
            forms.RankingStrategyForm,
            _strategy_data,
            _strategy_body,
            (
                *bodies.NAMED_POINTERS,
                (r"^/xdm:strategyType", "strategyType"),
                (r"^/xdm:optimizationGoal", "optimizationGoal"),
                (r"^/xdm:features", "features"),
                (r"^/xdm:explorationRate", "explorationRate"),
            ),
            columns=(("Strategy", lambda b: bodies.text(b.get("xdm:strategyType"))),),
        ),
    )
}

BY_TYPE: dict[ObjectType, Kind] = {k.object_type: k for k in KINDS.values()}
#: By the schema an instance record names (a 409's ``referencedBy`` gives it).
BY_SCHEMA: dict[str, Kind] = {k.object_type.schema_id: k for k in KINDS.values()}


def fill_choices(form: Any, kind: Kind, options: bodies.Options) -> None:
    """Set the choices of every reference select of ``form`` (repeated rows included).

    A select named by several references offers them all, each after the first labelled
    with its type (a criterion's ranking: formulas, then strategies)."""
    filled: set[str] = set()
    for path, object_type, optional in kind.references:
        prefix = f"{object_type.label}: " if path in filled else ""
        found = [
            SelectChoice(at_id, prefix + label)
            for at_id, label in _labels(options.get(object_type, []))
        ]
        group, _, name = path.partition(".")
        fields = (
            [getattr(entry.form, name) for entry in getattr(form, group).entries]
            if name
            else [getattr(form, group)]
        )
        for select in fields:
            if path in filled:
                select.choices = [*select.choices, *found]
            elif isinstance(select, SelectMultipleField):
                select.choices = found  # nothing chosen is the empty choice
            else:
                select.choices = [
                    SelectChoice("", "— none —" if optional else "— choose —"),
                    *found,
                ]
        filled.add(path)
    keep_stored(form)


def _labels(found: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """``(@id, label)``: the name, with the ``@id`` after it where two share one (the API
    allows it: two tags named "Summer" were two identical choices), the ``@id`` alone for
    a name of spaces only."""
    names = [name if name and name.strip() else at_id for at_id, name, _b in found]
    shared = {n for n, count in Counter(names).items() if count > 1}
    return [
        (at_id, f"{name} ({at_id})" if name in shared else name)
        for (at_id, _n, _b), name in zip(found, names, strict=True)
    ]


def keep_stored(form: Any) -> None:
    """Offer every value the object holds among its select's choices.

    A browser sends a select's first option when the stored value is not among them: a
    channel the console does not list, or a reference past the first
    :data:`web.MAX_OPTIONS <nextoffer.console.web.MAX_OPTIONS>` by name, was replaced
    on the next save without anyone choosing it. Such a value is offered as it is."""
    for field_ in all_fields(form):
        if field_.type not in ("SelectField", "SelectMultipleField"):
            continue
        choices = list(field_.choices or [])
        offered = {c.value if isinstance(c, SelectChoice) else c[0] for c in choices}
        data = field_.data
        held = data if isinstance(data, list) else [data]
        missing = [v for v in held if isinstance(v, str) and v and v not in offered]
        if missing:
            field_.choices = [*choices, *(SelectChoice(v, v) for v in missing)]


def all_fields(form: Any) -> list[Any]:
    """Every field of ``form``, each row's fields of a repeated group included."""
    out: list[Any] = []
    for field_ in form:
        if field_.type == "FieldList":
            out.extend(sub for entry in field_.entries for sub in entry.form)
        else:
            out.append(field_)
    return out


def field_for(kind: Kind, pointer: str, rows: bodies.Rows) -> str | None:
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

"""Decisions as forms: status, dates, the fallback, and evaluation criteria (placements,
a collection, an eligibility rule, a ranking formula or an AI ranking strategy).

A criterion's "Ranking" select offers both formulas and strategies: the chosen ``@id``'s
type (``xcore:ranking-strategy:…``) says which order the criterion gets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nextoffer.console import bodies
from nextoffer.repository.objects import RANKING_STRATEGY

_STRATEGY_ID = f":{RANKING_STRATEGY.name}:"


def _criterion_data(criterion: Mapping[str, Any]) -> dict[str, Any]:
    selection = criterion.get("xdm:optionSelection") or {}
    constraints = criterion.get("xdm:profileConstraints") or {}
    order = (criterion.get("xdm:ranking") or {}).get("xdm:order") or {}
    return {
        "placements": list(criterion.get("xdm:placements") or []),
        "collection": selection.get("xdm:filter", ""),
        "rule": constraints.get("xdm:eligibilityRule", ""),
        "formula": order.get("xdm:function") or order.get("xdm:rankingStrategy") or "",
        "priority": (criterion.get("xdm:ranking") or {}).get("xdm:priority"),
    }


def decision_data(body: Mapping[str, Any]) -> dict[str, Any]:
    criteria = [c for c in body.get("xdm:criteria") or [] if isinstance(c, Mapping)]
    return {
        **bodies.named(body),
        "status": body.get("xdm:status", "draft"),
        "startDate": bodies.date_in(body.get("xdm:startDate")),
        "endDate": bodies.date_in(body.get("xdm:endDate")),
        "fallback": body.get("xdm:fallback", ""),
        "criteria": [_criterion_data(c) for c in criteria] + [{}],
    }


def _order_type(ranking: Mapping[str, Any]) -> Any:
    order = ranking.get("xdm:order")
    return order.get("xdm:orderEvaluationType") if isinstance(order, Mapping) else None


def decision_body(
    form: Any, body: dict[str, Any], _o: bodies.Options
) -> tuple[dict[str, Any], bodies.Rows]:
    bodies.put_named(form, body)
    body["xdm:status"] = form.status.data
    for name in ("startDate", "endDate"):
        key = f"xdm:{name}"
        bodies.put(body, key, bodies.date_out(getattr(form, name).data, body.get(key)))
    bodies.put(body, "xdm:fallback", form.fallback.data or None)
    old = [c for c in body.get("xdm:criteria") or [] if isinstance(c, Mapping)]
    written: list[dict[str, Any]] = []
    rows: list[int] = []
    for index, entry in enumerate(form.criteria.entries):
        sub = entry.form
        if sub.remove.data or (not sub.placements.data and not sub.collection.data):
            continue  # removed, or the blank row for a new criterion
        criterion: dict[str, Any] = dict(old[index]) if index < len(old) else {}
        criterion["xdm:placements"] = list(sub.placements.data or [])
        selection = dict(criterion.get("xdm:optionSelection") or {})
        bodies.put(selection, "xdm:filter", sub.collection.data or None)
        criterion["xdm:optionSelection"] = selection
        constraints = dict(criterion.get("xdm:profileConstraints") or {})
        if sub.rule.data:
            constraints["xdm:profileConstraintType"] = "eligibilityRule"
            constraints["xdm:eligibilityRule"] = sub.rule.data
        else:
            constraints.pop("xdm:eligibilityRule", None)
            if constraints.get("xdm:profileConstraintType") == "eligibilityRule":
                constraints["xdm:profileConstraintType"] = "none"
        # Nothing chosen and nothing stored: nothing written (a save of an unchanged form
        # changes nothing the API wrote).
        bodies.put(criterion, "xdm:profileConstraints", constraints or None)
        ranking = dict(criterion.get("xdm:ranking") or {})
        if sub.formula.data and _STRATEGY_ID in sub.formula.data:
            ranking["xdm:order"] = {
                "xdm:orderEvaluationType": "rankingStrategy",
                "xdm:rankingStrategy": sub.formula.data,
            }
        elif sub.formula.data:
            ranking["xdm:order"] = {
                "xdm:orderEvaluationType": "scoringFunction",
                "xdm:function": sub.formula.data,
            }
        elif _order_type(ranking) not in (None, "static"):  # a formula or strategy removed
            ranking["xdm:order"] = {"xdm:orderEvaluationType": "static"}
        # The group: without it a criterion ranked by a strategy and one by a formula
        # could not be in one decision (the API's group rule), whatever the marketer chose.
        bodies.put(ranking, "xdm:priority", sub.priority.data)
        bodies.put(criterion, "xdm:ranking", ranking or None)
        written.append(criterion)
        rows.append(index)
    body["xdm:criteria"] = written
    return body, {"criteria": rows}


POINTERS = (
    *bodies.NAMED_POINTERS,
    (r"^/xdm:status", "status"),
    (r"^/xdm:startDate", "startDate"),
    (r"^/xdm:endDate", "endDate"),
    (r"^/xdm:fallback", "fallback"),
    (r"^/xdm:criteria/(\d+)/xdm:placements", "criteria-{0}-placements"),
    (r"^/xdm:criteria/(\d+)/xdm:optionSelection", "criteria-{0}-collection"),
    (r"^/xdm:criteria/(\d+)/xdm:profileConstraints", "criteria-{0}-rule"),
    (r"^/xdm:criteria/(\d+)/xdm:ranking/xdm:priority", "criteria-{0}-priority"),
    (r"^/xdm:criteria/(\d+)/xdm:ranking", "criteria-{0}-formula"),
    (r"^/xdm:criteria$", "criteria-0-placements"),
)

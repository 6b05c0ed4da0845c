"""Ranking strategies (AI models, decisioning-api.md §4.4): the checks a save makes.

The JSON Schema (``schemas/ranking-strategy.schema.json``) checks shapes; this module the
rules between members, each a 422 naming the member:

* ``xdm:features`` and ``xdm:explorationRate`` belong to ``personalized-optimization``;
* each feature is a PQL feature path (:func:`nextoffer.pql.feature`);
* in a decision, all criteria of one ``xdm:ranking.xdm:priority`` group that use a
  strategy use the same one, every criterion of that group uses it, and only one group
  uses a strategy (Adobe's rule for AI models).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nextoffer import pql
from nextoffer.errors import PQLError, Unprocessable

AUTO = "auto-optimization"
PERSONALIZED = "personalized-optimization"
#: ``xdm:orderEvaluationType`` values that mean "ranked by a strategy" (the dps API
#: writes the second).
BY_STRATEGY = frozenset({"rankingStrategy", "ranking-strategy"})


def check(body: Mapping[str, Any], *, prefix: str = "") -> None:
    """Raise :class:`Unprocessable` (or :class:`PQLError`) for an inconsistent strategy."""
    kind = body.get("xdm:strategyType")
    if kind == AUTO:
        for member in ("xdm:features", "xdm:explorationRate"):
            if member in body:
                raise Unprocessable(
                    f"{member} applies to personalized-optimization only; an "
                    "auto-optimization strategy ranks every profile alike",
                    pointer=f"{prefix}/{member}",
                )
    if body.get("xdm:optimizationGoal") == "decisioning.propositionDisplay":
        raise Unprocessable(
            "xdm:optimizationGoal cannot be decisioning.propositionDisplay: that event is "
            "the impression, so every impression would be a success and the strategy would "
            "learn nothing",
            pointer=f"{prefix}/xdm:optimizationGoal",
        )
    for index, source in enumerate(body.get("xdm:features") or []):
        where = f"{prefix}/xdm:features/{index}"
        try:
            pql.feature(source)
        except PQLError as exc:
            raise PQLError(
                exc.message, line=exc.line, column=exc.column, source=source, pointer=where
            ) from exc


def check_decision(body: Mapping[str, Any], *, prefix: str = "") -> None:
    """Adobe's rule for criteria that rank with a strategy, on a decision's body."""
    criteria = body.get("xdm:criteria")
    if not isinstance(criteria, list):
        return
    groups: dict[int, list[tuple[int, str | None]]] = {}
    for index, criterion in enumerate(criteria):
        if not isinstance(criterion, Mapping):
            continue
        ranking = criterion.get("xdm:ranking")
        ranking = ranking if isinstance(ranking, Mapping) else {}
        order = ranking.get("xdm:order")
        order = order if isinstance(order, Mapping) else {}
        priority = ranking.get("xdm:priority", 0)
        strategy: str | None = None
        if order.get("xdm:orderEvaluationType") in BY_STRATEGY:
            named = order.get("xdm:rankingStrategy")
            if not isinstance(named, str):
                raise Unprocessable(
                    "a criterion ranked by rankingStrategy names its strategy in "
                    "xdm:rankingStrategy",
                    pointer=f"{prefix}/xdm:criteria/{index}/xdm:ranking/xdm:order",
                )
            strategy = named
        groups.setdefault(priority if isinstance(priority, int) else 0, []).append(
            (index, strategy)
        )
    using = [p for p, members in groups.items() if any(s for _, s in members)]
    if len(using) > 1:
        first, second = sorted(using, reverse=True)[:2]
        index = next(i for i, s in groups[second] if s)
        raise Unprocessable(
            f"only one criteria group may rank with a strategy; groups of priority {first} "
            f"and {second} both do",
            pointer=f"{prefix}/xdm:criteria/{index}/xdm:ranking/xdm:order",
        )
    for priority in using:
        members = groups[priority]
        named = next(s for _, s in members if s)
        for index, strategy in members:
            if strategy != named:
                what = strategy or "no strategy"
                raise Unprocessable(
                    f"all criteria of a group that ranks with a strategy use the same one: "
                    f"criterion {index} (priority {priority}) uses {what}, another uses {named}",
                    pointer=f"{prefix}/xdm:criteria/{index}/xdm:ranking/xdm:order",
                )

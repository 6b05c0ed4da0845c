"""Ranking: priority or formula values, ties broken uniformly at random.

Candidates arrive sorted by (rank value descending, ``@id``). Equal values form a *tier*;
when a tier holds more eligible offers than still needed, the winners are drawn with
``rng.sample`` — every subset equally likely, in a uniformly random order (decisioning-api.md
§4.2: "one is chosen at uniform random"). Because the tier is in ``@id`` order before the
draw, the outcome for a given ``rng`` state does not depend on the library's order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nextoffer.engine.eligibility import Evaluation, Failure, failure_message, is_failure
from nextoffer.engine.explain import Reason
from nextoffer.engine.model import Criterion, Offer, Rule


@dataclass(slots=True)
class Ranked:
    """An eligible candidate with the value it is ranked by."""

    offer: Offer
    criterion: Criterion
    #: The ranking value: the formula score, or the offer priority.
    value: float
    #: The formula score (``xdm:score``); ``None`` when priority ranked the offer.
    score: float | None = None
    #: Ranked by a strategy: the model's estimate (``value`` is the posterior draw).
    estimate: float | None = None


def score(evaluation: Evaluation, formula: Rule, offer: Offer) -> float | Failure:
    """The formula's value for ``offer`` as a float, or a ``FORMULA_ERROR`` failure."""
    value: Any = evaluation.value(formula, offer)
    if is_failure(value):
        return Failure(Reason.FORMULA_ERROR, failure_message(value), formula.at_id)
    if isinstance(value, bool | int | float):
        # PQL's integers are unbounded: a product of large ones does not fit a float
        # (``float`` raises). An infinite score would also win every decision, and JSON
        # has no infinity: neither ranks.
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
        detail = (
            "the formula returned NaN, not a number"
            if math.isnan(number)
            else "the formula's value is too large to rank by (beyond ±1.8e308)"
        )
        return Failure(Reason.FORMULA_ERROR, detail, formula.at_id)
    return Failure(
        Reason.FORMULA_ERROR, f"the formula returned {_kind(value)}, not a number", formula.at_id
    )


def _kind(value: Any) -> str:
    """What a formula returned, in the words of JSON (a marketer reads it in the trace)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a " + type(value).__name__


def draw(tier: Sequence[Ranked], need: int, rng: random.Random) -> list[Ranked]:
    """Up to ``need`` members of one tier of equal value, uniformly at random, in random order.

    A partial Fisher-Yates shuffle driven by ``rng.random()`` (one call per pick; several
    times cheaper than ``rng.sample``). ``int(random() * m)`` is uniform up to float
    granularity (bias below m / 2**53).
    """
    size = len(tier)
    if size == 1:
        return [tier[0]] if need > 0 else []
    pool = list(tier)
    random_ = rng.random
    picks = min(need, size)
    for i in range(picks):
        j = i + int(random_() * (size - i))
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:picks]


def sort_ranked(entries: list[Ranked]) -> list[Ranked]:
    """Highest value first; equal values by ``@id`` (the draw then randomises them)."""
    entries.sort(key=lambda entry: (-entry.value, entry.offer.at_id))
    return entries

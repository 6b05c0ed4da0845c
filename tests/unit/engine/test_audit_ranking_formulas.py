"""Ranking formulas whose value cannot rank (audit of ranking, helper-59): they make the
offer ineligible with a ``formulaError`` that says why; they never fail the decision."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from nextoffer import pql
from nextoffer.engine import CapCounters, DecisionRequest, PropositionRequest, Reason, decide
from nextoffer.engine.build import build_catalog
from unit.engine.engine_library import (
    collection,
    criterion,
    decision,
    fallback,
    formula,
    offer,
    placement,
)

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
#: 2**63 - 1 multiplied by itself 18 times: about 10**341, an integer no float holds.
HUGE = " * ".join(["9223372036854775807"] * 18)


def _decide(source: str, *, explain: bool) -> object:
    catalog = build_catalog(
        [
            placement("P1"),
            fallback("F1"),
            offer("a", priority=1),
            offer("b", priority=2),
            collection("C1", ["a", "b"]),
            formula("RF", source),
            decision("D1", [criterion("C1", formula_id="RF")]),
        ],
        compile_rule=pql.compile,
    )
    request = DecisionRequest(
        propositions=(PropositionRequest("D1", "P1", 2),), profile={}, explain=explain
    )
    result = decide(catalog, request, counters=CapCounters(), now=NOW, rng=random.Random(0))
    (proposition,) = result.propositions
    return proposition


@pytest.mark.parametrize("explain", [False, True])
def test_a_formula_whose_integer_overflows_a_float_is_a_formula_error(explain: bool) -> None:
    proposition = _decide(f"(if(offer.rank.priority = 2, {HUGE}, 1))", explain=explain)
    assert [o.offer_id for o in proposition.options] == ["a"]  # type: ignore[attr-defined]
    if explain:
        traced = {t.offer_id: t for t in proposition.trace.candidates}  # type: ignore[attr-defined]
        assert traced["b"].reason is Reason.FORMULA_ERROR
        assert "too large" in (traced["b"].detail or "")
        assert traced["a"].reason is Reason.SELECTED and traced["a"].score == 1.0


def test_a_formula_that_gives_no_number_says_null_in_json_words() -> None:
    proposition = _decide("profile.missing.field + 1", explain=True)
    details = {t.detail for t in proposition.trace.candidates}  # type: ignore[attr-defined]
    assert details == {"the formula returned null, not a number"}

"""decide(): explain traces, rule failures, caching, purity, fallbacks."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from nextoffer.engine import (
    CapCounters,
    DecisionRequest,
    PropositionRequest,
    Reason,
    decide,
)
from nextoffer.engine.catalog import Catalog
from nextoffer.errors import NotFound, Unprocessable
from unit.engine import engine_fakepql
from unit.engine.engine_library import (
    build,
    collection,
    criterion,
    decision,
    fallback,
    formula,
    offer,
    placement,
    rule,
    simple_library,
)

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def ask(
    catalog: Catalog,
    *wanted: tuple[str, str, int],
    profile: dict[str, object] | None = None,
    explain: bool = True,
    counters: CapCounters | None = None,
    seed: int = 0,
    duplicates: bool = False,
) -> list[object]:
    request = DecisionRequest(
        propositions=tuple(PropositionRequest(a, p, n) for a, p, n in wanted)
        or (PropositionRequest("D1", "P1", 3),),
        allow_duplicates_across_activities=duplicates,
        allow_duplicates_across_placements=duplicates,
        profile=profile or {},
        explain=explain,
    )
    result = decide(
        catalog, request, counters=counters or CapCounters(), now=NOW, rng=random.Random(seed)
    )
    return list(result.propositions)


def test_a_rule_that_fails_at_run_time_disqualifies_only_that_offer() -> None:
    catalog = build(
        simple_library(
            offer("broken", priority=9, rule="R-raise"),
            offer("fine", priority=1),
            extra=[rule("R-raise", "raise")],
        )
    )
    (proposition,) = ask(catalog)
    assert [o.offer_id for o in proposition.options] == ["fine"]
    traced = {t.offer_id: t for t in proposition.trace.candidates}
    assert traced["broken"].reason is Reason.RULE_ERROR
    assert traced["broken"].rule_id == "R-raise"
    assert "boom" in traced["broken"].detail


def test_explain_names_the_false_part_of_a_conjunction() -> None:
    catalog = build(
        simple_library(
            offer("gold", rule="R"),
            extra=[rule("R", 'age >= 18 and tier = "gold" and country = "US"')],
        )
    )
    (proposition,) = ask(catalog, profile={"age": 30, "tier": "silver", "country": "US"})
    (trace,) = proposition.trace.candidates
    assert trace.reason is Reason.RULE_FALSE
    assert trace.detail == 'tier = "gold"'


def test_cap_trace_carries_counter_and_limit() -> None:
    catalog = build(simple_library(offer("o", global_cap=10)))
    (proposition,) = ask(catalog, counters=CapCounters(global_counts={"o": 12}))
    (trace,) = proposition.trace.candidates
    assert (trace.reason, trace.counter, trace.limit) == (Reason.GLOBAL_CAP_REACHED, 12, 10)
    assert proposition.trace.fallback_reason is Reason.NO_ELIGIBLE_OPTION
    assert proposition.fallback.offer_id == "F1"


def test_no_trace_without_explain_and_the_same_options_with_it() -> None:
    catalog = build(simple_library(*(offer(f"o{i}", priority=i % 3) for i in range(12))))
    for seed in range(20):
        plain = ask(catalog, ("D1", "P1", 4), explain=False, seed=seed)[0]
        explained = ask(catalog, ("D1", "P1", 4), explain=True, seed=seed)[0]
        assert plain.trace is None
        assert plain.options == explained.options
        assert len(explained.trace.candidates) == 12


def test_without_explain_lower_priority_tiers_are_not_evaluated() -> None:
    catalog = build(
        simple_library(
            *(offer(f"o{i}", priority=100 - i, rule=f"R{i}") for i in range(50)),
            extra=[rule(f"R{i}", f"n = {i}") for i in range(50)],
        )
    )
    engine_fakepql.FakeRule.evaluations = 0
    ask(catalog, ("D1", "P1", 1), profile={"n": 2}, explain=False)
    assert engine_fakepql.FakeRule.evaluations == 3  # o0, o1 false; o2 true; stop


def test_a_rule_shared_by_many_offers_is_evaluated_once_per_request() -> None:
    catalog = build(
        simple_library(
            *(offer(f"o{i}", rule="shared") for i in range(20)),
            extra=[rule("shared", "n = 1")],
        )
    )
    engine_fakepql.FakeRule.evaluations = 0
    ask(catalog, ("D1", "P1", 30), profile={"n": 1}, explain=False)
    assert engine_fakepql.FakeRule.evaluations == 1


def _sharing_library() -> Catalog:
    """20 offers whose rules all need ``tier = "gold"``; each also needs its own ``n``."""
    return build(
        simple_library(
            *(offer(f"o{i}", priority=i, rule=f"R{i}") for i in range(20)),
            extra=[rule(f"R{i}", f'tier = "gold" and n = {i}') for i in range(20)],
        )
    )


def test_a_condition_every_candidate_needs_is_tested_once_and_skips_the_walk() -> None:
    catalog = _sharing_library()
    engine_fakepql.FakeRule.evaluations = 0
    (proposition,) = ask(catalog, profile={"tier": "silver", "n": 5}, explain=False)
    assert engine_fakepql.FakeRule.evaluations == 1  # the shared part, not 20 rules
    assert proposition.options == ()
    assert proposition.fallback.offer_id == "F1"


def test_when_the_shared_condition_holds_the_candidates_are_still_judged_one_by_one() -> None:
    catalog = _sharing_library()
    (proposition,) = ask(catalog, ("D1", "P1", 3), profile={"tier": "gold", "n": 5}, explain=False)
    assert [o.offer_id for o in proposition.options] == ["o5"]


def test_explain_walks_every_candidate_even_when_a_shared_condition_is_false() -> None:
    catalog = _sharing_library()
    (proposition,) = ask(catalog, profile={"tier": "silver", "n": 5}, explain=True)
    traces = proposition.trace.candidates
    assert len(traces) == 20
    assert {t.reason for t in traces} == {Reason.RULE_FALSE}
    assert {t.detail for t in traces} == {'tier = "gold"'}


def test_an_offer_without_a_rule_keeps_the_pool_walked() -> None:
    catalog = build(
        simple_library(
            offer("ruled", priority=2, rule="R"),
            offer("open", priority=1),
            extra=[rule("R", 'tier = "gold" and n = 1')],
        )
    )
    (proposition,) = ask(catalog, profile={"tier": "silver"}, explain=False)
    assert [o.offer_id for o in proposition.options] == ["open"]


def test_a_rule_reading_offer_is_evaluated_per_candidate_with_the_offer_bound() -> None:
    catalog = build(
        [
            placement("P1"),
            fallback("F1"),
            offer("a", characteristics={"kind": "x"}),
            offer("b", characteristics={"kind": "y"}),
            collection("C1", ["a", "b"]),
            rule("R", 'offer.characteristics.kind = "x"'),
            decision(
                "D1",
                [
                    criterion(
                        "C1",
                        constraint={
                            "xdm:profileConstraintType": "eligibilityRule",
                            "xdm:eligibilityRule": "R",
                        },
                    )
                ],
            ),
        ]
    )
    (proposition,) = ask(catalog)
    assert [o.offer_id for o in proposition.options] == ["a"]
    traced = {t.offer_id: t.reason for t in proposition.trace.candidates}
    assert traced["b"] is Reason.CONSTRAINT_FALSE


def test_formula_failure_removes_the_offer_with_a_reason() -> None:
    catalog = build(
        [
            placement("P1"),
            fallback("F1"),
            offer("scored", priority=2),
            collection("C1", ["scored"]),
            formula("RF", "missing.path"),
            decision("D1", [criterion("C1", formula_id="RF")]),
        ]
    )
    (proposition,) = ask(catalog)
    assert proposition.options == ()
    (trace,) = proposition.trace.candidates
    assert trace.reason is Reason.FORMULA_ERROR


def test_options_carry_the_representation_and_metadata_for_the_placement() -> None:
    catalog = build(
        simple_library(offer("o", priority=4, placements=("P2", "P1"), characteristics={"k": "v"}))
    )
    (proposition,) = ask(catalog)
    (option,) = proposition.options
    assert option.representation["xdm:placement"] == "P1"
    assert option.components[0]["xdm:content"] == "P1"
    assert (option.name, option.characteristics, option.priority, option.etag) == (
        "name of o",
        {"k": "v"},
        4,
        1,
    )
    assert option.score is None
    assert (proposition.activity.at_id, proposition.placement.at_id) == ("D1", "P1")


def test_proposed_lists_options_then_fallbacks_in_request_order() -> None:
    catalog = build(simple_library(offer("o")))
    request = DecisionRequest(
        propositions=(PropositionRequest("D1", "P1", 1), PropositionRequest("D1", "P1", 1))
    )
    result = decide(catalog, request, counters=CapCounters(), now=NOW, rng=random.Random(1))
    assert [(p.offer_id, p.fallback) for p in result.proposed] == [("o", False), ("F1", True)]


def test_a_missing_fallback_yields_neither_options_nor_fallback() -> None:
    catalog = build([placement("P1"), collection("C1", []), decision("D1", [criterion("C1")])])
    (proposition,) = ask(catalog)
    assert proposition.options == ()
    assert proposition.fallback is None
    assert proposition.trace.fallback_reason is Reason.FALLBACK_MISSING


def test_decide_does_not_touch_the_counters_it_is_given() -> None:
    catalog = build(simple_library(offer("o", profile_cap=5)))
    counts = {"o": 4}
    counters = CapCounters(profile_counts=counts)
    first = ask(catalog, counters=counters)
    second = ask(catalog, counters=counters)
    assert counts == {"o": 4}
    assert first[0].options == second[0].options
    assert [o.offer_id for o in first[0].options] == ["o"]


def test_naive_now_is_taken_as_utc() -> None:
    catalog = build(simple_library(offer("o", start="2024-06-01T12:00:00Z")))
    request = DecisionRequest(propositions=(PropositionRequest("D1", "P1", 1),))
    naive = datetime(2024, 6, 1, 12)
    result = decide(catalog, request, counters=CapCounters(), now=naive, rng=random.Random(0))
    assert result.propositions[0].options[0].offer_id == "o"


@pytest.mark.parametrize(
    ("wanted", "error", "pointer"),
    [
        ((), Unprocessable, "/xdm:propositionRequests"),
        ((("D1", "P1", 1),) * 31, Unprocessable, "/xdm:propositionRequests"),
        ((("D1", "P1", 0),), Unprocessable, "/xdm:propositionRequests/0/xdm:itemCount"),
        ((("D1", "P1", True),), Unprocessable, "/xdm:propositionRequests/0/xdm:itemCount"),
        ((("D1", "P1", 1), ("DX", "P1", 1)), NotFound, "/xdm:propositionRequests/1/xdm:activityId"),
        ((("D1", "PX", 1),), NotFound, "/xdm:propositionRequests/0/xdm:placementId"),
        ((("D1", "P2", 1),), Unprocessable, "/xdm:propositionRequests/0/xdm:placementId"),
        ((("D-draft", "P1", 1),), Unprocessable, "/xdm:propositionRequests/0/xdm:activityId"),
    ],
)
def test_request_errors_point_at_the_offending_field(
    wanted: tuple[tuple[str, str, int], ...], error: type[Exception], pointer: str
) -> None:
    catalog = build(
        [
            placement("P1"),
            placement("P2"),
            fallback("F1", ["P1", "P2"]),
            collection("C1", []),
            decision("D1", [criterion("C1", placements=["P1"])]),
            decision("D-draft", [criterion("C1")], status="draft"),
        ]
    )
    request = DecisionRequest(propositions=tuple(PropositionRequest(*w) for w in wanted))
    with pytest.raises(error) as caught:
        decide(catalog, request, counters=CapCounters(), now=NOW, rng=random.Random(0))
    assert caught.value.pointer == pointer

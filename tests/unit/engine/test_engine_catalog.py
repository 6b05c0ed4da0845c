"""build_catalog: indexing, status/representation filtering, and structured errors."""

from __future__ import annotations

from nextoffer.engine import CatalogErrorKind, build_catalog
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


def test_candidates_are_approved_offers_with_a_representation_sorted_by_priority() -> None:
    catalog = build(
        simple_library(
            offer("low", priority=1),
            offer("high", priority=9),
            offer("draft", priority=50, status="draft"),
            offer("elsewhere", priority=60, placements=("P2",)),
            offer("tie-b", priority=5),
            offer("tie-a", priority=5),
        )
    )
    assert [o.at_id for o in catalog.candidates("D1", "P1")] == [
        "high",
        "tie-a",
        "tie-b",
        "low",
    ]
    assert catalog.candidates("D1", "P2") == (catalog.offers["elsewhere"],)
    assert catalog.candidates("no-such-decision", "P1") == ()
    assert catalog.errors == ()


def test_tag_collections_resolve_through_the_tag_index() -> None:
    catalog = build(
        [
            placement("P1"),
            fallback("F1"),
            offer("ab", tags=["a", "b"]),
            offer("a", tags=["a"]),
            offer("none"),
            collection("any", ["a", "b"], "anyTags"),
            collection("all", ["a", "b"], "allTags"),
            collection("empty-all", [], "allTags"),
            decision("D-any", [criterion("any")]),
            decision("D-all", [criterion("all")]),
            decision("D-empty", [criterion("empty-all")]),
        ]
    )
    assert {o.at_id for o in catalog.candidates("D-any", "P1")} == {"ab", "a"}
    assert [o.at_id for o in catalog.candidates("D-all", "P1")] == ["ab"]
    assert catalog.candidates("D-empty", "P1") == ()


def test_an_invalid_rule_is_reported_with_position_and_dependents_not_raised() -> None:
    catalog = build(
        simple_library(
            offer("ruled", rule="R-bad"),
            offer("fine"),
            extra=[rule("R-bad", "age >= 18 and ???")],
        )
    )
    (error,) = catalog.errors
    assert error.kind is CatalogErrorKind.INVALID_RULE
    assert error.at_id == "R-bad"
    assert error.instance_id == "inst-R-bad"
    assert (error.line, error.column) == (1, 14)  # as the compiler reported it
    assert error.dependents == ("ruled",)
    assert error.activities == ("D1",)
    assert catalog.offers["ruled"].problem is not None
    assert catalog.offers["fine"].problem is None


def test_unprefixed_and_prefixed_conditions_both_compile() -> None:
    catalog = build(
        simple_library(
            offer("a", rule="R1"),
            offer("b", rule="R2"),
            extra=[rule("R1", "true", prefixed=False), rule("R2", "true")],
        )
    )
    assert catalog.errors == ()
    assert catalog.offers["a"].rule is not None
    assert catalog.offers["a"].rule.compiled is not None


def test_missing_references_are_errors_on_the_referencing_instance() -> None:
    catalog = build(
        [
            placement("P1"),
            offer("o", rule="R-missing"),
            decision("D1", [criterion("C-missing", placements=["P-missing"])], fallback_id="F-x"),
        ]
    )
    found = {(e.kind, e.at_id, e.reference) for e in catalog.errors}
    assert found == {
        (CatalogErrorKind.MISSING_REFERENCE, "o", "R-missing"),
        (CatalogErrorKind.MISSING_REFERENCE, "D1", "C-missing"),
        (CatalogErrorKind.MISSING_REFERENCE, "D1", "F-x"),
        (CatalogErrorKind.MISSING_REFERENCE, "D1", "P-missing"),
    }


def test_fallback_without_representation_for_a_named_placement_is_reported() -> None:
    catalog = build(
        [
            placement("P1"),
            placement("P2"),
            fallback("F1", placements=["P1"]),
            collection("C1", []),
            decision("D1", [criterion("C1", placements=["P1", "P2"])]),
        ]
    )
    (error,) = catalog.errors
    assert error.kind is CatalogErrorKind.FALLBACK_WITHOUT_REPRESENTATION
    assert error.reference == "P2"


def test_invalid_formula_and_date_are_reported() -> None:
    catalog = build(
        simple_library(
            offer("bad-date", start="not a date"),
            extra=[
                formula("RF", "this is not a formula"),
                decision("D2", [criterion("C1", formula_id="RF")]),
            ],
        )
    )
    kinds = {(e.kind, e.at_id) for e in catalog.errors}
    assert kinds == {
        (CatalogErrorKind.INVALID_VALUE, "bad-date"),
        (CatalogErrorKind.INVALID_FORMULA, "RF"),
    }
    formula_error = next(e for e in catalog.errors if e.at_id == "RF")
    assert formula_error.dependents == ("D2",)


def test_capped_offer_ids_lists_what_the_service_must_fetch() -> None:
    catalog = build(
        simple_library(
            offer("g", global_cap=3),
            offer("p", profile_cap=1),
            offer("free"),
            offer("capped-draft", global_cap=1, status="draft"),
        )
    )
    assert catalog.capped_offer_ids(["D1"]) == {"g", "p"}
    assert catalog.capped_offer_ids(["unknown"]) == frozenset()


def test_a_compiler_crash_becomes_an_error_not_an_exception() -> None:
    def crashing(source: str, **_: object) -> object:
        raise RuntimeError("compiler bug")

    catalog = build_catalog(
        simple_library(offer("o", rule="R"), extra=[rule("R", "true")]),
        compile_rule=crashing,  # type: ignore[arg-type]
    )
    assert [e.message for e in catalog.errors] == ["RuntimeError: compiler bug"]


def test_the_catalog_keeps_the_compiler_it_was_built_with() -> None:
    catalog = build(simple_library(offer("o")))
    assert catalog.compile_rule is engine_fakepql.compile


def test_pools_keep_the_rule_parts_every_candidate_needs_per_placement() -> None:
    catalog = build(
        [
            *simple_library(
                offer("a", rule="RA", placements=("P1", "P2")),
                offer("b", rule="RB"),
                offer("c", rule="RC", placements=("P2",)),
                extra=[
                    placement("P2"),
                    rule("RA", 'tier = "gold" and age >= 18 and offer.kind = "x"'),
                    rule("RB", 'age >= 18 and tier = "gold" and n = 2'),
                    rule("RC", 'tier = "gold" and offer.kind = "x"'),
                ],
            )
        ]
    )
    pool = catalog.decisions["D1"].criteria[0].pool
    # Shared by a and b (in the first rule's order); c is not in P1.
    assert [r.source for r in pool.required["P1"]] == ['tier = "gold"', "age >= 18"]
    # a and c share a part that reads offer: per candidate, so not shared up front.
    assert [r.source for r in pool.required["P2"]] == ['tier = "gold"']
    assert catalog.errors == ()


def test_nothing_is_required_when_a_candidate_has_no_rule() -> None:
    catalog = build(
        simple_library(
            offer("a", rule="R"),
            offer("b"),
            extra=[rule("R", 'tier = "gold" and n = 2')],
        )
    )
    assert catalog.decisions["D1"].criteria[0].pool.required == {}


def test_offers_with_the_same_dates_share_one_datetime_object() -> None:
    # A decision checking many offers reads their dates from memory already in the CPU's
    # caches; values are unchanged.
    start, end = "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z"
    catalog = build(
        [
            placement(),
            offer("O1", start=start, end=end),
            offer("O2", start=start, end=end),
            offer("O3", start="2024-02-01T00:00:00Z", end=end),
        ]
    )
    first, second, third = (catalog.offers[i] for i in ("O1", "O2", "O3"))
    assert first.start is second.start and first.end is second.end is third.end
    assert first.start is not None and first.start.isoformat() == "2024-01-01T00:00:00+00:00"
    assert third.start is not None and third.start.month == 2

"""Properties of ``decide`` over generated libraries, profiles and requests (real PQL).

* every chosen option is eligible (checked by an independent oracle);
* options are unique within a proposition, and across propositions when duplicates
  are disallowed;
* the order of instances in the library does not change the result (same seed);
* a proposition gets the fallback iff nothing is eligible;
* asking for an explain trace does not change the result (with a trace, collections are
  walked even when a part every candidate's rule needs is false; without, they are not).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextoffer import pql
from nextoffer.engine import (
    CapCounters,
    CatalogInstance,
    DecisionRequest,
    PropositionRequest,
    build_catalog,
    decide,
)
from nextoffer.engine import catalog as schemas

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
PLACEMENTS = ("P1", "P2")
RULES = {
    "R-adult": "age >= 18",
    "R-gold": 'tier = "gold"',
    "R-true": "true",
    "R-false": "false",
    "R-combo": 'age >= 30 and tier in ["gold", "silver"]',
    # Rules sharing parts with each other and with R-gold/R-adult: collections whose
    # candidates all need one part skip their walk when it is false (Pool.required).
    "R-gold-adult": 'tier = "gold" and age >= 18',
    "R-young-gold": 'age < 30 and tier = "gold"',
    "R-adult-silver": 'age >= 18 and tier = "silver"',
}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class OfferSpec:
    at_id: str
    priority: int
    status: str
    placements: tuple[str, ...]
    rule: str | None
    days: tuple[int, int]  # start/end relative to NOW, in days
    global_cap: int | None
    global_count: int
    in_c1: bool
    in_c2: bool


def _offer_specs() -> st.SearchStrategy[list[OfferSpec]]:
    one = st.builds(
        OfferSpec,
        at_id=st.just(""),
        priority=st.integers(0, 4),
        status=st.sampled_from(["approved", "approved", "approved", "draft"]),
        placements=st.sets(st.sampled_from(PLACEMENTS), max_size=2).map(lambda s: tuple(sorted(s))),
        rule=st.one_of(st.none(), st.sampled_from(sorted(RULES))),
        days=st.sampled_from([(-10, 10), (-10, 10), (-10, -1), (1, 10)]),
        global_cap=st.one_of(st.none(), st.integers(1, 3)),
        global_count=st.integers(0, 4),
        in_c1=st.booleans(),
        in_c2=st.booleans(),
    )
    return st.lists(one, min_size=1, max_size=10).map(
        lambda specs: [
            OfferSpec(
                f"offer-{i:02d}", *[getattr(s, f) for f in list(OfferSpec.__dataclass_fields__)[1:]]
            )
            for i, s in enumerate(specs)
        ]
    )


def _instance(schema: str, at_id: str, body: Mapping[str, Any]) -> CatalogInstance:
    return CatalogInstance(schema, at_id, f"instance-{at_id}", 1, body)


def _library(specs: list[OfferSpec]) -> list[CatalogInstance]:
    def rep(placement: str) -> dict[str, Any]:
        return {
            "xdm:placement": placement,
            "xdm:components": [{"@type": "text", "dc:format": "text/plain"}],
        }

    instances = [_instance(schemas.PLACEMENT, p, {"xdm:name": p}) for p in PLACEMENTS]
    instances.append(
        _instance(
            schemas.FALLBACK_OFFER,
            "F",
            {"xdm:status": "approved", "xdm:representations": [rep(p) for p in PLACEMENTS]},
        )
    )
    for rule_id, source in RULES.items():
        condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": source}
        instances.append(_instance(schemas.ELIGIBILITY_RULE, rule_id, {"xdm:condition": condition}))
    for spec in specs:
        selection: dict[str, Any] = {
            "xdm:startDate": (NOW + timedelta(days=spec.days[0])).isoformat(),
            "xdm:endDate": (NOW + timedelta(days=spec.days[1])).isoformat(),
        }
        if spec.rule:
            selection["xdm:eligibilityRule"] = spec.rule
        body: dict[str, Any] = {
            "xdm:status": spec.status,
            "xdm:representations": [rep(p) for p in spec.placements],
            "xdm:selectionConstraint": selection,
            "xdm:rank": {"xdm:priority": spec.priority},
        }
        if spec.global_cap is not None:
            body["xdm:cappingConstraint"] = {"xdm:globalCap": spec.global_cap}
        instances.append(_instance(schemas.PERSONALIZED_OFFER, spec.at_id, body))
    for name, member in (("C1", "in_c1"), ("C2", "in_c2")):
        ids = [s.at_id for s in specs if getattr(s, member)]
        instances.append(
            _instance(schemas.COLLECTION, name, {"xdm:filterType": "offers", "xdm:ids": ids})
        )

    def criterion(collection: str, group: int) -> dict[str, Any]:
        return {
            "xdm:optionSelection": {"xdm:filter": collection},
            "xdm:ranking": {"xdm:priority": group},
        }

    for decision_id, criteria in (
        ("D1", [criterion("C1", 0)]),
        ("D2", [criterion("C2", 0), criterion("C1", 1)]),
    ):
        body = {"xdm:status": "live", "xdm:criteria": criteria, "xdm:fallback": "F"}
        instances.append(_instance(schemas.DECISION, decision_id, body))
    return instances


profiles = st.fixed_dictionaries(
    {"age": st.integers(10, 60), "tier": st.sampled_from(["gold", "silver", "bronze"])}
)
proposition_requests = st.lists(
    st.builds(
        PropositionRequest,
        st.sampled_from(["D1", "D2"]),
        st.sampled_from(PLACEMENTS),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=3,
).map(tuple)


def _eligible(spec: OfferSpec, placement: str, profile: Mapping[str, Any]) -> bool:
    """The oracle: every eligibility stage, computed without the engine."""
    start, end = spec.days
    if spec.status != "approved" or placement not in spec.placements or not start <= 0 <= end:
        return False
    if spec.global_cap is not None and spec.global_count >= spec.global_cap:
        return False
    if spec.rule is None:
        return True
    return bool(pql.compile(RULES[spec.rule]).evaluate(profile=profile, now=NOW))


def _members(specs: list[OfferSpec], decision_id: str) -> list[OfferSpec]:
    return [s for s in specs if s.in_c1 or (decision_id == "D2" and s.in_c2)]


def _run(
    instances: list[CatalogInstance],
    specs: list[OfferSpec],
    propositions: tuple[PropositionRequest, ...],
    profile: Mapping[str, Any],
    duplicates: bool,
    *,
    seed: int = 1,
    explain: bool = False,
) -> Any:
    catalog = build_catalog(instances, compile_rule=pql.compile)
    assert catalog.errors == ()
    request = DecisionRequest(
        propositions=propositions,
        allow_duplicates_across_activities=duplicates,
        allow_duplicates_across_placements=duplicates,
        profile=profile,
        explain=explain,
    )
    counters = CapCounters(global_counts={s.at_id: s.global_count for s in specs})
    return decide(catalog, request, counters=counters, now=NOW, rng=random.Random(seed))


@SETTINGS
@given(_offer_specs(), proposition_requests, profiles, st.booleans())
def test_chosen_options_are_always_eligible(
    specs: list[OfferSpec],
    propositions: tuple[PropositionRequest, ...],
    profile: dict[str, Any],
    duplicates: bool,
) -> None:
    by_id = {s.at_id: s for s in specs}
    result = _run(_library(specs), specs, propositions, profile, duplicates)
    for wanted, proposition in zip(propositions, result.propositions, strict=True):
        members = {s.at_id for s in _members(specs, wanted.activity_id)}
        assert len(proposition.options) <= wanted.item_count
        for option in proposition.options:
            assert option.offer_id in members
            assert _eligible(by_id[option.offer_id], wanted.placement_id, profile)


@SETTINGS
@given(_offer_specs(), proposition_requests, profiles, st.booleans())
def test_options_are_unique_and_not_repeated_when_duplicates_are_disallowed(
    specs: list[OfferSpec],
    propositions: tuple[PropositionRequest, ...],
    profile: dict[str, Any],
    duplicates: bool,
) -> None:
    result = _run(_library(specs), specs, propositions, profile, duplicates)
    everywhere: list[str] = []
    for proposition in result.propositions:
        ids = [o.offer_id for o in proposition.options]
        assert len(ids) == len(set(ids))
        everywhere += ids
    if not duplicates:
        assert len(everywhere) == len(set(everywhere))


@SETTINGS
@given(
    _offer_specs(), proposition_requests, profiles, st.booleans(), st.randoms(use_true_random=False)
)
def test_library_order_does_not_change_the_result(
    specs: list[OfferSpec],
    propositions: tuple[PropositionRequest, ...],
    profile: dict[str, Any],
    duplicates: bool,
    shuffler: random.Random,
) -> None:
    instances = _library(specs)
    shuffled = list(instances)
    shuffler.shuffle(shuffled)
    for seed in (1, 2):
        first = _run(instances, specs, propositions, profile, duplicates, seed=seed)
        second = _run(shuffled, specs, propositions, profile, duplicates, seed=seed)
        assert first == second


@SETTINGS
@given(_offer_specs(), st.sampled_from(["D1", "D2"]), st.sampled_from(PLACEMENTS), profiles)
def test_fallback_iff_nothing_is_eligible(
    specs: list[OfferSpec], activity: str, placement: str, profile: dict[str, Any]
) -> None:
    wanted = (PropositionRequest(activity, placement, 2),)
    (proposition,) = _run(_library(specs), specs, wanted, profile, False).propositions
    anything = any(_eligible(s, placement, profile) for s in _members(specs, activity))
    assert (proposition.fallback is not None) is (not anything)
    assert (len(proposition.options) > 0) is anything


@SETTINGS
@given(_offer_specs(), proposition_requests, profiles, st.booleans())
def test_explain_does_not_change_the_result(
    specs: list[OfferSpec],
    propositions: tuple[PropositionRequest, ...],
    profile: dict[str, Any],
    duplicates: bool,
) -> None:
    instances = _library(specs)
    plain = _run(instances, specs, propositions, profile, duplicates, explain=False)
    explained = _run(instances, specs, propositions, profile, duplicates, explain=True)
    assert [p.options for p in plain.propositions] == [p.options for p in explained.propositions]
    assert plain.proposed == explained.proposed
    for proposition in explained.propositions:
        assert proposition.trace is not None

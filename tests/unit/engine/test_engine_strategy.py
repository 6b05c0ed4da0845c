"""Ranking strategies in the engine: the model's statistics and posteriors, the features,
and the selection stage (draw order, lazy eligibility, explain, determinism)."""

from __future__ import annotations

import random
import tracemalloc
import zlib
from collections import Counter
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from nextoffer import pql
from nextoffer.engine import CapCounters, DecisionRequest, PropositionRequest, build_catalog, decide
from nextoffer.engine import catalog as schemas
from nextoffer.engine import strategy as strategy_module
from nextoffer.engine.sampling import BandedBlock
from nextoffer.engine.strategy import (
    DIMENSION,
    PRIOR_PRECISION,
    REWARD,
    SLOTS,
    Strategy,
    StrategyType,
    _slot,
    increments,
    learn,
    slots,
)
from nextoffer.errors import PQLError
from unit.engine.engine_library import (
    collection,
    fallback,
    instance,
    offer,
    placement,
    rule,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STRATEGY = "xcore:ranking-strategy:1"


def ranked_by(strategy: str) -> dict[str, Any]:
    """The criterion of decision D1: collection C1 in placement P1, ranked by ``strategy``."""
    return {
        "xdm:placements": ["P1"],
        "xdm:optionSelection": {"xdm:filter": "C1"},
        "xdm:ranking": {
            "xdm:order": {
                "xdm:orderEvaluationType": "rankingStrategy",
                "xdm:rankingStrategy": strategy,
            }
        },
    }


def library(body: dict[str, Any], *offers: Any, extra: tuple[Any, ...] = ()) -> Any:
    ids = [o.at_id for o in offers]
    criterion = ranked_by(STRATEGY)
    instances = [
        placement("P1"),
        fallback("F1"),
        *offers,
        *extra,
        collection("C1", ids),
        instance(schemas.RANKING_STRATEGY, STRATEGY, body),
        instance(
            schemas.DECISION,
            "D1",
            {"xdm:status": "live", "xdm:criteria": [criterion], "xdm:fallback": "F1"},
        ),
    ]
    catalog = build_catalog(instances, compile_rule=pql.compile)
    assert catalog.errors == ()
    return catalog


AUTO = {"xdm:name": "a", "xdm:strategyType": "auto-optimization"}


def ask(
    catalog: Any,
    *,
    learned: Any = None,
    seed: int = 0,
    explain: bool = False,
    n: int = 1,
    profile: dict[str, Any] | None = None,
) -> Any:
    request = DecisionRequest(
        propositions=(PropositionRequest("D1", "P1", n),), profile=profile or {}, explain=explain
    )
    result = decide(
        catalog,
        request,
        counters=CapCounters(),
        now=NOW,
        rng=random.Random(seed),
        learned=learned,
    )
    return result.propositions[0]


def cells_of(
    events: list[tuple[str, tuple[int, ...], bool, bool]],
) -> dict[str, dict[tuple[int, int], float]]:
    """Sum the increments of (offer, slots, impression, reward) events, as the store does."""
    cells: dict[str, dict[tuple[int, int], float]] = {}
    for offer_id, active, impression, reward in events:
        mine = cells.setdefault(offer_id, {})
        for key, value in increments(active, impression=impression, reward=reward).items():
            mine[key] = mine.get(key, 0.0) + value
    return cells


def test_auto_statistics_are_impressions_and_clicks() -> None:
    cells = cells_of([("A", (0,), True, False)] * 7 + [("A", (0,), False, True)] * 3)
    assert cells == {"A": {(0, 0): 7.0, (0, REWARD): 3.0}}
    learned = learn(StrategyType.AUTO, cells)
    assert learned.impressions.tolist() == [7.0] and learned.clicks.tolist() == [3.0]


def test_the_personalized_posterior_is_bayesian_ridge_regression() -> None:
    rng = np.random.default_rng(3)
    events = []
    rows = []
    rewards = []
    for _ in range(300):
        active = tuple(sorted({0, *rng.choice(np.arange(1, DIMENSION), size=2, replace=False)}))
        clicked = bool(rng.random() < 0.3)
        events.append(("A", active, True, False))
        if clicked:
            events.append(("A", active, False, True))
        x = np.zeros(DIMENSION)
        x[list(active)] = 1.0
        rows.append(x)
        rewards.append(float(clicked))
    # Events in any order add up to the same statistics.
    shuffled = list(events)
    random.Random(1).shuffle(shuffled)
    assert cells_of(shuffled) == cells_of(events)
    learned = learn(StrategyType.PERSONALIZED, cells_of(events))
    X, r = np.array(rows), np.array(rewards)
    precision = X.T @ X + PRIOR_PRECISION * np.eye(DIMENSION)
    assert learned.means is not None and learned.covariances is not None
    np.testing.assert_allclose(learned.means[0], np.linalg.solve(precision, X.T @ r), atol=1e-9)
    np.testing.assert_allclose(learned.covariances[0], np.linalg.inv(precision), atol=1e-9)


def test_features_read_profile_context_and_segments() -> None:
    strategy = Strategy(
        "S",
        "s",
        1,
        {},
        StrategyType.PERSONALIZED,
        "clicks",
        (pql.feature("loyalty.tier"), pql.feature("@{ctx}.device"), pql.feature('inSegment("g")')),
    )
    gold = {
        "loyalty": {"tier": "gold"},
        "segmentMembership": {"ups": {"g": {"status": "realized"}}},
    }
    a = slots(strategy, gold, {"ctx": {"device": "phone"}})
    assert a[0] == 0 and len(a) <= 4
    assert slots(strategy, gold, {"ctx": {"device": "phone"}}) == a
    assert slots(strategy, {"loyalty": {"tier": "silver"}}, {"ctx": {"device": "phone"}}) != a
    # Absent values are a category of their own, not an error.
    assert slots(strategy, {}, {})[0] == 0


@pytest.mark.parametrize(
    ("source", "profile", "context", "expected"),
    [
        ("tier", {"tier": "gold"}, {}, "gold"),
        ("profile.tier", {"tier": "gold"}, {}, "gold"),
        ("tier", {}, {}, None),
        ("loyalty.tier", {"loyalty": {"tier": "gold"}}, {}, "gold"),
        ("loyalty.tier", {"loyalty": "gold"}, {}, None),
        # a field of an array projects over its items (values.path)
        ("cards.kind", {"cards": [{"kind": "a"}, {"kind": None}, {"kind": "b"}]}, {}, ["a", "b"]),
        ("@{ctx}.device", {}, {"ctx": {"device": "phone"}}, "phone"),
        ("@{ctx}.device", {}, {"ctx": [{"device": "phone"}]}, ["phone"]),
        ("@{ctx}.device", {}, {"ctx": "phone"}, None),
        ("@{ctx}.a.b", {}, {"ctx": {"a": {"b": 2}}}, 2),
        ("@{ctx}.device", {}, {}, None),
        ('inSegment("g")', {"segmentMembership": {"ups": {"g": {"status": "realized"}}}}, {}, True),
        ('inSegment("g")', {"segmentMembership": {"ups": {"g": {"status": "exited"}}}}, {}, False),
    ],
)
def test_a_feature_reads_its_value_with_pql_path_semantics(
    source: str, profile: dict[str, Any], context: dict[str, Any], expected: Any
) -> None:
    feature = pql.feature(source)
    assert feature.read(profile, context) == expected
    assert feature.read(MappingProxyType(profile), context) == expected  # any Mapping


@pytest.mark.parametrize("source", ["person.age > 3", "xEvent.x", "1", "inSegment(x)", "@{ctx}"])
def test_only_paths_and_segments_are_features(source: str) -> None:
    with pytest.raises(PQLError):
        pql.feature(source)


def test_auto_optimization_serves_the_offer_it_learned_to_prefer() -> None:
    catalog = library(AUTO, offer("A"), offer("B"), offer("C"))
    learned = {
        STRATEGY: learn(
            StrategyType.AUTO,
            {
                "B": {(0, 0): 200.0, (0, REWARD): 60.0},
                "A": {(0, 0): 200.0, (0, REWARD): 2.0},
                "C": {(0, 0): 200.0, (0, REWARD): 2.0},
            },
        )
    }
    picks = Counter(ask(catalog, learned=learned, seed=s).options[0].offer_id for s in range(50))
    assert picks == {"B": 50}
    # Nothing learned: Beta(1,1) for each, so all three are served (no minimum of data).
    cold = Counter(ask(catalog, seed=s).options[0].offer_id for s in range(60))
    assert set(cold) == {"A", "B", "C"}


def test_a_seeded_decision_is_repeatable_and_records_how_it_ranked() -> None:
    catalog = library(AUTO, offer("A"), offer("B"), offer("C"))
    first, second = ask(catalog, seed=7, n=2), ask(catalog, seed=7, n=2)
    assert [o.offer_id for o in first.options] == [o.offer_id for o in second.options]
    assert first.ranking is not None
    assert first.ranking.strategy_id == STRATEGY
    assert first.ranking.slots == (0,)
    assert first.ranking.explored is False
    assert first.ranking.offer_ids == tuple(o.offer_id for o in first.options)


def test_ineligible_candidates_are_skipped_in_draw_order() -> None:
    catalog = library(
        AUTO,
        offer("A", rule="R1"),
        offer("B"),
        offer("C", rule="R1"),
        extra=(rule("R1", 'tier = "gold"'),),
    )
    stats = {
        "A": {(0, 0): 100.0, (0, REWARD): 90.0},
        "B": {(0, 0): 100.0, (0, REWARD): 5.0},
        "C": {(0, 0): 100.0, (0, REWARD): 5.0},
    }
    learned = {STRATEGY: learn(StrategyType.AUTO, stats)}
    # A draws highest nearly always; for a silver profile it is not eligible: B is served.
    silver = Counter(
        ask(catalog, learned=learned, seed=s, profile={"tier": "silver"}).options[0].offer_id
        for s in range(30)
    )
    assert silver == {"B": 30}
    gold = Counter(
        ask(catalog, learned=learned, seed=s, profile={"tier": "gold"}).options[0].offer_id
        for s in range(30)
    )
    assert gold == {"A": 30}


def test_explain_walks_every_candidate_with_its_draw_and_estimate() -> None:
    catalog = library(
        AUTO,
        offer("A", rule="R1"),
        offer("B"),
        offer("C"),
        extra=(rule("R1", 'tier = "gold"'),),
    )
    proposition = ask(catalog, explain=True, seed=3)
    trace = proposition.trace
    assert trace.strategy == STRATEGY and trace.explored is False
    reasons = {c.offer_id: c.reason.value for c in trace.candidates}
    assert reasons["A"] == "ruleFalse"
    assert sorted(reasons.values()) == ["rankCutoff", "ruleFalse", "selected"]
    scored = [c for c in trace.candidates if c.reason.value != "ruleFalse"]
    assert all(c.estimate == 0.5 and 0.0 <= (c.score or -1) <= 1.0 for c in scored)
    # The same options as without explain, for the same seed.
    assert ask(catalog, seed=3).options == proposition.options


def test_personalized_exploration_serves_uniformly_at_random() -> None:
    body = {
        "xdm:name": "p",
        "xdm:strategyType": "personalized-optimization",
        "xdm:features": ["tier"],
        "xdm:explorationRate": 1.0,
    }
    catalog = library(body, offer("A"), offer("B"), offer("C"))
    strategy = catalog.strategies[STRATEGY]
    gold = slots(strategy, {"tier": "gold"}, {})
    learned = {STRATEGY: learn(StrategyType.PERSONALIZED, cells_of([("A", gold, True, True)] * 50))}
    props = [ask(catalog, learned=learned, seed=s, profile={"tier": "gold"}) for s in range(90)]
    assert all(p.ranking.explored for p in props)
    picks = Counter(p.options[0].offer_id for p in props)
    assert min(picks.values()) >= 15, picks


def test_personalized_optimization_ranks_by_the_requests_features() -> None:
    body = {
        "xdm:name": "p",
        "xdm:strategyType": "personalized-optimization",
        "xdm:features": ["tier"],
        "xdm:explorationRate": 0.0,
    }
    catalog = library(body, offer("A"), offer("B"))
    strategy = catalog.strategies[STRATEGY]
    gold, silver = (slots(strategy, {"tier": t}, {}) for t in ("gold", "silver"))
    events = (
        [("A", gold, True, False)] * 100
        + [("A", gold, False, True)] * 40
        + [("B", gold, True, False)] * 100
        + [("B", gold, False, True)] * 5
        + [("A", silver, True, False)] * 100
        + [("A", silver, False, True)] * 5
        + [("B", silver, True, False)] * 100
        + [("B", silver, False, True)] * 40
    )
    learned = {STRATEGY: learn(StrategyType.PERSONALIZED, cells_of(events))}
    for tier, best in (("gold", "A"), ("silver", "B")):
        picks = Counter(
            ask(catalog, learned=learned, seed=s, profile={"tier": tier}).options[0].offer_id
            for s in range(40)
        )
        assert picks[best] >= 38, (tier, picks)


def test_a_walk_past_the_sorted_head_reaches_the_last_eligible_candidate() -> None:
    # 40 candidates (more than a block sorts up front); only the worst one is eligible.
    offers = [offer(f"O{i:02d}", rule="R1") for i in range(39)] + [offer("Z")]
    catalog = library(AUTO, *offers, extra=(rule("R1", 'tier = "gold"'),))
    stats = {o.at_id: {(0, 0): 100.0, (0, REWARD): 50.0} for o in offers}
    stats["Z"] = {(0, 0): 1000.0, (0, REWARD): 1.0}
    learned = {STRATEGY: learn(StrategyType.AUTO, stats)}
    for seed in range(5):
        proposition = ask(catalog, learned=learned, seed=seed, n=3, profile={"tier": "silver"})
        assert [o.offer_id for o in proposition.options] == ["Z"]
        gold = ask(catalog, learned=learned, seed=seed, n=3, profile={"tier": "gold"})
        assert len(gold.options) == 3 and "Z" not in [o.offer_id for o in gold.options]


def test_a_long_candidate_list_is_drawn_in_bands_and_ranks_by_the_posterior() -> None:
    # 300 candidates: after a few blocks drawn in full, decisions take banded blocks
    # (only the draws above a threshold), and still serve by the posterior, eligible only.
    offers = [offer(f"O{i:03d}", rule="R1" if i % 2 else None) for i in range(300)]
    catalog = library(AUTO, *offers, extra=(rule("R1", 'tier = "gold"'),))
    stats = {o.at_id: {(0, 0): 1000.0, (0, REWARD): 20.0} for o in offers}
    stats["O007"] = {(0, 0): 1000.0, (0, REWARD): 90.0}  # the best, for gold only
    stats["O010"] = {(0, 0): 1000.0, (0, REWARD): 60.0}  # the best for everyone
    learned = {STRATEGY: learn(StrategyType.AUTO, stats)}
    silver = [
        ask(catalog, learned=learned, seed=s, n=3, profile={"tier": "silver"}) for s in range(200)
    ]
    blocks = list(learned[STRATEGY]._blocks.values())
    assert any(isinstance(block, BandedBlock) for block in blocks)
    for proposition in silver:
        ids = [o.offer_id for o in proposition.options]
        assert len(ids) == 3 and all(int(i[1:]) % 2 == 0 for i in ids)  # eligible only
    assert Counter(p.options[0].offer_id for p in silver)["O010"] >= 195
    gold = Counter(
        ask(catalog, learned=learned, seed=s, profile={"tier": "gold"}).options[0].offer_id
        for s in range(50)
    )
    assert gold["O007"] >= 48


def test_feature_slots_tell_true_from_one() -> None:
    # The slots are memoised by the values read: True and 1 (equal in Python) are
    # different categories ("true", "1") and must not share an entry.
    body = {
        "xdm:name": "p",
        "xdm:strategyType": "personalized-optimization",
        "xdm:features": ["tier"],
    }
    strategy = library(body, offer("A")).strategies[STRATEGY]
    assert _slot("tier", "true") != _slot("tier", "1")  # else this test proves nothing
    assert slots(strategy, {"tier": True}, {}) == (0, _slot("tier", "true"))
    assert slots(strategy, {"tier": 1}, {}) == (0, _slot("tier", "1"))
    assert slots(strategy, {"tier": [1, 2]}, {}) == (0, _slot("tier", "[1,2]"))  # unhashable


def test_long_feature_values_are_hashed_but_not_kept() -> None:
    # A request's context data is the caller's: memoising its values would let requests
    # with distinct 1 MB values hold 64 GB in the slot caches (65,536 entries each).
    body = {
        "xdm:name": "p",
        "xdm:strategyType": "personalized-optimization",
        "xdm:features": ["@{ctx}.device"],
    }
    strategy = library(body, offer("A")).strategies[STRATEGY]
    caches = [strategy_module._slot, getattr(strategy_module, "_short_slot", None)]
    memos = [c for c in caches if hasattr(c, "cache_info")]
    kept = [memo.cache_info().currsize for memo in memos]
    for n in range(20):
        device = f"{n:02d}" + "x" * 5000
        expected = 1 + zlib.crc32(f"@{{ctx}}.device={device}".encode()) % SLOTS
        assert slots(strategy, {}, {"ctx": {"device": device}}) == (0, expected)
        assert not any(device in key for key in strategy_module._ACTIVE)
    assert [memo.cache_info().currsize for memo in memos] == kept
    # Short values are still memoised.
    assert slots(strategy, {}, {"ctx": {"device": "phone"}}) == (0, _slot("@{ctx}.device", "phone"))
    assert any("phone" in key for key in strategy_module._ACTIVE)


def test_a_criterion_naming_a_strategy_not_in_the_library_ranks_by_priority_and_says_so():
    # The dps form's documented decision names "123456789123", which no API creates.
    o1 = offer("O1", priority=1)
    o2 = offer("O2", priority=9)
    criterion = ranked_by("123456789123")
    catalog = build_catalog(
        [
            placement("P1"),
            fallback("F1"),
            o1,
            o2,
            collection("C1", ["O1", "O2"]),
            instance(
                schemas.DECISION,
                "D1",
                {"xdm:status": "live", "xdm:criteria": [criterion], "xdm:fallback": "F1"},
            ),
        ],
        compile_rule=pql.compile,
    )
    [error] = catalog.errors
    assert error.kind.value == "unknownRankingStrategy"
    assert error.message == (
        "criterion 0: ranking strategy '123456789123' is not in the library; the criterion"
        " ranks by offer priority until it is"
    )
    assert [option.offer_id for option in ask(catalog).options] == ["O2"]


def test_learning_again_recomputes_only_the_offers_that_changed_and_agrees() -> None:
    events = [(o, (0, 3, 9), True, o == "B") for o in "ABC" for _ in range(5)]
    before = learn(StrategyType.PERSONALIZED, cells_of(events))
    events += [("B", (0, 3), True, True), ("D", (0, 9), True, False)]  # D: a new offer
    after = cells_of(events)
    again = learn(StrategyType.PERSONALIZED, after, previous=before, changed={"B", "D"})
    whole = learn(StrategyType.PERSONALIZED, after)
    assert again.index == whole.index == {"A": 0, "B": 1, "C": 2, "D": 3}
    assert again.means is not None and whole.means is not None
    assert again.covariances is not None and whole.covariances is not None
    np.testing.assert_allclose(again.means, whole.means, atol=1e-12)
    np.testing.assert_allclose(again.covariances, whole.covariances, atol=1e-12)
    # An auto posterior first learned is no personalized one: everything is computed.
    auto = learn(StrategyType.AUTO, after)
    fresh = learn(StrategyType.PERSONALIZED, after, previous=auto, changed=set())
    assert fresh.means is not None
    np.testing.assert_allclose(fresh.means, whole.means, atol=1e-12)


def test_learning_a_large_strategy_needs_little_more_memory_than_its_posteriors() -> None:
    events = [(f"o{k:03d}", (0, 1 + k % SLOTS), True, k % 3 == 0) for k in range(1000)]
    cells = cells_of(events)
    tracemalloc.start()
    try:
        learned = learn(StrategyType.PERSONALIZED, cells)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert learned.covariances is not None
    kept = learned.covariances.nbytes + (learned.means.nbytes if learned.means is not None else 0)
    assert peak < 1.5 * kept, (peak, kept)  # computed in chunks, not all at once

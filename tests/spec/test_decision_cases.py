"""Decision semantics as data: every ``tests/spec/decisions/*.json`` file, run through the engine.

A file holds a ``library`` (stored instances, by short schema name) and ``cases``; each case
has a ``request`` (proposition requests, duplicate flags), optionally a ``profile``,
``counters``, ``now`` and ``seed``, and one expectation (each case runs explained and
not: the options must agree; traces are checked on the explained run):

* ``expect``: one entry per proposition, ``{"options": [ids in rank order]}``,
  ``{"optionTiers": [[ids], ...]}`` (tier by tier, any order within a tier: ties) or
  ``{"fallback": id}``; optional ``"scores": {id: score}``, ``"trace": {id: reason}``,
  ``"traceDetail": {id: the false part of its rule}`` and ``"fallbackReason"``;
* ``expectError``: ``{"error": "NotFound" | "Unprocessable", "pointer": "..."}``;
* ``expectUniform``: ``{"among": [ids], "runs": N}`` — the first option over N seeded runs
  is uniform (chi-square test).

Rules and formulas are compiled by the real ``nextoffer.pql``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from nextoffer import errors, pql
from nextoffer.engine import (
    CapCounters,
    CatalogInstance,
    DecisionRequest,
    PropositionRequest,
    build_catalog,
    decide,
)

_NS = "https://ns.adobe.com/experience/offer-management/"
SCHEMAS = {
    "placement": _NS + "offer-placement",
    "offer": _NS + "personalized-offer",
    "fallback": _NS + "fallback-offer",
    "collection": _NS + "offer-filter",
    "tag": _NS + "tag",
    "rule": _NS + "eligibility-rule",
    "decision": _NS + "offer-activity",
    "formula": _NS + "ranking-function",
}
CASES_DIR = Path(__file__).parent / "decisions"
DEFAULT_NOW = "2024-06-01T12:00:00Z"
# 99.9th percentile of chi-square with 2 degrees of freedom: a fair draw fails 1 in 1000
# seeds, and the seed is fixed, so the test is deterministic.
CHI2_2DF_P999 = 13.816


def _load() -> list[Any]:
    params = []
    for path in sorted(CASES_DIR.glob("*.json")):
        spec = json.loads(path.read_text())
        for case in spec["cases"]:
            params.append(pytest.param(spec, case, id=f"{path.stem}:{case['name']}"))
    return params


def _library(spec: dict[str, Any]) -> list[CatalogInstance]:
    return [
        CatalogInstance(
            SCHEMAS[item["schema"]],
            item["@id"],
            f"instance-{item['@id']}",
            item.get("etag", 1),
            item["body"],
        )
        for item in spec["library"]
    ]


def _request(case: dict[str, Any], *, explain: bool) -> DecisionRequest:
    wanted = case["request"]
    duplicates = wanted.get("allowDuplicatePropositions", {})
    return DecisionRequest(
        propositions=tuple(
            PropositionRequest(p["activityId"], p["placementId"], p.get("itemCount", 1))
            for p in wanted["propositionRequests"]
        ),
        allow_duplicates_across_activities=duplicates.get("acrossActivities", False),
        allow_duplicates_across_placements=duplicates.get("acrossPlacements", False),
        profile=case.get("profile", {}),
        context=case.get("context", {}),
        explain=explain,
    )


def _counters(case: dict[str, Any]) -> CapCounters:
    counters = case.get("counters", {})
    return CapCounters(counters.get("global", {}), counters.get("profile", {}))


@pytest.mark.parametrize("explain", [True, False], ids=["explained", "quiet"])
@pytest.mark.parametrize(("spec", "case"), _load())
def test_decision_case(spec: dict[str, Any], case: dict[str, Any], explain: bool) -> None:
    """Each case decides alike with and without ``explain`` (a trace walks every candidate;
    without one the selection stops early and checks plain candidates inline); the trace
    expectations are checked on the explained run."""
    catalog = build_catalog(_library(spec), compile_rule=pql.compile)
    assert catalog.errors == (), catalog.errors
    now = datetime.fromisoformat(case.get("now", DEFAULT_NOW).replace("Z", "+00:00"))
    request = _request(case, explain=explain)
    counters = _counters(case)

    def run(seed: int) -> Any:
        return decide(catalog, request, counters=counters, now=now, rng=random.Random(seed))

    if "expectError" in case:
        expected = case["expectError"]
        with pytest.raises(getattr(errors, expected["error"])) as caught:
            run(0)
        assert caught.value.pointer == expected["pointer"]
        return
    if "expectUniform" in case:
        among = case["expectUniform"]["among"]
        runs = case["expectUniform"]["runs"]
        first = Counter(run(seed).propositions[0].options[0].offer_id for seed in range(runs))
        assert set(first) == set(among)
        expected_each = runs / len(among)
        chi2 = sum((first[o] - expected_each) ** 2 / expected_each for o in among)
        assert len(among) == 3, "the bound below is for 2 degrees of freedom"
        assert chi2 < CHI2_2DF_P999, (chi2, first)
        return
    result = run(case.get("seed", 0))
    assert len(result.propositions) == len(case["expect"])
    for proposition, expected in zip(result.propositions, case["expect"], strict=True):
        got_options = [option.offer_id for option in proposition.options]
        if "fallback" in expected:
            assert got_options == [], proposition.trace
            assert proposition.fallback is not None
            assert proposition.fallback.offer_id == expected["fallback"]
            assert proposition.fallback.representation is not None
        elif "optionTiers" in expected:
            # Options must come tier by tier, any order inside a tier; the last may be partial.
            position = 0
            for tier in expected["optionTiers"]:
                taken = got_options[position : position + len(tier)]
                assert set(taken) <= set(tier), (got_options, expected)
                position += len(taken)
            assert position == len(got_options), (got_options, expected)
            assert got_options, proposition.trace
        else:
            assert got_options == expected["options"], proposition.trace
        if "fallback" not in expected:
            assert proposition.fallback is None
            for option in proposition.options:
                assert option.representation is not None
                assert option.representation["xdm:placement"] == proposition.placement.at_id
        for offer_id, score in expected.get("scores", {}).items():
            option = next(o for o in proposition.options if o.offer_id == offer_id)
            assert option.score == pytest.approx(score)
        if not explain:
            assert proposition.trace is None
            continue
        assert proposition.trace is not None
        traced = {t.offer_id: t.reason.value for t in proposition.trace.candidates}
        for offer_id, reason in expected.get("trace", {}).items():
            assert traced.get(offer_id) == reason, proposition.trace
        details = {t.offer_id: t.detail for t in proposition.trace.candidates}
        for offer_id, detail in expected.get("traceDetail", {}).items():
            assert details.get(offer_id) == detail, proposition.trace
        if "fallbackReason" in expected:
            assert proposition.trace.fallback_reason is not None
            assert proposition.trace.fallback_reason.value == expected["fallbackReason"]

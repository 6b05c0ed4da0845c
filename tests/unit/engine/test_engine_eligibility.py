"""Eligibility helpers: segment membership, conjunct splitting, offer-level segments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nextoffer.engine.eligibility import Evaluation, conjuncts
from nextoffer.engine.explain import Reason
from nextoffer.engine.model import ConstraintType, ProfileConstraint, SegmentRef
from unit.engine.engine_library import build, offer, simple_library

PROFILE = {
    "segmentMembership": {
        "ups": {"s-real": {"status": "realized"}, "s-old": {"status": "exited"}},
        "aam": {"s-aam": {"status": "existing"}},
    }
}


def evaluation() -> Evaluation:
    return Evaluation(
        profile=PROFILE, events=(), context={}, now=datetime(2024, 1, 1, tzinfo=UTC), explain=True
    )


@pytest.mark.parametrize(
    ("segment", "member"),
    [
        (SegmentRef("s-real", "ups"), True),
        (SegmentRef("s-real"), True),  # no namespace: any namespace
        (SegmentRef("s-real", "aam"), False),
        (SegmentRef("s-old", "ups"), False),  # exited does not count
        (SegmentRef("s-aam"), True),
        (SegmentRef("nope"), False),
    ],
)
def test_segment_membership_counts_realized_and_existing(segment: SegmentRef, member: bool) -> None:
    assert evaluation().member(segment) is member


def test_any_and_all_segments() -> None:
    both = (SegmentRef("s-real"), SegmentRef("s-old"))
    any_of = ProfileConstraint(ConstraintType.ANY_SEGMENTS, segments=both)
    all_of = ProfileConstraint(ConstraintType.ALL_SEGMENTS, segments=both)
    assert evaluation().constraint(any_of, None) is None
    failure = evaluation().constraint(all_of, None)
    assert failure is not None
    assert failure.reason is Reason.CONSTRAINT_SEGMENT_NOT_MET
    assert "s-old" in (failure.detail or "")


def test_an_empty_segment_list_is_never_met() -> None:
    empty = ProfileConstraint(ConstraintType.ANY_SEGMENTS)
    assert evaluation().constraint(empty, None) is not None


def test_offer_level_segments_from_the_selection_constraint() -> None:
    catalog = build(
        simple_library(
            offer(
                "vip-only",
                selection={
                    "xdm:profileConstraintType": "anySegments",
                    "xdm:segmentIdentities": [
                        {"_id": "s-vip", "xdm:namespace": {"xdm:code": "ups"}}
                    ],
                },
            )
        )
    )
    target = catalog.offers["vip-only"]
    failure = evaluation().offer(target)
    assert failure is not None
    assert failure.reason is Reason.SEGMENT_NOT_MET


@pytest.mark.parametrize(
    ("source", "parts"),
    [
        ('a = 1 and b = "x and y" AND c', ["a = 1", 'b = "x and y"', "c"]),
        ("f(a and b) and c", ["f(a and b)", "c"]),
        ("a and b or c", None),
        ("a.and = 1 and b", ["a.and = 1", "b"]),
        ("x occurs between 1 and 2", None),
        ("single", ["single"]),
        ("a and", None),
    ],
)
def test_conjuncts_split_only_where_faithful(source: str, parts: list[str] | None) -> None:
    assert conjuncts(source) == parts

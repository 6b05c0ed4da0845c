"""Repeating capping rules reset at period boundaries (injected clock, real SQLite store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nextoffer.cli.demo import HTML, WEB
from nextoffer.engine import PropositionRequest
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    ObjectType,
    SchemaRef,
)
from nextoffer.root import NextOffer
from nextoffer.service.decisions import DecisionCall
from nextoffer.settings import Settings


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def world(tmp_path):
    clock = Clock(datetime(2026, 11, 28, 23, 0, tzinfo=UTC))  # a Saturday
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'n.db'}", catalog_check_seconds=0, freeze_heap=False
    )
    with NextOffer.open(settings, clock=clock) as no:
        creds = no.bootstrap(org="O@AdobeOrg", sandbox="prod")
        yield no.store, clock, creds.principal, creds.container_id, no.repository, no.decisions


def library(repo, principal, container, caps):
    def make(object_type: ObjectType, body):
        return repo.create(principal, container, SchemaRef(object_type, None, ""), body).at_id

    placement = make(PLACEMENT, {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML})
    reps = [
        {"xdm:placement": placement, "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
    ]
    offer = make(
        PERSONALIZED_OFFER,
        {
            "xdm:name": "o",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:frequencyCappingConstraints": caps,
        },
    )
    fallback = make(
        FALLBACK_OFFER, {"xdm:name": "f", "xdm:status": "approved", "xdm:representations": reps}
    )
    collection = make(COLLECTION, {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": [offer]})
    decision = make(
        DECISION,
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [{"xdm:optionSelection": {"xdm:filter": collection}}],
        },
    )
    return placement, offer, decision


def chosen(decisions, principal, container, placement, decision):
    call = DecisionCall(
        propositions=(PropositionRequest(decision, placement),), identities=[("Email", "a@x")]
    )
    proposition = decisions.decide(principal, container, call).result.propositions[0]
    return proposition.options[0].offer_id if proposition.options else None


@pytest.mark.parametrize(
    ("unit", "until_reset"),
    [
        ("day", timedelta(hours=1)),
        ("week", timedelta(hours=1)),
        ("month", timedelta(days=2, hours=1)),
    ],
)
def test_repeating_cap_resets_at_the_period_boundary(world, unit, until_reset):
    _, clock, principal, container, repo, decisions = world
    caps = [
        {
            "xdm:limit": 1,
            "xdm:scope": "profile",
            "xdm:repeat": {"xdm:unit": unit, "xdm:unitCount": 1},
        }
    ]
    placement, offer, decision = library(repo, principal, container, caps)
    assert chosen(decisions, principal, container, placement, decision) == offer
    clock.moment += timedelta(minutes=30)
    assert chosen(decisions, principal, container, placement, decision) is None
    # Saturday 23:00 + 1 h is Sunday 00:00 (a new day and a new week); the month turns
    # on December 1st, two days later.
    clock.moment = datetime(2026, 11, 28, 23, 0, tzinfo=UTC) + until_reset - timedelta(seconds=1)
    assert chosen(decisions, principal, container, placement, decision) is None
    clock.moment += timedelta(seconds=1)
    assert chosen(decisions, principal, container, placement, decision) == offer


def test_two_day_periods_hold_for_two_days(world):
    _, clock, principal, container, repo, decisions = world
    caps = [{"xdm:limit": 1, "xdm:repeat": {"xdm:unit": "day", "xdm:unitCount": 2}}]
    placement, offer, decision = library(repo, principal, container, caps)
    results = []
    for _ in range(5):
        results.append(chosen(decisions, principal, container, placement, decision) == offer)
        clock.moment += timedelta(days=1)
    # Two-day periods are aligned on the calendar: day 20785 since 1970-01-01 (Nov 28) ends
    # a period, so Nov 29–30 and Dec 1–2 are the next two periods.
    assert results == [True, True, False, True, False]

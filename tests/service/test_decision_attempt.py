"""A decision's attempt: the record's reservation checks caps that count propositions, and
a refused reservation makes the service decide again (real stores: SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from nextoffer.service.auth import Principal
from nextoffer.service.decisions import DecisionCall, Decisions
from nextoffer.service.repository import Repository
from nextoffer.settings import Settings
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.store import Store
from support.backends import emptied_database, redis_url

NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


class Clock:
    """Moves on by a millisecond per reading: decisions are recorded in order."""

    def __init__(self) -> None:
        self.moment = NOW

    def __call__(self) -> datetime:
        self.moment += timedelta(milliseconds=1)
        return self.moment


@dataclass
class World:
    no: NextOffer
    store: Store
    principal: Principal
    container: str
    repo: Repository
    decisions: Decisions
    refusals: list[None]


def settings(url: str, *, redis: str | None = None) -> Settings:
    return Settings(db_url=url, redis_url=redis, catalog_check_seconds=0, freeze_heap=False)


def open_world(url: str) -> World:
    refusals: list[None] = []
    no = NextOffer.open(settings(url), clock=Clock(), on_refused=lambda: refusals.append(None))
    creds = no.bootstrap(org="O@AdobeOrg", sandbox="prod")
    return World(
        no, no.store, creds.principal, creds.container_id, no.repository, no.decisions, refusals
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'n.db'}" if request.param == "sqlite" else emptied_database()
    opened = open_world(url)
    yield opened
    opened.no.close()


@dataclass(frozen=True)
class Library:
    placement: str
    capped: str  # xdm:profileCap 1, the higher priority
    next: str  # uncapped
    decision: str


def library(world: World, *, low_capped: bool = False) -> Library:
    """``capped`` (priority 10, a profile cap of 1) before ``next`` (5, no cap); with
    ``low_capped``, a third offer after both, capped too, that top-1 never reaches."""

    def make(object_type: ObjectType, body: dict[str, object]) -> str:
        ref = SchemaRef(object_type, None, "")
        return world.repo.create(world.principal, world.container, ref, body).at_id

    placement = make(PLACEMENT, {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML})
    reps = [
        {"xdm:placement": placement, "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
    ]

    def offer(name: str, priority: int, **extra: object) -> str:
        body = {
            "xdm:name": name,
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:rank": {"xdm:priority": priority},
        }
        return make(PERSONALIZED_OFFER, {**body, **extra})

    capped = offer("capped", 10, **{"xdm:cappingConstraint": {"xdm:profileCap": 1}})
    following = offer("next", 5)
    members = [capped, following]
    if low_capped:
        members.append(offer("low", 1, **{"xdm:cappingConstraint": {"xdm:profileCap": 1}}))
    fallback = make(
        FALLBACK_OFFER, {"xdm:name": "f", "xdm:status": "approved", "xdm:representations": reps}
    )
    collection = make(COLLECTION, {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": members})
    decision = make(
        DECISION,
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [{"xdm:optionSelection": {"xdm:filter": collection}}],
        },
    )
    return Library(placement, capped, following, decision)


def chosen(
    world: World, lib: Library, *, identity: str = "a@x", dry_run: bool = False
) -> str | None:
    call = DecisionCall(
        propositions=(PropositionRequest(lib.decision, lib.placement),),
        identities=[("Email", identity)],
        dry_run=dry_run,
    )
    outcome = world.decisions.decide(world.principal, world.container, call)
    proposition = outcome.result.propositions[0]
    return proposition.options[0].offer_id if proposition.options else None


def recorded(world: World) -> list[list[str]]:
    """The offers of every recorded decision, oldest first."""
    with world.store.session() as session:
        events = session.runtime.decision_events(world.container, since_us=0, limit=100)
    return [[o["id"] for p in e["propositions"] for o in p["options"]] for e in events]


def test_a_full_profile_cap_refuses_the_record_and_the_next_offer_is_proposed(
    world: World,
) -> None:
    lib = library(world)
    assert chosen(world, lib) == lib.capped
    assert world.refusals == []
    # The capped offer's counter is not read up front (the reservation checks it): the
    # service proposes it again, the record's reservation is refused, it decides again.
    assert chosen(world, lib) == lib.next
    assert len(world.refusals) == 1
    assert recorded(world) == [[lib.capped], [lib.next]]
    # The cap is per profile: another profile still gets the capped offer.
    assert chosen(world, lib, identity="b@x") == lib.capped
    assert len(world.refusals) == 1


def test_a_dry_run_proposes_no_full_offer_and_is_never_refused(world: World) -> None:
    lib = library(world)
    assert chosen(world, lib) == lib.capped  # the profile's cap is now full
    # The dry run first picks the capped offer, finds its counter full, decides again.
    assert chosen(world, lib, dry_run=True) == lib.next
    assert world.refusals == []  # a dry run's check is not a refused reservation
    assert recorded(world) == [[lib.capped]]


def test_a_dry_run_reads_only_the_counters_of_what_it_would_propose(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = library(world, low_capped=True)
    read: list[str] = []
    counts = world.no.path.counts

    def spying(keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        read.extend(key.offer_id for key in keys)
        return counts(keys)

    monkeypatch.setattr(world.no.path, "counts", spying)
    assert chosen(world, lib, dry_run=True) == lib.capped
    assert read == [lib.capped]  # not the low offer's counter: top 1 never reaches it


def test_a_dry_run_reserves_nothing(world: World) -> None:
    lib = library(world)
    assert chosen(world, lib, dry_run=True) == lib.capped
    assert chosen(world, lib, dry_run=True) == lib.capped
    assert recorded(world) == []
    assert chosen(world, lib) == lib.capped  # the cap's one unit is still free
    assert world.refusals == []


# -- whether decisions can run on an event loop ------------------------------------------
# The decision path strategy the root chose declares it (``DecisionPath.inline``).


def test_decisions_run_inline_on_sqlite_with_its_own_counters(tmp_path: Path) -> None:
    with NextOffer.open(settings(f"sqlite:///{tmp_path / 'n.db'}")) as no:
        assert no.path.inline


def test_decisions_do_not_run_inline_with_counters_in_redis(tmp_path: Path) -> None:
    with NextOffer.open(settings(f"sqlite:///{tmp_path / 'n.db'}", redis=redis_url())) as no:
        assert not no.path.inline


def test_decisions_do_not_run_inline_on_postgres() -> None:
    with NextOffer.open(settings(emptied_database())) as no:
        assert not no.path.inline

"""A decision's attempt: the record's reservation checks caps that count propositions, and
a refused reservation makes the service decide again (real stores: SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nextoffer.cli.demo import HTML, WEB
from nextoffer.engine import PropositionRequest
from nextoffer.errors import BadRequest
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
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.sqlite_path import SqlitePath
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
    #: The event loop of decisions decided on one (``decide_async``).
    runner: asyncio.Runner


def settings(url: str, *, redis: str | None = None, check_seconds: float = 0) -> Settings:
    # Decisions on a loop await PostgreSQL there (the ``on_loop`` path under test).
    return Settings(
        db_url=url,
        redis_url=redis,
        catalog_check_seconds=check_seconds,
        freeze_heap=False,
    )


def open_world(url: str, *, redis: str | None = None, check_seconds: float = 0) -> World:
    refusals: list[None] = []
    no = NextOffer.open(
        settings(url, redis=redis, check_seconds=check_seconds),
        clock=Clock(),
        on_refused=lambda: refusals.append(None),
    )
    creds = no.bootstrap(org="O@AdobeOrg", sandbox="prod")
    return World(
        no,
        no.store,
        creds.principal,
        creds.container_id,
        no.repository,
        no.decisions,
        refusals,
        asyncio.Runner(),
    )


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+redis"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'n.db'}" if request.param == "sqlite" else emptied_database()
    opened = open_world(url, redis=redis_url() if request.param.endswith("redis") else None)
    yield opened
    # What the decisions opened on the loop closes on it (as the HTTP app's lifespan).
    opened.runner.run(opened.no.aclose())
    opened.runner.close()


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


@pytest.fixture(params=["thread", "loop"])
def on_loop(request: pytest.FixtureRequest) -> bool:
    """Decide in this thread (``decide``) or on an event loop (``decide_async``: on
    PostgreSQL, the path's ``on_loop`` coroutines)."""
    return bool(request.param == "loop")


def chosen(
    world: World,
    lib: Library,
    *,
    identity: str = "a@x",
    dry_run: bool = False,
    on_loop: bool = False,
) -> str | None:
    call = DecisionCall(
        propositions=(PropositionRequest(lib.decision, lib.placement),),
        identities=[("Email", identity)],
        dry_run=dry_run,
    )
    outcome = (
        world.runner.run(world.decisions.decide_async(world.principal, world.container, call))
        if on_loop
        else world.decisions.decide(world.principal, world.container, call)
    )
    proposition = outcome.result.propositions[0]
    return proposition.options[0].offer_id if proposition.options else None


def recorded(world: World) -> list[list[str]]:
    """The offers of every recorded decision, oldest first."""
    with world.store.session() as session:
        events = session.runtime.decision_events(world.container, since_us=0, limit=100)
    return [[o["id"] for p in e["propositions"] for o in p["options"]] for e in events]


def test_a_full_profile_cap_refuses_the_record_and_the_next_offer_is_proposed(
    world: World, on_loop: bool
) -> None:
    lib = library(world)
    assert chosen(world, lib, on_loop=on_loop) == lib.capped
    assert world.refusals == []
    # The capped offer's counter is not read up front (the reservation checks it): the
    # service proposes it again, the record's reservation is refused, it decides again.
    assert chosen(world, lib, on_loop=on_loop) == lib.next
    assert len(world.refusals) == 1
    assert recorded(world) == [[lib.capped], [lib.next]]
    # The cap is per profile: another profile still gets the capped offer.
    assert chosen(world, lib, identity="b@x", on_loop=on_loop) == lib.capped
    assert len(world.refusals) == 1


def test_a_dry_run_proposes_no_full_offer_and_is_never_refused(world: World, on_loop: bool) -> None:
    lib = library(world)
    assert chosen(world, lib, on_loop=on_loop) == lib.capped  # the profile's cap is now full
    # The dry run first picks the capped offer, finds its counter full, decides again.
    assert chosen(world, lib, dry_run=True, on_loop=on_loop) == lib.next
    assert world.refusals == []  # a dry run's check is not a refused reservation
    assert recorded(world) == [[lib.capped]]


def test_a_dry_run_reads_only_the_counters_of_what_it_would_propose(
    world: World, on_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = library(world, low_capped=True)
    read: list[str] = []
    loop_path = world.no.path.on_loop
    if on_loop and loop_path is not None:  # awaited on the loop: spy on the coroutine
        awaited = loop_path.counts

        async def spying_on_loop(keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
            read.extend(key.offer_id for key in keys)
            return await awaited(keys)

        monkeypatch.setattr(loop_path, "counts", spying_on_loop)
    else:
        counts = world.no.path.counts

        def spying(keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
            read.extend(key.offer_id for key in keys)
            return counts(keys)

        monkeypatch.setattr(world.no.path, "counts", spying)
    assert chosen(world, lib, dry_run=True, on_loop=on_loop) == lib.capped
    assert read == [lib.capped]  # not the low offer's counter: top 1 never reaches it


def test_a_dry_run_reserves_nothing(world: World, on_loop: bool) -> None:
    lib = library(world)
    assert chosen(world, lib, dry_run=True, on_loop=on_loop) == lib.capped
    assert chosen(world, lib, dry_run=True, on_loop=on_loop) == lib.capped
    assert recorded(world) == []
    assert chosen(world, lib, on_loop=on_loop) == lib.capped  # the cap's one unit is still free
    assert world.refusals == []


@pytest.fixture(params=["postgresql", "postgresql+redis"])
def checked_world(request: pytest.FixtureRequest) -> Iterator[World]:
    """A PostgreSQL world whose snapshots are checked once a minute (no version read
    between the decisions of a test)."""
    redis = redis_url() if request.param.endswith("redis") else None
    opened = open_world(emptied_database(), redis=redis, check_seconds=60)
    yield opened
    opened.runner.run(opened.no.aclose())
    opened.runner.close()


def test_a_decision_on_a_loop_reads_and_records_on_the_loop_on_postgres(
    checked_world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL (with or without Redis) the path declares ``on_loop``: a decision on
    an event loop awaits its reads and its record there — no thread runs any of it."""
    world = checked_world
    assert world.no.path.on_loop is not None
    lib = library(world)
    chosen(world, lib, identity="warm@x")  # snapshot and tenancy known: no read left

    def in_a_thread(*args: object, **kwargs: object) -> object:
        raise AssertionError("a decision on the loop ran a blocking read")

    # Blocking reads: the path's (PostgreSQL) and the counter store's (Redis). A record
    # is still handed to the writer thread's queue (no wait), and awaited on the loop.
    for name in ("profile", "events", "counts"):
        monkeypatch.setattr(world.no.path, name, in_a_thread)
    for name in ("read", "reserve", "release"):
        monkeypatch.setattr(world.no.counters, name, in_a_thread)
    handed: list[object] = []
    submit = world.no.executor.submit

    def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        handed.append(fn)
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(world.no.executor, "submit", counted)
    assert chosen(world, lib, on_loop=True) == lib.capped
    assert chosen(world, lib, on_loop=True) == lib.next  # refused on the loop, decided again
    assert handed == []
    assert len(world.refusals) == 1
    assert recorded(world)[-2:] == [[lib.capped], [lib.next]]


def test_a_record_the_database_refuses_is_a_bad_request_decided_once(
    tmp_path: Path, on_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refused reservation or an unreachable store makes the service decide again; a
    # value the database refuses would be refused again: its 400 goes out at once,
    # instead of a 503 after every round. SQLite refuses the record of request "refuse".
    world = open_world(f"sqlite:///{tmp_path / 'n.db'}")
    lib = library(world)
    tries: list[str] = []
    write = SqlitePath._write_batch

    def refusing(conn: sqlite3.Connection, records: list[DecisionRecord], **kw: Any) -> Any:
        ids = [(r.body or {}).get("decisionRequestId") for r in records]
        tries.extend(i for i in ids if i is not None)
        if "refuse" in ids:
            raise sqlite3.DataError("a value SQLite refuses")
        return write(conn, records, **kw)

    monkeypatch.setattr(SqlitePath, "_write_batch", staticmethod(refusing))
    call = DecisionCall(
        propositions=(PropositionRequest(lib.decision, lib.placement),),
        identities=[("Email", "a@x")],
        decision_request_id="refuse",
    )
    try:
        with pytest.raises(BadRequest):
            if on_loop:
                world.runner.run(
                    world.decisions.decide_async(world.principal, world.container, call)
                )
            else:
                world.decisions.decide(world.principal, world.container, call)
        assert tries == ["refuse"]
        assert recorded(world) == []
        assert chosen(world, lib, on_loop=on_loop) == lib.capped  # the cap was not taken
    finally:
        world.runner.run(world.no.aclose())
        world.runner.close()


def test_a_record_the_database_cannot_write_is_answered_unrecorded_with_caps_closed(
    tmp_path: Path, on_loop: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database cannot take the record (gone, its disk failing): the decision is made
    # again with every capped offer as capped, and that one, which reserves nothing, is
    # answered without its record (docs/deploy.md), instead of a 503 after every round.
    world = open_world(f"sqlite:///{tmp_path / 'n.db'}")
    lib = library(world)
    tries: list[list[str]] = []

    def failing(conn: sqlite3.Connection, records: list[DecisionRecord], **kw: Any) -> Any:
        tries.extend(r.proposed_offers for r in records)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SqlitePath, "_write_batch", staticmethod(failing))
    try:
        assert chosen(world, lib, on_loop=on_loop) == lib.next
        assert tries == [[lib.capped], [lib.next]]  # with the capped offer, then without
        monkeypatch.undo()
        assert recorded(world) == []
        assert chosen(world, lib, on_loop=on_loop) == lib.capped  # its cap was not taken
        assert recorded(world) == [[lib.capped]]
    finally:
        world.runner.run(world.no.aclose())
        world.runner.close()


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
        assert no.path.on_loop is not None  # but awaited on the loop


def test_decisions_on_a_loop_await_postgres_and_redis_there() -> None:
    with NextOffer.open(settings(emptied_database(), redis=redis_url())) as no:
        assert not no.path.inline
        assert no.path.on_loop is not None


def test_sqlite_with_redis_counters_has_no_loop_form(tmp_path: Path) -> None:
    # SQLite's reads are inline, not awaitable: with Redis its decisions use the pool.
    with NextOffer.open(settings(f"sqlite:///{tmp_path / 'n.db'}", redis=redis_url())) as no:
        assert no.path.on_loop is None

"""A change made elsewhere is refreshed in the background: decisions never wait for it.

The cache under test is a second :class:`CatalogCache` on the root's database, so the
root's repository writes are, for it, writes made by another worker; its rule compiler
blocks while ``gate`` is closed (a refresh that takes long).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nextoffer import pql
from nextoffer.ids import utcnow
from nextoffer.repository.objects import RULE, SchemaRef
from nextoffer.root import NextOffer
from nextoffer.service.catalogs import CatalogCache, Snapshot
from nextoffer.service.compiled_rules import CompiledRules
from nextoffer.settings import Settings


class Clock:
    """A monotonic clock the test moves: past the check interval when it wants a check."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def check_now(self) -> None:
        self.now += 60.0


class World:
    def __init__(self, no: NextOffer) -> None:
        self.no = no
        creds = no.bootstrap(org="REFRESH@AdobeOrg", sandbox="prod")
        self.principal, self.container = creds.principal, creds.container_id
        self.gate = threading.Event()
        self.gate.set()
        self.compiling = threading.Event()
        self.clock = Clock()

        def compile_rule(source: Any, **kwargs: Any) -> pql.CompiledRule:
            self.compiling.set()
            assert self.gate.wait(20), "the test never opened the gate"
            return pql.compile(source, **kwargs)

        self.cache = CatalogCache(
            no.store,
            path=no.path,
            clock=utcnow,
            rules=CompiledRules(None, compile_rule=compile_rule),
            check_interval=30.0,
            monotonic=self.clock,
            wait=10.0,
        )

    def add_rule(self, n: int) -> str:
        """A rule with a new text (so a refresh must compile it), written by the root:
        for ``cache``, a write made elsewhere."""
        condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": f"age > {n}"}
        body = {"xdm:name": f"r{n}", "xdm:condition": condition}
        schema = SchemaRef(RULE, None, "")
        return self.no.repository.create(self.principal, self.container, schema, body).at_id

    def slow_refreshes(self) -> None:
        self.compiling.clear()
        self.gate.clear()

    def stored_version(self) -> int:
        return self.no.path.library_version(self.container)

    def refreshed(self, version: int, timeout: float = 10) -> Snapshot:
        """The cache's snapshot once it holds ``version`` (asked without a version check)."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.cache.get(self.container)
            if snapshot.version >= version or time.monotonic() > deadline:
                return snapshot
            time.sleep(0.01)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'r.db'}", freeze_heap=False, rule_cache="")
    with NextOffer.open(settings) as no:
        world = World(no)
        try:
            yield world
        finally:
            world.gate.set()
            world.cache.close()


def test_a_decision_during_a_slow_refresh_is_answered_from_the_old_snapshot(
    world: World,
) -> None:
    world.add_rule(1)
    old = world.cache.get(world.container)
    assert len(old.instances) == 1
    world.slow_refreshes()
    new_rule = world.add_rule(2)
    world.clock.check_now()
    began = time.monotonic()
    during = world.cache.get(world.container)  # finds the change, starts the refresh
    assert during is old
    assert world.compiling.wait(5)  # the refresh is running, blocked on the new rule
    world.clock.check_now()
    assert world.cache.get(world.container) is old
    assert world.cache.ready(world.container) is old  # the loop's no-IO path too
    assert time.monotonic() - began < 1.0  # nobody waited for the refresh
    world.gate.set()
    fresh = world.refreshed(world.stored_version())
    assert fresh.version == world.stored_version()
    assert new_rule in fresh.instances


def test_a_write_through_this_process_is_waited_for(world: World) -> None:
    world.add_rule(1)
    world.cache.get(world.container)
    world.slow_refreshes()
    new_rule = world.add_rule(2)
    world.cache.invalidate(world.container)  # what this process's repository does
    began = time.monotonic()
    threading.Timer(0.3, world.gate.set).start()
    snapshot = world.cache.get(world.container)
    # It waited for the refresh (the gate opens 0.3 s after ``began``, at the earliest).
    assert world.gate.is_set()
    assert time.monotonic() - began >= 0.3
    assert new_rule in snapshot.instances
    assert snapshot.version == world.stored_version()


def test_a_change_seen_during_a_refresh_is_refreshed_right_after_it(world: World) -> None:
    world.add_rule(1)
    old = world.cache.get(world.container)
    world.slow_refreshes()
    world.add_rule(2)
    world.clock.check_now()
    assert world.cache.get(world.container) is old  # refresh 1 starts, and blocks
    assert world.compiling.wait(5)
    third = world.add_rule(3)  # written while refresh 1 runs on what it read before
    world.clock.check_now()
    assert world.cache.get(world.container) is old  # seen: a newer version is wanted
    world.gate.set()
    # No further version check (the clock stays within the interval): the cache itself
    # follows refresh 1 with another.
    fresh = world.refreshed(world.stored_version())
    assert fresh.version == world.stored_version()
    assert third in fresh.instances


def test_a_decision_naming_an_object_the_snapshot_lacks_waits_for_the_newer_one(
    world: World,
) -> None:
    world.add_rule(1)
    old = world.cache.get(world.container)
    world.slow_refreshes()
    new_rule = world.add_rule(2)
    threading.Timer(0.3, world.gate.set).start()
    fresh = world.cache.newer(world.container, old)
    assert fresh is not None
    assert new_rule in fresh.instances


def test_a_build_shortens_the_switch_interval_and_restores_it(world: World) -> None:
    import sys

    from nextoffer.service import catalogs

    before = sys.getswitchinterval()
    world.add_rule(1)
    world.cache.get(world.container)
    world.slow_refreshes()
    world.add_rule(2)
    world.clock.check_now()
    world.cache.get(world.container)
    assert world.compiling.wait(5)  # a refresh is running on the builder thread
    assert sys.getswitchinterval() == pytest.approx(catalogs.BUILD_SWITCH_INTERVAL)
    world.gate.set()
    world.refreshed(world.stored_version())
    deadline = time.monotonic() + 5
    while sys.getswitchinterval() != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sys.getswitchinterval() == before


def test_a_pace_gives_the_interpreter_to_a_waiting_thread_and_a_busy_loop_does_not() -> None:
    """The mechanism a refresh relies on: with the switch interval far longer than the
    work, a thread that wants the interpreter gets it during the work only when the work
    calls a :class:`Pace` (the same loop without one is the control)."""
    import sys

    from nextoffer.service.catalogs import Pace

    def other_thread_ran_during(work: Any) -> bool:
        woke: list[float] = []
        ready = threading.Event()

        def other() -> None:
            ready.set()
            time.sleep(0.02)  # wants the interpreter back while ``work`` runs
            woke.append(time.perf_counter())

        thread = threading.Thread(target=other)
        thread.start()
        assert ready.wait(5)
        end = time.perf_counter() + 0.3
        work(end)
        finished = time.perf_counter()
        thread.join(5)
        return bool(woke) and woke[0] < finished

    def busy(end: float) -> None:
        while time.perf_counter() < end:
            pass

    def paced(end: float) -> None:
        pace = Pace(0.001)
        while time.perf_counter() < end:
            pace()
        assert pace.pauses > 10

    before = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        assert not other_thread_ran_during(busy)
        assert other_thread_ran_during(paced)
    finally:
        sys.setswitchinterval(before)


def test_a_refresh_beside_decisions_pauses_and_a_first_build_does_not(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nextoffer.service import catalogs

    monkeypatch.setattr(catalogs, "BUILD_STEP", 0.0)  # a pause at every pause point
    world.add_rule(1)
    first = world.cache.get(world.container)
    assert world.cache.last_pace is None  # nobody was answered from a snapshot meanwhile
    new_rule = world.add_rule(2)
    world.clock.check_now()
    world.cache.get(world.container)
    fresh = world.refreshed(world.stored_version())
    assert fresh is not first and new_rule in fresh.instances
    pace = world.cache.last_pace
    assert pace is not None and pace.pauses >= 10
    # The refreshed snapshot is the one a build from scratch gives.
    scratch = catalogs.build_snapshot(world.cache.image(world.container), built=fresh.built)
    assert sorted(scratch.catalog.offers) == sorted(fresh.catalog.offers)
    assert dict(scratch.instances) == dict(fresh.instances)
    assert scratch.version == fresh.version

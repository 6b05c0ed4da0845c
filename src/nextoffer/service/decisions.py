"""The Decisions use case: one profile, several proposition requests, one answer.

1. Read the profile (one indexed read; its recent events only when some rule names
   ``xEvent``). Tenancy is checked once per container and process (a container never
   changes hands).
2. Read the counters of capping rules that a reservation does not check (impressions,
   clicks, custom events); dry runs and explained decisions read every counter.
3. Decide in memory from the container's compiled snapshot.
4. Unless it is a dry run: record the decision, *reserving* the counters of what was
   proposed — all of them stay within their limits or none is taken. A refused reservation
   names the full counters: the service then reads every count and decides again. Caps are
   therefore exact under any concurrency (``attempt.py``).

The decision path (``storage/decision_path.py``) is the strategy the root chose, and it
declares how an event loop drives it: with ``on_loop`` (PostgreSQL, with or without
Redis) :meth:`Decisions.decide_async` awaits every
read and the record on the loop (the attempt's ``run``); when it is ``inline`` (SQLite)
it decides on the loop with the path's own methods; otherwise it reads and decides in
the root's thread pool. Either way
the record is awaited on the loop: no thread waits for a commit.

A profile store that cannot be read decides for an empty profile; counters that cannot be
read count every capped offer as capped (caps fail closed). Neither fails the request.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, wait
from datetime import datetime
from typing import Any

import numpy as np

from nextoffer.engine import DecisionRequest
from nextoffer.engine.strategy import Learned
from nextoffer.errors import NextOfferError, NotFound, Unavailable
from nextoffer.ids import epoch_micros
from nextoffer.logs import Throttled
from nextoffer.service.attempt import Attempt, DecisionCall, DecisionOutcome
from nextoffer.service.auth import Principal
from nextoffer.service.cap_plan import CapPlan
from nextoffer.service.catalogs import CatalogCache, Snapshot
from nextoffer.service.learning import Learning
from nextoffer.service.offload import finished, in_pool, in_thread
from nextoffer.service.profile_cache import ProfileCache
from nextoffer.service.profiles import profile_key, resolve_profile_id
from nextoffer.service.repository import Repository
from nextoffer.storage.decision_path import DecisionPath, OnLoop
from nextoffer.storage.store import Store

__all__ = ["EVENT_LIMIT", "DecisionCall", "DecisionOutcome", "Decisions", "profile_key"]

log = logging.getLogger("nextoffer.decisions")
#: One line every ten seconds while the database is away, not one per decision.
_PROFILE_AWAY = Throttled(log)

#: Most recent experience events of a profile that rules see through ``xEvent``.
EVENT_LIMIT = 1000

_rngs = threading.local()


def _thread_generator() -> np.random.Generator:
    """One numpy generator per thread (ranking strategies sample with it), seeded once
    from the OS."""
    generator: np.random.Generator | None = getattr(_rngs, "generator", None)
    if generator is None:
        generator = _rngs.generator = np.random.default_rng()
    return generator


def _thread_rng() -> random.Random:
    """One generator per thread, seeded once from the OS: ``random.Random()`` per decision
    read 2.5 KB from the OS each time, and ties need no fresh seed per request."""
    rng: random.Random | None = getattr(_rngs, "rng", None)
    if rng is None:
        rng = _rngs.rng = random.Random()
    return rng


class Decisions:
    def __init__(
        self,
        store: Store,
        *,
        path: DecisionPath,
        repository: Repository,
        catalogs: CatalogCache,
        clock: Callable[[], datetime],
        executor: Executor | None = None,
        rng_factory: Callable[[], random.Random] | None = None,
        on_refused: Callable[[], None] | None = None,
        learning: Learning | None = None,
        generator_factory: Callable[[], np.random.Generator] | None = None,
        profile_cache: ProfileCache | None = None,
    ) -> None:
        self._store = store
        #: Profiles kept in memory, following the change sequence (``profile_cache.py``).
        self._profile_cache = profile_cache
        #: The decision path's reads and record writes (group commits on SQLite).
        self._path = path
        self._executor = executor
        self._on_refused = on_refused
        #: Container -> (org, sandbox), for containers this process has seen: a container
        #: never changes hands, so tenancy is checked without a database read per decision.
        self._owners: dict[str, tuple[str, str]] = {}
        self._repository = repository
        self._catalogs = catalogs
        self._clock = clock
        self._rng_factory = rng_factory or _thread_rng
        #: What ranking strategies learned, read per container (``learning.py``).
        self._learning = learning or Learning(store)
        self._generator_factory = generator_factory or _thread_generator

    # -- deciding --------------------------------------------------------------------

    def decide(
        self,
        principal: Principal,
        container_id: str,
        call: DecisionCall,
        *,
        profile: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
    ) -> DecisionOutcome:
        """Decide, waiting in this thread; ``profile``/``events`` given directly replace the
        stored profile (simulation)."""
        snapshot = self.snapshot(principal, container_id)
        try:
            attempt = self._begin(
                principal, container_id, call, snapshot, profile=profile, events=events
            )
        except NotFound:
            fresh = self._catalogs.newer(container_id, snapshot)
            if fresh is None:
                raise
            attempt = self._begin(
                principal, container_id, call, fresh, profile=profile, events=events
            )
        while attempt.waiting is not None:
            if not attempt.waiting.done():  # a lone caller wrote its own record already
                wait([in_thread(attempt.waiting)])
            attempt.settle()
        return attempt.outcome()

    async def decide_async(
        self, principal: Principal, container_id: str, call: DecisionCall
    ) -> DecisionOutcome:
        """Decide from a running event loop, and await the record there: its batch is
        committed by the decision path's writer, and no worker thread waits for it. How
        the reads run is the path's declaration: with ``on_loop`` (PostgreSQL) every read
        is awaited on the loop; with an ``inline`` path (SQLite) the decision runs on the
        loop too; otherwise its reads run in the pool."""
        snapshot = await self.snapshot_async(principal, container_id)
        try:
            return await self._decide_async(principal, container_id, call, snapshot)
        except NotFound:
            # An object the snapshot lacks may be new: decide again on a newer one, if any.
            fresh = await in_pool(self._executor, self._catalogs.newer, container_id, snapshot)
            if fresh is None:
                raise
            return await self._decide_async(principal, container_id, call, fresh)

    async def _decide_async(
        self, principal: Principal, container_id: str, call: DecisionCall, snapshot: Snapshot
    ) -> DecisionOutcome:
        on_loop = self._path.on_loop
        if on_loop is not None:
            events = None if snapshot.reads_events else ()
            profile_id, attributes, read = await self._profile_on_loop(
                on_loop, principal, call, events
            )
            learned = self._learning.ready(container_id, snapshot.catalog)
            if learned is None:  # due for a check: a database read, in the pool
                learned = await in_pool(
                    self._executor, self._learning.learned, container_id, snapshot.catalog
                )
            attempt = self._attempt(
                container_id, call, snapshot, profile_id, attributes, read, learned
            )
            return await attempt.run(on_loop)
        inline = self._path.inline
        if inline:
            attempt = self._begin(principal, container_id, call, snapshot)
        else:
            attempt = await in_pool(
                self._executor, self._begin, principal, container_id, call, snapshot
            )
        while attempt.waiting is not None:
            await finished(attempt.waiting)  # settle() reads the outcome, errors included
            if inline or attempt.recorded:
                attempt.settle()
            else:  # refused or failed: settle() reads counts and decides again
                await in_pool(self._executor, attempt.settle)
        return attempt.outcome()

    def _begin(
        self,
        principal: Principal,
        container_id: str,
        call: DecisionCall,
        snapshot: Snapshot,
        *,
        profile: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
    ) -> Attempt:
        """Read, decide and hand the record to the writer; the :class:`Attempt` finishes it."""
        if events is None and not snapshot.reads_events:
            events = ()  # no rule looks at them: skip reading up to EVENT_LIMIT events
        profile_id, attributes, events = self._profile(principal, call, profile, events)
        attempt = self._attempt(
            container_id,
            call,
            snapshot,
            profile_id,
            attributes,
            events,
            self._learning.learned(container_id, snapshot.catalog),
        )
        attempt.start()
        return attempt

    def _attempt(
        self,
        container_id: str,
        call: DecisionCall,
        snapshot: Snapshot,
        profile_id: str | None,
        attributes: Mapping[str, Any] | None,
        events: Sequence[Mapping[str, Any]],
        learned: Mapping[str, Learned],
    ) -> Attempt:
        """The decision of ``call`` for this profile, not started."""
        key = profile_key(profile_id, call.identities)
        request = DecisionRequest(
            propositions=call.propositions,
            allow_duplicates_across_activities=call.allow_duplicates_across_activities,
            allow_duplicates_across_placements=call.allow_duplicates_across_placements,
            profile=attributes or {},
            events=events,
            context=call.context,
            explain=call.explain,
        )
        now = self._clock()
        plan = CapPlan(container_id, snapshot, call.propositions, key, now)
        return Attempt(
            self._path,
            container_id,
            snapshot,
            call,
            request,
            plan,
            profile_id=profile_id,
            profile_key=key,
            now=now,
            rng=self._rng_factory,
            on_refused=self._on_refused,
            learned=learned,
            generator=self._generator_factory,
        )

    def stored_profile(
        self, principal: Principal, namespace: str, identity: str
    ) -> tuple[str, Mapping[str, Any]] | None:
        """The stored profile of one identity, (profile id, attributes), from the profile
        cache or one read of the decision path (then kept); ``None`` when none is stored."""
        key = (principal.org, principal.sandbox, namespace, identity)
        cache = self._profile_cache
        found = cache.get(key) if cache is not None else None
        if found is None:
            ticket = cache.ticket() if cache is not None else 0
            found = self._path.profile(*key)
            if found is not None and cache is not None:
                cache.put(key, ticket, found)
        return found

    def _profile(
        self,
        principal: Principal,
        call: DecisionCall,
        profile: Mapping[str, Any] | None,
        events: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[str | None, Mapping[str, Any] | None, Sequence[Mapping[str, Any]]]:
        if not call.identities:
            return None, profile, events or []
        try:
            if len(call.identities) == 1 and profile is None:
                # The usual request: identity and attributes in one indexed read.
                found = self.stored_profile(principal, *call.identities[0])
                profile_id, attributes = found if found is not None else (None, None)
                if events is None:
                    events = self._path.events(profile_id, limit=EVENT_LIMIT) if profile_id else []
                return profile_id, attributes, events
            with self._store.session() as session:
                runtime = session.runtime
                profile_id = resolve_profile_id(runtime, principal, list(call.identities))
                given: Mapping[str, Any] | None = (
                    profile
                    if profile is not None
                    else (runtime.profile_attributes(profile_id) if profile_id else None)
                )
                if events is None:
                    events = (
                        runtime.recent_events(profile_id, limit=EVENT_LIMIT) if profile_id else []
                    )
        except Unavailable as exc:
            _PROFILE_AWAY.error("profile store unavailable; deciding for an empty profile: %s", exc)
            return None, None, []
        return profile_id, given, events

    async def _profile_on_loop(
        self,
        on_loop: OnLoop,
        principal: Principal,
        call: DecisionCall,
        events: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[str | None, Mapping[str, Any] | None, Sequence[Mapping[str, Any]]]:
        """:meth:`_profile` of a stored profile, awaited on the loop for the usual request
        (one identity); several identities are resolved through a session, in the pool."""
        if not call.identities:
            return None, None, events or []
        if len(call.identities) != 1:
            return await in_pool(self._executor, self._profile, principal, call, None, events)
        namespace, identity = call.identities[0]
        key = (principal.org, principal.sandbox, namespace, identity)
        cache = self._profile_cache
        try:
            found = cache.get(key) if cache is not None else None
            if found is None:
                ticket = cache.ticket() if cache is not None else 0
                found = await on_loop.profile(*key)
                if found is not None and cache is not None:
                    cache.put(key, ticket, found)
            profile_id, attributes = found if found is not None else (None, None)
            if events is None:
                events = await on_loop.events(profile_id, limit=EVENT_LIMIT) if profile_id else []
        except Unavailable as exc:
            _PROFILE_AWAY.error("profile store unavailable; deciding for an empty profile: %s", exc)
            return None, None, []
        return profile_id, attributes, events

    # -- snapshots and the decision log ----------------------------------------------

    def snapshot(self, principal: Principal, container_id: str) -> Snapshot:
        owner = self._owners.get(container_id)
        if owner is None:
            with self._store.session() as session:
                record = self._repository.container(session, principal, container_id)
            self._owners[container_id] = (record.org_id, record.sandbox)
        elif owner != (principal.org, principal.sandbox):
            raise NotFound(f"container {container_id} does not exist")
        return self._catalogs.get(container_id)

    async def snapshot_async(self, principal: Principal, container_id: str) -> Snapshot:
        """:meth:`snapshot` from an event loop: at once when that needs no IO (tenancy
        known, snapshot checked recently or checkable inline), else in the pool (tenancy
        check or version check: database reads)."""
        snapshot = self._ready_snapshot(principal, container_id)
        if snapshot is None:
            snapshot = await in_pool(self._executor, self.snapshot, principal, container_id)
        return snapshot

    def _ready_snapshot(self, principal: Principal, container_id: str) -> Snapshot | None:
        """The container's snapshot when getting it needs no IO (tenancy known, snapshot
        checked recently), else ``None``: then :meth:`snapshot` reads the database."""
        if self._owners.get(container_id) != (principal.org, principal.sandbox):
            return None
        return self._catalogs.ready(container_id)

    def warm(self) -> int:
        """Start building every container's snapshot (a server starting), so that the
        first decisions of a worker do not wait for all of it; the number of builds
        started (on the snapshots' builder thread: this returns at once). A container
        whose snapshot cannot be built is left for its first decision to report."""
        with self._store.session() as session:
            container_ids = session.container_ids()
        started = 0
        for container_id in container_ids:
            try:
                self._catalogs.start(container_id)
            except NextOfferError as exc:
                log.warning("snapshot of container %s not built at start: %s", container_id, exc)
                continue
            started += 1
        return started

    def decision_events(
        self, principal: Principal, container_id: str, *, since: datetime, limit: int
    ) -> list[dict[str, Any]]:
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
            return session.runtime.decision_events(
                container_id, since_us=epoch_micros(since), limit=limit
            )

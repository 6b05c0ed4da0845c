"""Compiled catalog snapshots, one per container, rebuilt when the library changes.

Decisions never read the library per request. Each container has an immutable
:class:`~nextoffer.engine.Catalog`; a decision checks the container's ``library_version``
(one indexed read) at most every ``check_interval`` seconds, so a write is visible to
decisions in every process within that interval plus a rebuild. A rebuild whose rules or
formulas fail to compile keeps the last good snapshot and is reported by diagnostics.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from immutables import Map

from nextoffer import pql
from nextoffer.engine import Catalog, CatalogError, CatalogErrorKind, CatalogInstance, build_catalog
from nextoffer.errors import Unavailable
from nextoffer.ids import format_datetime
from nextoffer.service.compiled_rules import CompiledRules
from nextoffer.service.heap import bulk_heap, settle_heap, settle_young
from nextoffer.storage.decision_path import DecisionPath
from nextoffer.storage.library_read import LibraryReader
from nextoffer.storage.store import Store

log = logging.getLogger(__name__)

#: Errors that make a new snapshot unusable: keep serving the previous one.
_BLOCKING = frozenset({CatalogErrorKind.INVALID_RULE, CatalogErrorKind.INVALID_FORMULA})


@dataclass(slots=True)
class Snapshot:
    catalog: Catalog
    version: int
    #: When the last build finished (RFC 3339), and what it found wrong.
    built: str
    errors: tuple[CatalogError, ...]
    checked_at: float = 0.0
    #: Offers whose counting restarted, and how often (their counters carry the epoch).
    cap_epochs: dict[str, int] = field(default_factory=dict)
    #: Per (activities, placements) of a request: the capping rules it may touch, built once
    #: per snapshot by the decision service (``service/decisions.py``).
    cap_plans: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    #: The instances of the newest build by @id (diagnostics link to them): a persistent
    #: map, so a refresh makes the next one by replacing only the changed entries.
    instances: Mapping[str, CatalogInstance] = field(default_factory=Map)
    #: The library version ``instances`` were read at: the next refresh reads the writes
    #: after it (``LibraryReader.changes``).
    read_version: int = 0
    #: The newest build when it was not installed (its rules failed): the next refresh
    #: builds on it, since ``instances`` are its.
    newest: Catalog | None = None
    #: Whether any rule or formula of the catalog mentions ``xEvent``: when none does, a
    #: decision need not read the profile's experience events.
    reads_events: bool = True


@dataclass(frozen=True, slots=True)
class LibraryImage:
    """A container's library as stored at one version: what a snapshot is compiled from.
    Plain data (picklable): batch workers and Spark executors compile their own snapshot
    from it (:func:`build_snapshot`), so every worker decides on the same library."""

    container_id: str
    version: int
    instances: tuple[CatalogInstance, ...]
    cap_epochs: dict[str, int]
    #: The tenant's segment definitions: id -> PQL text (offers' segment constraints may
    #: name them; a definition's write bumps the library version of the tenant's containers).
    segments: dict[str, str] = field(default_factory=dict)


def build_snapshot(
    image: LibraryImage,
    *,
    built: str,
    checked_at: float = 0.0,
    compile_rule: Callable[..., pql.CompiledRule] = pql.compile,
) -> Snapshot:
    """Compile ``image`` into a :class:`Snapshot` (``compile_rule`` compiles each rule and
    formula: a cache, or :func:`nextoffer.pql.compile`)."""
    mentions_events = False

    def compile_tracked(
        source: Any, *, format: str = "pql/text", kind: str = "rule"
    ) -> pql.CompiledRule:
        # Every rule and formula the catalog evaluates is compiled here; a source that
        # names xEvent (even inside a string: conservative) makes decisions read events.
        nonlocal mentions_events
        text = source if isinstance(source, str) else orjson.dumps(source).decode()
        mentions_events = mentions_events or "xEvent" in text
        return compile_rule(source, format=format, kind=kind)

    catalog = build_catalog(image.instances, compile_rule=compile_tracked, segments=image.segments)
    return Snapshot(
        catalog=catalog,
        version=image.version,
        built=built,
        errors=catalog.errors,
        checked_at=checked_at,
        cap_epochs=image.cap_epochs,
        instances=Map({i.at_id: i for i in image.instances}),
        read_version=image.version,
        reads_events=mentions_events,
    )


#: Deferred rules compiled per builder task after a first build.
COMPILE_BATCH = 200
#: After an incremental rebuild, the whole heap is collected (``settle_heap``) only once
#: the frozen objects have grown by this factor since the last full collection: such a
#: collection holds the interpreter for as long as it takes to scan the whole library,
#: and a refresh that shares the previous snapshot leaves almost nothing frozen behind
#: it (figures in docs/benchmarks.md), so it is what bounds memory, not a schedule.
FROZEN_GROWTH = 1.25
#: Rules a container's first build compiles before it defers the rest to their first
#: evaluation (``CompiledRules.deferred``) and to a complete build right after.
EAGER_RULES = 100


#: The interpreter's switch interval while a build runs (s): a decision that needs the
#: interpreter while the builder holds it gets it after this long, not after the default
#: 5 ms (a refresh at Adobe's guardrail holds it for milliseconds of Python).
BUILD_SWITCH_INTERVAL = 0.0005
_yielding_lock = threading.Lock()
_yielding_depth = [0, 0.005]


#: A build that runs while decisions are answered (a refresh, the complete build after a
#: first one, deferred rules compiling) gives the interpreter away after at most this much
#: of its work (s, wall clock): a decision that arrives meanwhile waits for the end of one
#: such step rather than for a switch interval, and the builder takes the interpreter
#: from a decision only after a whole one (see :class:`Pace`).
BUILD_STEP = 0.0001


class Pace:
    """The pause points of a build: called between small pieces of its work (the
    engine's ``build_catalog(pause=…)``, between this module's reads), it releases the
    interpreter once ``step`` seconds have passed since it last did.

    The release is ``time.sleep(0)``: a system call that gives a thread waiting for the
    interpreter (the event loop with a decision to answer) the time to take it (the
    sleep uses no CPU; the caches refilled after it do, docs/benchmarks.md). With the
    interpreter given away at least every ``step``, a decision waits at most one step
    for it; and since the builder asks for it back only when the sleep ends, its wait
    for the interpreter (at most a switch interval) is what it pays, not the decision.
    ``pauses`` counts the releases, ``longest`` is the longest stretch seen between two
    calls (s): what a decision may have waited.
    """

    __slots__ = ("_last", "_since", "longest", "pauses", "step")

    def __init__(self, step: float = BUILD_STEP) -> None:
        self.step = step
        self.pauses = 0
        self.longest = 0.0
        self._since = self._last = time.perf_counter()

    def __call__(self) -> None:
        now = time.perf_counter()
        if now - self._last > self.longest:
            self.longest = now - self._last
        if now - self._since >= self.step:
            time.sleep(0)
            self.pauses += 1
            now = self._since = time.perf_counter()
        self._last = now


def _no_pause() -> None:
    return None


@contextlib.contextmanager
def yielding() -> Iterator[None]:
    """Run the block with the interpreter's switch interval at ``BUILD_SWITCH_INTERVAL``
    (restored afterwards; nested or concurrent blocks share one change)."""
    with _yielding_lock:
        if _yielding_depth[0] == 0:
            _yielding_depth[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(BUILD_SWITCH_INTERVAL, _yielding_depth[1]))
        _yielding_depth[0] += 1
    try:
        yield
    finally:
        with _yielding_lock:
            _yielding_depth[0] -= 1
            if _yielding_depth[0] == 0:
                sys.setswitchinterval(_yielding_depth[1])


class CatalogCache:
    """Snapshots by container, built and refreshed by one builder thread.

    * The first snapshot of a container is built on the builder thread; a decision that
      needs it waits up to ``wait`` seconds, then gets :class:`Unavailable` (503 with
      ``Retry-After``) rather than a wrong answer.
    * A change made through this process (:meth:`invalidate`) is waited for (up to
      ``wait``), so a client reads its own writes from this worker.
    * A change made elsewhere (another worker or node) is found by the version check; the
      refresh starts on the builder thread and decisions go on being answered from the
      current snapshot meanwhile (never waiting for it): the new snapshot replaces the
      old one in one assignment when it is built. A decision naming an object the current
      snapshot lacks waits for the newer one (:meth:`newer`).
    * A refresh reads only the instances written after the library version its snapshot
      was read at (``LibraryReader.changes``) and rebuilds from the previous catalog
      (``build_catalog(previous=…, changed=…, removed=…)``), sharing its persistent
      maps: its cost follows the change, not the library.
    """

    def __init__(
        self,
        store: Store,
        *,
        path: DecisionPath,
        clock: Callable[[], datetime],
        check_interval: float = 0.25,
        monotonic: Callable[[], float] = time.monotonic,
        on_rebuild: Callable[[], None] | None = None,
        freeze_heap: bool = False,
        rules: CompiledRules | None = None,
        wait: float = 10.0,
    ) -> None:
        self._store = store
        #: Version checks read through the decision path (a driver read on SQLite).
        self._path = path
        self._freeze_heap = freeze_heap
        self._on_rebuild = on_rebuild
        self._clock = clock
        self._interval = check_interval
        self._monotonic = monotonic
        self._wait = wait
        #: The newest library version seen per container (by a version check or a build):
        #: a build that read an older one is followed by another (``_built``).
        self._wanted: dict[str, int] = {}
        self._snapshots: dict[str, Snapshot] = {}
        #: Containers this process wrote to since their snapshot was built.
        self._written: set[str] = set()
        #: Compiled rules by (source, format, kind), shared by every rebuild: a change to one
        #: offer must not recompile ten thousand rules.
        self.rules = rules or CompiledRules()
        self._builds: dict[str, Future[Snapshot]] = {}
        self._guard = threading.Lock()
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="nextoffer-catalog")
        self._closing = threading.Event()
        #: Objects frozen by the last full collection, and by young settles since
        #: (``FROZEN_GROWTH``).
        self._frozen_full = 0
        self._frozen_since = 0
        #: A build's reads: one driver statement on a connection of the builder's.
        self._reader = LibraryReader(store)
        #: The pause points of the last build that ran beside decisions (``Pace``).
        self.last_pace: Pace | None = None

    def close(self) -> None:
        """Start no other build; a running one compiles nothing more (its remaining
        rules are deferred), so closing never waits for a library to compile."""
        self._closing.set()
        self._builder.shutdown(wait=True, cancel_futures=True)
        self._reader.close()

    def start(self, container_id: str) -> None:
        """Start building the container's snapshot if it has none or an old one (a worker
        starting); returns at once."""
        version = self._path.library_version(container_id)
        snapshot = self._snapshots.get(container_id)
        if snapshot is None or snapshot.version < version:
            self._build(container_id, version)

    def invalidate(self, container_id: str) -> None:
        """Check the library version on the next ``get`` and wait for the rebuild (this
        process just wrote: its next decision must see the write)."""
        snapshot = self._snapshots.get(container_id)
        if snapshot is not None:
            with self._guard:
                self._written.add(container_id)
            snapshot.checked_at = float("-inf")

    def newer(self, container_id: str, snapshot: Snapshot) -> Snapshot | None:
        """A snapshot newer than ``snapshot``, waited for (up to the cache's ``wait``), when
        the stored library has moved on since it was built; else ``None``. For a decision
        that names an object ``snapshot`` lacks: it may have just been written elsewhere,
        and a 404 must not come from a snapshot that a refresh is replacing."""
        try:
            if self._path.library_version(container_id) <= snapshot.version:
                return None
        except Unavailable:
            return None
        self.invalidate(container_id)  # get() then waits for the build, not the short wait
        fresh = self.get(container_id)
        return fresh if fresh.version > snapshot.version else None

    def ready(self, container_id: str) -> Snapshot | None:
        """The current snapshot when that needs no waiting: checked within the interval,
        or its version checked now by an ``inline`` read (SQLite) — when that finds the
        library changed elsewhere, a refresh is started and the current snapshot is still
        the answer. ``None`` when :meth:`get` must be asked (no snapshot yet, this process
        wrote, or the version is not readable inline)."""
        snapshot = self._snapshots.get(container_id)
        if snapshot is None:
            return None
        now = self._monotonic()
        if now - snapshot.checked_at < self._interval:
            return snapshot
        if not self._path.inline or container_id in self._written:
            return None
        try:
            version = self._path.library_version(container_id)
        except Unavailable:
            return None
        snapshot.checked_at = now
        if version > snapshot.version:  # changed elsewhere: refreshed in the background
            self._refresh(container_id, version)
        return snapshot

    def get(self, container_id: str, *, wait: float | None = None) -> Snapshot:
        """The container's current snapshot (the caller has checked tenancy). Waits for a
        build only for a first snapshot or after a write through this process (``wait``
        bounds it; default: the cache's ``wait``); a change made elsewhere starts a
        refresh and is answered from the current snapshot meanwhile."""
        snapshot = self._snapshots.get(container_id)
        now = self._monotonic()
        written = container_id in self._written
        if snapshot is not None and not written and now - snapshot.checked_at < self._interval:
            return snapshot
        try:
            version = self._path.library_version(container_id)
        except Unavailable:
            if snapshot is None:
                raise
            # The database is gone for now: keep deciding from the last snapshot.
            snapshot.checked_at = now
            return snapshot
        if snapshot is not None and (snapshot.version >= version or not written):
            # Current, or changed elsewhere: refreshed in the background meanwhile.
            snapshot.checked_at = now
            if snapshot.version < version:
                self._refresh(container_id, version)
            return snapshot
        build = self._build(container_id, version)
        deadline = self._monotonic() + (self._wait if wait is None else wait)
        try:
            while True:
                built = build.result(timeout=max(0.0, deadline - self._monotonic()))
                if built.version >= version:
                    return built
                build = self._build(container_id, version)  # began before the change
        except FutureTimeout:
            if snapshot is not None:  # a slow refresh: the last snapshot meanwhile
                snapshot.checked_at = self._monotonic()
                return snapshot
            raise Unavailable(
                f"the library of container {container_id} is still being compiled "
                "(a worker that just started); retry shortly",
                retry_after=max(1, math.ceil(self._wait)),
            ) from None

    def _refresh(self, container_id: str, version: int) -> None:
        """Start a refresh towards ``version`` without waiting for it (nothing when the
        process is stopping)."""
        with contextlib.suppress(Unavailable):
            self._build(container_id, version)

    def _build(self, container_id: str, version: int) -> Future[Snapshot]:
        """The running build of the container, or a new one on the builder thread; a
        running one that read an older version is followed by another (``_built``)."""
        with self._guard:
            if version > self._wanted.get(container_id, 0):
                self._wanted[container_id] = version
            running = self._builds.get(container_id)
            if running is not None and not running.done():
                return running
            try:
                build = self._builder.submit(self._rebuild, container_id, version)
            except RuntimeError:  # closed: the process is stopping
                raise Unavailable("the server is shutting down", retry_after=1) from None
            self._builds[container_id] = build
        build.add_done_callback(lambda done: self._built(container_id, done))
        return build

    def _built(self, container_id: str, build: Future[Snapshot]) -> None:
        """After a build: another when a newer version was seen meanwhile (a change made
        elsewhere while it ran must not wait for the next version check). A finished
        build is not kept: its snapshot would stay alive with it after a later one (the
        complete build after a first one) replaced it."""
        with self._guard:
            if self._builds.get(container_id) is build:
                del self._builds[container_id]
        if build.cancelled() or build.exception() is not None or self._closing.is_set():
            return
        wanted = self._wanted.get(container_id, 0)
        if wanted > build.result().version:
            self._refresh(container_id, wanted)

    def _later(self, task: Callable[..., Any], *args: Any) -> None:
        """Queue ``task`` on the builder thread (nothing once closing)."""
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self._builder.submit(task, *args)

    def _compile_deferred(
        self, container_id: str, version: int, sources: list[tuple[str, str, str]]
    ) -> None:
        """Compile a first build's deferred rules, ``COMPILE_BATCH`` per builder task so a
        refresh queued meanwhile runs between two batches; then the complete build (every
        rule compiled, any that no longer compiles reported)."""
        batch, rest = sources[:COMPILE_BATCH], sources[COMPILE_BATCH:]
        pace = Pace(BUILD_STEP)  # decisions are answered meanwhile
        for source, fmt, kind in batch:
            pace()
            if self._closing.is_set():
                return
            with contextlib.suppress(Exception):  # a broken one is reported by the build
                self.rules.get(source, format=fmt, kind=kind)
        if rest:
            self._later(self._compile_deferred, container_id, version, rest)
        else:
            self._later(self._complete, container_id, version)

    def _complete(self, container_id: str, version: int) -> None:
        self._rebuild(container_id, version, complete=True)

    def image(self, container_id: str) -> LibraryImage:
        """The container's library as stored now, read in one transaction."""
        with self._store.session() as session:
            version = session.library_version(container_id)
            records = session.all_instances(container_id)
            epochs = session.cap_epochs(container_id)
            container = session.get_container_by_id(container_id)
            segments = (
                session.batch.segment_expressions(container.org_id, container.sandbox)
                if container is not None
                else {}
            )
        instances = tuple(
            CatalogInstance(r.schema_id, r.at_id, r.instance_id, r.etag, r.body) for r in records
        )
        return LibraryImage(container_id, version, instances, epochs, segments)

    def _rebuild(self, container_id: str, version: int, *, complete: bool = False) -> Snapshot:
        """Build the container's snapshot (on the builder thread). ``complete``: from
        scratch, every rule compiled (the build after a first one that deferred some).

        A container's first build has no decisions to give way to: it runs under
        :func:`~nextoffer.service.heap.bulk_heap` (young collections every 50,000
        allocations, nothing before it rescanned), and what it made is then frozen without
        a full collection — the first decision is answered before one; the growth rule
        (``FROZEN_GROWTH``), or the complete build after a first one that deferred rules,
        brings it later."""
        first = self._freeze_heap and not complete and container_id not in self._snapshots
        with yielding():
            if not first:
                return self._rebuild_now(container_id, version, complete=complete)
            with bulk_heap():
                snapshot = self._rebuild_now(container_id, version, complete=False, settle=False)
            self._frozen_full, self._frozen_since = settle_young(0), 0
            return snapshot

    def _rebuild_now(
        self, container_id: str, version: int, *, complete: bool, settle: bool = True
    ) -> Snapshot:
        """:meth:`_rebuild`'s work; ``settle``: the heap after it too (not for a first
        build, which :meth:`_rebuild` settles)."""
        current = self._snapshots.get(container_id)
        with self._guard:
            self._written.discard(container_id)
        if current is not None and current.version >= version and not complete:
            current.checked_at = self._monotonic()
            return current
        # Decisions are answered from the current snapshot meanwhile: give them the
        # interpreter between small steps (a first build has nobody to give way to).
        pace = Pace(BUILD_STEP) if current is not None else _no_pause
        if complete:
            current = None
        known = current.instances if current is not None else Map()
        if known:
            assert current is not None
            # One statement: the version now, the cap epochs, the segment definitions and
            # what was written since the version ``known`` was read at, and only that.
            state = self._reader.changes(container_id, current.read_version)
            fetched = {
                a: CatalogInstance(s, a, i, e, b)
                for a, s, i, e, b in state.written
                if s is not None and i is not None and e is not None
            }
            removed = [a for a, s, _, _, _ in state.written if s is None and a in known]
        else:
            state = self._reader.everything(container_id)
            fetched = {a: CatalogInstance(s, a, i, e, b) for a, s, i, e, b in state.written}  # type: ignore[arg-type]
            removed = []
        version, epochs, segments = state.version, state.cap_epochs, state.segments
        pace()
        if known:  # the unchanged ones shared with the previous build
            mutation = Map(known).mutate() if not isinstance(known, Map) else known.mutate()
            for at_id in removed:
                del mutation[at_id]
            for at_id, instance in fetched.items():
                mutation[at_id] = instance
            instances: Mapping[str, CatalogInstance] = mutation.finish()
        else:
            instances = Map(fetched)
        pace()
        mentions_events = current is not None and current.reads_events
        #: A first build compiles up to EAGER_RULES rules itself; the rest wait.
        eager = EAGER_RULES if current is None and not complete else None
        deferred: list[tuple[str, str, str]] = []

        def compile_rule(source: Any, *, format: str = "pql/text", kind: str = "rule") -> Any:
            # A CompiledRule, or (first builds) a Deferred one: the engine needs ``evaluate``.
            # Every rule and formula the build compiles (rather than reuses) comes here; a
            # source that names xEvent (even inside a string: conservative) makes decisions
            # read events. Reused ones were counted by the build that compiled them.
            nonlocal mentions_events, eager, deferred
            text = source if isinstance(source, str) else orjson.dumps(source).decode()
            mentions_events = mentions_events or "xEvent" in text
            if (
                (eager is not None or self._closing.is_set())
                and isinstance(source, str)
                and not self.rules.known(source, format=format, kind=kind)
            ):
                if eager is None or eager <= 0 or self._closing.is_set():
                    deferred.append((source, format, kind))
                    return self.rules.deferred(source, format=format, kind=kind)
                eager -= 1
            return self.rules.get(source, format=format, kind=kind)

        previous = (current.newest or current.catalog) if current is not None and known else None
        if previous is not None:  # only what changed is built again
            catalog = build_catalog(
                instances,
                compile_rule=compile_rule,
                previous=previous,
                changed=list(fetched),
                removed=removed,
                segments=segments,
                pause=pace,
            )
        else:
            catalog = build_catalog(
                instances.values(), compile_rule=compile_rule, segments=segments, pause=pace
            )
        eager = None  # later calls (explain's sub-rules) compile at once
        pace()
        self.rules.save()
        if self._on_rebuild is not None:
            self._on_rebuild()
        built = format_datetime(self._clock())
        blocking = [e for e in catalog.errors if e.kind in _BLOCKING]
        if blocking and current is not None:
            # Keep deciding with the last good catalog; diagnostics report the failure.
            current.errors = catalog.errors
            current.cap_epochs = epochs
            current.instances = instances
            current.read_version = version
            current.newest = catalog
            current.built = built
            current.version = version
            current.checked_at = self._monotonic()
            return current
        snapshot = Snapshot(
            catalog=catalog,
            version=version,
            built=built,
            errors=catalog.errors,
            checked_at=self._monotonic(),
            cap_epochs=epochs,
            instances=instances,
            read_version=version,
            reads_events=mentions_events,
        )
        self._snapshots[container_id] = snapshot
        if deferred and not self._closing.is_set():
            log.info(
                "container %s: first snapshot with %d rules compiled on first use; "
                "compiling them all now",
                container_id,
                len(deferred),
            )
            self._later(self._compile_deferred, container_id, version, deferred)
        if isinstance(pace, Pace):
            pace()
            self.last_pace = pace
        if self._freeze_heap and settle:
            if previous is None or self._frozen_since > self._frozen_full * (FROZEN_GROWTH - 1):
                settle_heap()
                self._frozen_full, self._frozen_since = gc.get_freeze_count(), 0
            else:
                self._frozen_since += settle_young()
        return snapshot

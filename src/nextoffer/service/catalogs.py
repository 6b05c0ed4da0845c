"""Compiled catalog snapshots, one per container, rebuilt when the library changes.

Decisions never read the library per request. Each container has an immutable
:class:`~nextoffer.engine.Catalog`; a decision checks the container's ``library_version``
(one indexed read) at most every ``check_interval`` seconds, so a write is visible to
decisions in every process within that interval plus a rebuild. A rebuild whose rules or
formulas fail to compile keeps the last good snapshot and is reported by diagnostics.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from nextoffer import pql
from nextoffer.engine import Catalog, CatalogError, CatalogErrorKind, CatalogInstance, build_catalog
from nextoffer.errors import Unavailable
from nextoffer.ids import format_datetime
from nextoffer.storage.decision_path import DecisionPath
from nextoffer.storage.store import Store

#: Distinct compiled rules and formulas kept across rebuilds (per process).
COMPILED_CACHE_SIZE = 50_000
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
    #: The instances of the newest build by @id (diagnostics link to them).
    instances: dict[str, CatalogInstance] = field(default_factory=dict)
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
        instances={i.at_id: i for i in image.instances},
        reads_events=mentions_events,
    )


def settle_heap() -> None:
    """Collect garbage once, then hide every live object from the cyclic collector.

    A compiled library is tens of thousands of long-lived objects (rules, code, indexes)
    that every full collection would scan again; frozen, a collection no longer sees
    them (figures in docs/benchmarks.md, ``bench/decision_path.py``). Frozen objects are
    still freed by reference counting; the collect first (after thawing what an earlier
    call froze) frees the cycles of replaced snapshots, so nothing accumulates. Costs one
    full collection per rebuild, on the thread that rebuilt.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class CatalogCache:
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
    ) -> None:
        self._store = store
        #: Version checks read through the decision path (a driver read on SQLite).
        self._path = path
        self._freeze_heap = freeze_heap
        self._on_rebuild = on_rebuild
        self._clock = clock
        self._interval = check_interval
        self._monotonic = monotonic
        self._snapshots: dict[str, Snapshot] = {}
        #: Compiled rules by (source, format, kind), shared by every rebuild: a change to one
        #: offer must not recompile ten thousand rules (compiling costs milliseconds each).
        self._compiled: dict[tuple[str, str, str], pql.CompiledRule] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _compile(
        self, source: Any, *, format: str = "pql/text", kind: str = "rule"
    ) -> pql.CompiledRule:
        if not isinstance(source, str):
            return pql.compile(source, format=format, kind=kind)
        key = (source, format, kind)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = pql.compile(source, format=format, kind=kind)
            if len(self._compiled) >= COMPILED_CACHE_SIZE:
                self._compiled.clear()
            self._compiled[key] = compiled
        return compiled

    def invalidate(self, container_id: str) -> None:
        """Check the library version on the next ``get`` (this process just wrote)."""
        snapshot = self._snapshots.get(container_id)
        if snapshot is not None:
            snapshot.checked_at = float("-inf")

    def ready(self, container_id: str) -> Snapshot | None:
        """The current snapshot when that needs no waiting: checked within the interval,
        or its version checked now by an ``inline`` read (SQLite). ``None`` when a rebuild
        is due or the check would wait: then :meth:`get`."""
        snapshot = self._snapshots.get(container_id)
        if snapshot is None:
            return None
        now = self._monotonic()
        if now - snapshot.checked_at < self._interval:
            return snapshot
        if not self._path.inline:
            return None
        try:
            version = self._path.library_version(container_id)
        except Unavailable:
            return None
        if version != snapshot.version:
            return None
        snapshot.checked_at = now
        return snapshot

    def get(self, container_id: str) -> Snapshot:
        """The container's current snapshot (the caller has checked tenancy)."""
        snapshot = self._snapshots.get(container_id)
        now = self._monotonic()
        if snapshot is not None and now - snapshot.checked_at < self._interval:
            return snapshot
        try:
            version = self._path.library_version(container_id)
        except Unavailable:
            if snapshot is None:
                raise
            # The database is gone for now: keep deciding from the last snapshot.
            snapshot.checked_at = now
            return snapshot
        if snapshot is not None and snapshot.version == version:
            snapshot.checked_at = now
            return snapshot
        return self._rebuild(container_id, version)

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

    def _rebuild(self, container_id: str, version: int) -> Snapshot:
        with self._guard:
            lock = self._locks.setdefault(container_id, threading.Lock())
        with lock:
            current = self._snapshots.get(container_id)
            if current is not None and current.version >= version:
                current.checked_at = self._monotonic()
                return current
            image = self.image(container_id)
            snapshot = build_snapshot(
                image,
                built=format_datetime(self._clock()),
                checked_at=self._monotonic(),
                compile_rule=self._compile,
            )
            if self._on_rebuild is not None:
                self._on_rebuild()
            blocking = [e for e in snapshot.errors if e.kind in _BLOCKING]
            if blocking and current is not None:
                # Keep deciding with the last good catalog; diagnostics report the failure.
                current.errors = snapshot.errors
                current.cap_epochs = snapshot.cap_epochs
                current.instances = snapshot.instances
                current.built = snapshot.built
                current.version = snapshot.version
                current.checked_at = self._monotonic()
                return current
            self._snapshots[container_id] = snapshot
            if self._freeze_heap:
                settle_heap()
            return snapshot

"""The decision path's reads and writes: a profile, its counters, one record per decision
(and the repository's read of one instance, the other request that reads by key).

Decisions are the hot path: every request reads a profile (and maybe its events) and the
counters of its capped candidates, and every recorded decision writes — before it is
answered — only what a crash must not lose: one decision event and, when it proposes capped
offers, the reservations of their counters. The offers report is derived from the events
behind the answer (``report_fold.py``). :class:`DecisionPath` names those operations; the
composition root (``nextoffer.root``) picks one strategy per process and the service uses
only this protocol:

* ``SqlitePath`` (``sqlite_path.py``; the embedded default) and ``PgPath``
  (``pg_path.py``; PostgreSQL): driver reads, records group-committed
  (``group_commit.py``: what a batch writes is decided once for both).
* :class:`CountersElsewhere` wraps either when cap counters live outside the database
  (Redis): it reserves there first, then records, and releases if the record fails; a
  batch job's records reserve many to a round trip and are group-committed together.

A strategy declares what it can do: ``inline`` (an event loop may call its methods
itself: SQLite), and ``on_loop``, its round trips as coroutines of the running loop
(:class:`OnLoop`: PostgreSQL's reads on asynchronous connections, Redis through its
asyncio client), so a decision on a loop awaits them there without a thread hop. A path
with neither is driven from the root's thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from nextoffer.errors import NextOfferError
from nextoffer.logs import Throttled
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage.counters import CapCounterStore, CounterKey, LoopCounters

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("nextoffer.storage")
#: One line every ten seconds while records fail, not one per decision.
_NOT_RECORDED = Throttled(log)

#: A record's outcome to come: a thread-safe future, or — for a record queued on the
#: running event loop, which writes it on that loop's own thread — the loop's own future
#: (created, resolved and awaited there: no lock per step).
Pending: TypeAlias = "Future[list[CounterKey]] | asyncio.Future[list[CounterKey]]"


#: Not frozen, as every object made once per decision on the decision route: ``frozen=True``
#: makes ``__init__`` call ``object.__setattr__`` per field, which showed in the route's
#: CPU (docs/benchmarks.md, "The lean record"). Nothing changes a record once made.
@dataclass(slots=True)
class DecisionRecord:
    """What one recorded decision writes."""

    proposition_id: str
    container_id: str
    created: str  # RFC 3339, UTC
    created_us: int
    profile_key: str
    #: The decision event's body; ``None`` writes no decision event (a batch decision:
    #: its event is its row in the job's dataset) but still reserves and reports.
    body: Mapping[str, Any] | None
    #: Offers proposed (one proposition each in the offers report, folded from the event;
    #: written with the record when there is no event), with their UTC day.
    day: str
    proposed_offers: Sequence[str]
    #: Counters to reserve first, with their limits: all are taken, or nothing is written.
    reserve: Sequence[tuple[CounterKey, int]] = ()


class OnLoop(Protocol):
    """A decision path's round trips as coroutines of the running event loop: awaiting
    one never blocks the loop, and no thread runs it (``DecisionPath.on_loop``). Each
    has the contract of the :class:`DecisionPath` method of the same name; ``record``
    returns the refused counters (``[]`` once committed) or raises a NextOfferError."""

    async def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None: ...

    async def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]: ...

    async def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]: ...

    async def record(self, record: DecisionRecord) -> list[CounterKey]: ...

    async def aclose(self) -> None:
        """Close what the running loop holds (the root's asynchronous close)."""
        ...


class DecisionPath(Protocol):
    #: True when no method waits on another process (local reads that never wait for a
    #: writer, records queued rather than written). An event loop may then call them
    #: itself; otherwise they belong in a worker thread, or in :attr:`on_loop`.
    inline: bool
    #: The path's round trips as coroutines of the running loop, when it has them: a
    #: decision on a loop then awaits every read and its record there (no thread hop).
    on_loop: OnLoop | None

    def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The profile one identity names, and its attributes."""
        ...

    def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The profile's newest ``limit`` experience events, oldest first."""
        ...

    def library_version(self, container_id: str) -> int:
        """The container's library version (bumped by every instance write)."""
        ...

    def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        """Current counts of cap counters, wherever they live (missing counters are absent)."""
        ...

    def instance(
        self, org: str, sandbox: str, container_id: str, instance_id: str, *, by_at_id: bool = False
    ) -> tuple[bool, InstanceRecord | None]:
        """Whether the container is this org and sandbox's, and then the instance in it
        (named by its ``@id`` instead when ``by_at_id``)."""
        ...

    def record(self, record: DecisionRecord) -> Pending:
        """Reserve and write; resolves to ``[]`` once committed, or to the counters that
        were at their limits (then nothing was written). Fails with a NextOfferError.
        Called on a running event loop, a strategy may answer with that loop's own future
        (only the loop's thread then waits for it, by awaiting)."""
        ...

    def record_many(self, items: Sequence[tuple[DecisionRecord, Future[list[CounterKey]]]]) -> None:
        """:meth:`record` for many records at once, each with the future the caller made
        for it (resolved as :meth:`record`'s would be): one hand-off to the writer for a
        batch job's chunk instead of one per record."""
        ...

    def fold(self) -> None:
        """Fold every decision event recorded so far into the offers report
        (``report_fold.py``): afterwards the report counts every decision recorded before
        the call. The writer folds on its own turns too; a report read calls this first."""
        ...

    def close(self) -> None:
        """Write what is queued, fold what is left, close the connections."""
        ...


class CountersElsewhere:
    """A decision path whose cap counters live in another store (Redis).

    A record reserves its counters there first — a refusal or an unreachable store is
    the record's outcome, nothing written — then ``path`` writes it without them. If
    that write fails the reservation is released and the decision stands (it was
    answered from counters that had room). Reads of counters go to the counter store.
    """

    #: The counter store is a network round trip.
    inline = False

    def __init__(self, path: DecisionPath, counters: CapCounterStore) -> None:
        self._path = path
        self._counters = counters
        #: On a loop when both the path and the counter store can be awaited there.
        self.on_loop: OnLoop | None = (
            _ElsewhereOnLoop(path.on_loop, counters.on_loop)
            if path.on_loop is not None and counters.on_loop is not None
            else None
        )

    def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        return self._path.profile(org, sandbox, namespace, identity)

    def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        return self._path.events(profile_id, limit=limit)

    def library_version(self, container_id: str) -> int:
        return self._path.library_version(container_id)

    def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        return self._counters.read(keys)

    def instance(
        self, org: str, sandbox: str, container_id: str, instance_id: str, *, by_at_id: bool = False
    ) -> tuple[bool, InstanceRecord | None]:
        return self._path.instance(org, sandbox, container_id, instance_id, by_at_id=by_at_id)

    def record(self, record: DecisionRecord) -> Pending:
        future: Future[list[CounterKey]] = Future()
        try:
            refused = self._counters.reserve(record.reserve)
        except NextOfferError as exc:
            future.set_exception(exc)
            return future
        if refused:
            future.set_result(refused)
            return future
        written = self._path.record(replace(record, reserve=()))
        written.add_done_callback(partial(self._written, record, future))
        return future

    def _written(
        self, record: DecisionRecord, future: Future[list[CounterKey]], written: Pending
    ) -> None:
        """A reserved record's write ended: the decision stands (``[]``) whether it was
        written or not; if not, its reservation is released."""
        error = written.exception() if not written.cancelled() else None
        if written.cancelled() or error is not None:
            _NOT_RECORDED.error("decision %s not recorded: %s", record.proposition_id, error)
            if record.reserve:
                try:
                    self._counters.release([key for key, _ in record.reserve])
                except NextOfferError as exc:
                    log.error("reservation of %s not released: %s", record.proposition_id, exc)
        future.set_result([])

    def record_many(self, items: Sequence[tuple[DecisionRecord, Future[list[CounterKey]]]]) -> None:
        """:meth:`record` for a batch job's records, group-committed: their reservations
        taken together (the counter store's ``reserve_many``: one round trip, each
        record's counters all or none, in order), then the records it took handed to the
        path together (its ``record_many``: the writer's batch transactions), each
        released if its write fails. A refusal, or the store's error, is a record's
        outcome as with :meth:`record`."""
        capped = [(record, future) for record, future in items if record.reserve]
        answers: list[list[CounterKey] | NextOfferError]
        try:
            wanted = [record.reserve for record, _ in capped]
            answers = self._counters.reserve_many(wanted) if capped else []
        except NextOfferError as exc:  # unreachable: every capped record hears of it
            answers = [exc] * len(capped)
        taken = [(record, future) for record, future in items if not record.reserve]
        for (record, future), answer in zip(capped, answers, strict=True):
            if isinstance(answer, NextOfferError):
                future.set_exception(answer)
            elif answer:
                future.set_result(answer)
            else:
                taken.append((record, future))
        writes: list[tuple[DecisionRecord, Future[list[CounterKey]]]] = []
        for record, future in taken:
            written: Future[list[CounterKey]] = Future()
            written.add_done_callback(partial(self._written, record, future))
            writes.append((replace(record, reserve=()), written))
        if writes:
            self._path.record_many(writes)

    def fold(self) -> None:
        self._path.fold()

    def close(self) -> None:
        """The wrapped path's (the counter store is closed by its owner)."""
        self._path.close()


class _ElsewhereOnLoop:
    """:class:`CountersElsewhere` on the running loop: the counter store's asynchronous
    client for counts and reservations, the wrapped path's coroutines for the rest."""

    def __init__(self, path: OnLoop, counters: LoopCounters) -> None:
        self._path = path
        self._counters = counters

    async def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        return await self._path.profile(org, sandbox, namespace, identity)

    async def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        return await self._path.events(profile_id, limit=limit)

    async def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        return await self._counters.read(keys)

    async def record(self, record: DecisionRecord) -> list[CounterKey]:
        """As :meth:`CountersElsewhere.record`: reserve, then write without the
        counters; a failed write releases the reservation and the decision stands. A
        record that reserves nothing (no capped offer proposed) goes straight to the
        path: no round trip to the counter store."""
        reserved = record.reserve
        if reserved:
            refused = await self._counters.reserve(reserved)
            if refused:
                return refused
            record = replace(record, reserve=())
        try:
            await self._path.record(record)
        except Exception as error:
            _NOT_RECORDED.error("decision %s not recorded: %s", record.proposition_id, error)
            if reserved:
                try:
                    await self._counters.release([key for key, _ in reserved])
                except NextOfferError as exc:
                    log.error("reservation of %s not released: %s", record.proposition_id, exc)
        return []

    async def aclose(self) -> None:
        await self._counters.aclose()
        await self._path.aclose()

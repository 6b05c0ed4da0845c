"""Deciding a chunk of an audience: the code every batch engine runs, in each local
worker process and in each Spark partition.

For each profile of the chunk, in profile id order: is it in the audience (the segment's
PQL, evaluated on its attributes — and its events when the expression names ``xEvent``)?
Then decide exactly as an online decision does, through the one decision path
(``attempt.Attempt``): the engine decides from the snapshot, and the record *reserves* the
counters of what it proposes — all or none — before anything counts; a refused record is
decided again on the current counts. Records are queued as they are made and written by the
decision path's group commit (a Spark task's by its job's ledger, which writes a row per
profile with the reservations, or beside their ledger in Redis when the counters are
there: ``storage.ledger.DecisionLedger``); the chunk then waits for
all of them, so nothing of a chunk is answered before its reservations are committed. A
batch decision writes no decision-log event (its event is its dataset row), but counts
toward caps and the offers report like any other.

A counter shared by every profile (a cap for everyone) that a reservation found full stays
full for the rest of the chunk's decider (``Attempt``'s ``shared`` counts): later profiles
are decided without that offer instead of proposing it and being refused.

Ranking strategies rank with what they learned online (``service/learning.py``), read once
per chunk from the store the worker opened (a Spark executor's root opens the same one),
as an online decision reads it: without it every batch decision would rank from the
untrained prior, uniformly at random.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from nextoffer import pql
from nextoffer.engine import DecisionRequest
from nextoffer.errors import PQLError
from nextoffer.ids import format_datetime
from nextoffer.repository.records import InstanceRecord
from nextoffer.service.attempt import Attempt, DecisionCall
from nextoffer.service.batch.output import EventRow, event_row
from nextoffer.service.batch.plan import JobPlan
from nextoffer.service.cap_plan import CapPlan, EngineKey
from nextoffer.service.catalogs import build_snapshot
from nextoffer.service.decisions import EVENT_LIMIT
from nextoffer.service.learning import Learning
from nextoffer.service.offload import in_thread
from nextoffer.storage.batch import ProfileRow
from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import DecisionPath, DecisionRecord, OnLoop
from nextoffer.storage.ledger import DecisionLedger

#: Decisions handed to the decision path's writer at once.
GROUP = 512


def profile_rng(seed: int, profile_id: str) -> random.Random:
    """The tie-breaking generator of one profile in a job: the same on every engine."""
    return random.Random((seed << 32) | zlib.crc32(profile_id.encode()))


@dataclass(slots=True)
class ChunkStats:
    """What deciding chunks cost and how many. ``seconds`` is CPU time by stage, of the
    thread that decides (``time.thread_time``: on a shared machine wall time says more
    about the neighbours than about us); ``cpu`` is the worker's whole CPU time (its
    decision writer's thread included) and ``wall`` its elapsed time, both per chunk.
    ``advanced`` says, in a progress report, that the engine moved though it may have
    decided no profile (a chunk exported, a Spark task started or ended, a turn waited):
    a job whose engine stops advancing is ended as stalled (``jobs.STALL_SECONDS``)."""

    profiles: int = 0
    members: int = 0
    refused: int = 0
    seconds: dict[str, float] = field(
        default_factory=lambda: {"parse": 0.0, "segment": 0.0, "decide": 0.0, "record": 0.0}
    )
    cpu: float = 0.0
    wall: float = 0.0
    advanced: bool = False

    def add(self, other: ChunkStats) -> None:
        self.advanced = self.advanced or other.advanced
        self.profiles += other.profiles
        self.members += other.members
        self.refused += other.refused
        self.cpu += other.cpu
        self.wall += other.wall
        for key, value in other.seconds.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + value

    def as_json(self) -> dict[str, Any]:
        return {
            "profiles": self.profiles,
            "members": self.members,
            "refused": self.refused,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "cpu": round(self.cpu, 3),
            "wall": round(self.wall, 3),
        }


class ChunkDecider:
    """Decides chunks of one job's audience over one decision path."""

    def __init__(
        self,
        plan: JobPlan,
        path: DecisionPath,
        *,
        learning: Learning | None = None,
        ledger: DecisionLedger | None = None,
    ) -> None:
        self._plan = plan
        #: What ranking strategies learned, read once per chunk (``None``: the prior).
        self._learning = learning
        #: Where records go when given (a Spark task's: each profile's reservations count
        #: once across its attempts), else the decision path's writer.
        self.ledger = ledger
        self._held = HeldRecords(path, ledger)
        self._snapshot = build_snapshot(plan.image, built=format_datetime(plan.decided_at))
        self._segment = pql.compile(plan.segment, kind="rule")
        self._segment_events = "xEvent" in plan.segment
        self._events = self._segment_events or self._snapshot.reads_events
        self._shared: dict[EngineKey, int] = {}
        self._refusals = 0

    def _refused(self) -> None:
        self._refusals += 1

    def restart(self) -> None:
        """Drop the records an earlier :meth:`decide` held back when it failed (a Spark
        task that failed in this Python worker, which Spark reuses): sent with the next
        call's, they would be written for a decision nobody receives."""
        self._held.drop()

    def decide(
        self, rows: Iterable[ProfileRow], *, stopped: Callable[[], bool] | None = None
    ) -> tuple[list[EventRow], ChunkStats]:
        """Decide for every profile of ``rows`` in the audience; their event rows, in
        order, once every reservation is committed. When ``stopped`` answers true (asked
        every :data:`GROUP` profiles: the job was cancelled), the rest of ``rows`` is
        left undecided and what was decided settles.

        Profiles go in groups of :data:`GROUP`: a group is decided with its records held
        back, then handed to the decision path's writer at once; while the writer commits
        it the next group is decided, and then the previous group settles (a refused
        record is decided again and sent with the next hand-off). What a refusal taught
        (a cap for everyone is full) therefore reaches the decisions of the group after
        next, not thousands of decisions later."""
        plan, path, snapshot = self._plan, self._held, self._snapshot
        now = plan.decided_at
        stats = ChunkStats()
        clock = time.thread_time
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        decided: list[tuple[Attempt, str, str]] = []
        waiting: list[Attempt] = []
        before = self._refusals
        group: list[Attempt] = []
        learned = (
            self._learning.learned(plan.container_id, snapshot.catalog)
            if self._learning is not None
            else None
        )
        for profile_id, namespace, identity, text in rows:
            if stopped is not None and stats.profiles % GROUP == 0 and stopped():
                break
            stats.profiles += 1
            if namespace is None or identity is None:
                continue  # a decision event names an identity: a profile without one is skipped
            t0 = clock()
            attributes: Mapping[str, Any] = orjson.loads(text)
            events: Sequence[Mapping[str, Any]] = (
                path.events(profile_id, limit=EVENT_LIMIT) if self._events else ()
            )
            t1 = clock()
            try:
                member = self._segment.evaluate(profile=attributes, events=events, now=now) is True
            except PQLError:
                member = False
            t2 = clock()
            stats.seconds["parse"] += t1 - t0
            stats.seconds["segment"] += t2 - t1
            if not member:
                continue
            stats.members += 1
            call = DecisionCall(plan.propositions, ((namespace, identity),), log=False)
            request = DecisionRequest(plan.propositions, profile=attributes, events=events)
            caps = CapPlan(plan.container_id, snapshot, plan.propositions, profile_id, now)
            attempt = Attempt(
                path,
                plan.container_id,
                snapshot,
                call,
                request,
                caps,
                profile_id=profile_id,
                profile_key=profile_id,
                now=now,
                rng=partial(profile_rng, plan.seed, profile_id),
                on_refused=self._refused,
                learned=learned,
                shared=self._shared,
            )
            attempt.start()
            decided.append((attempt, namespace, identity))
            group.append(attempt)
            stats.seconds["decide"] += clock() - t2
            if len(group) >= GROUP:
                waiting = self._hand_off(group, waiting, stats)
                group = []
        waiting = self._hand_off(group, waiting, stats)
        while waiting:
            waiting = self._hand_off([], waiting, stats)
        stats.refused = self._refusals - before
        t4 = clock()
        out = []
        for attempt, namespace, identity in decided:
            outcome = attempt.outcome()
            out.append(
                event_row(
                    outcome.proposition_id,
                    outcome.created,
                    namespace,
                    identity,
                    outcome.result,
                    include_content=plan.include_content,
                )
            )
        stats.seconds["rows"] = clock() - t4
        stats.cpu = time.process_time() - cpu_started
        stats.wall = time.perf_counter() - wall_started
        return out, stats

    def _hand_off(
        self, group: list[Attempt], waiting: list[Attempt], stats: ChunkStats
    ) -> list[Attempt]:
        """Send ``group``'s records, then settle ``waiting`` (sent before): the attempts
        whose records are now in flight."""
        started = time.thread_time()
        self._held.send()
        if waiting:
            wait([in_thread(a.waiting) for a in waiting if a.waiting is not None])
        again = []
        for attempt in waiting:
            attempt.settle()
            if attempt.waiting is not None:  # refused: decided again, its record held
                again.append(attempt)
        self._held.send()
        stats.seconds["record"] += time.thread_time() - started
        return again + group


class HeldRecords:
    """The decision path with records held back until :meth:`send`, which hands them
    together (``record_many``) to the path, or to the job's ledger when given; every
    other call goes straight to the path."""

    def __init__(self, path: DecisionPath, ledger: DecisionLedger | None = None) -> None:
        self._path = path
        self._writer: DecisionPath | DecisionLedger = ledger if ledger is not None else path
        self.inline = path.inline
        self.on_loop: OnLoop | None = None  # a chunk's decisions run in a thread
        self._held: list[tuple[DecisionRecord, Future[list[CounterKey]]]] = []

    def record(self, record: DecisionRecord) -> Future[list[CounterKey]]:
        future: Future[list[CounterKey]] = Future()
        self._held.append((record, future))
        return future

    def send(self) -> None:
        if self._held:
            held, self._held = self._held, []
            self._writer.record_many(held)

    def drop(self) -> None:
        self._held = []

    def record_many(self, items: Sequence[tuple[DecisionRecord, Future[list[CounterKey]]]]) -> None:
        self._held.extend(items)

    def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        return self._path.profile(org, sandbox, namespace, identity)

    def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        return self._path.events(profile_id, limit=limit)

    def library_version(self, container_id: str) -> int:
        return self._path.library_version(container_id)

    def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        return self._path.counts(keys)

    def instance(
        self, org: str, sandbox: str, container_id: str, instance_id: str, *, by_at_id: bool = False
    ) -> tuple[bool, InstanceRecord | None]:
        return self._path.instance(org, sandbox, container_id, instance_id, by_at_id=by_at_id)

    def fold(self) -> None:
        self._path.fold()

    def close(self) -> None:
        """The wrapped path belongs to its opener."""


class Stopped(Exception):
    """A running job was cancelled (its status moved on): the engine stops."""


class EngineFailed(RuntimeError):
    """An engine failed for a reason its message tells whole, one a user acts on (a Spark
    task retried, a file system missing): the job's error is that message as it is, and
    the log holds no traceback (not a bug)."""


#: Opens what a worker decides with: an object with the decision path and ``close()``
#: (the composition root, ``NextOffer.open`` with the job's settings).
OpenWorker = Callable[[], Any]

"""Group commit, written once for every database the decision path writes to.

A batch of decision records is written in one transaction. What the batch writes is
decided here, in Python, by :func:`plan_batch`: duplicates become conflicts, each
record's reservation is decided in order against the counts left by the records before
it (all of its counters or none), and the rows of each table are gathered for one
``executemany`` each. A decision event names the offers it proposed, and the offers
report is folded from the events after the commit (``report_fold.py``); a record without
an event (a batch job's) adds to the report in the batch (increments summed per offer and
day). The caller reads the
stored ids and the counts inside its transaction with the counters held still — SQLite
by its single write lock, PostgreSQL by row locks taken in key order — and writes what the
plan says before committing.

:func:`commit_batch` resolves the records' futures from one batch's outcome, and
:class:`BatchWriter` is the writer thread that commits batches for callers that wait in
a thread (``sqlite_path.py``, ``pg_path.py``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson

from nextoffer.errors import BadRequest, Conflict, NextOfferError, Unavailable
from nextoffer.storage.counters import CounterKey, counter_needs
from nextoffer.storage.decision_path import DecisionRecord, Pending
from nextoffer.storage.errors import translated
from nextoffer.storage.report_fold import FOLD_EVENTS, FOLD_SECONDS

log = logging.getLogger("nextoffer.storage")

#: Records committed together at most (a batch is whatever queued while the last committed).
MAX_BATCH = 256

Item = tuple[DecisionRecord, Pending]
Outcome = list[CounterKey] | Conflict
#: Writes a batch's records in one transaction and returns their outcomes, in order.
Write = Callable[[list[DecisionRecord]], list[Outcome]]

C = TypeVar("C")


@dataclass(slots=True)
class BatchPlan:
    """What one batch writes, and each record's outcome."""

    outcomes: list[Outcome] = field(default_factory=list)
    #: (counter key, container, new count), in key order.
    counters: list[tuple[str, str, int]] = field(default_factory=list)
    #: decision_events rows: proposition id, container, created, created_us, profile key,
    #: body and offers proposed (JSON text), to be folded into the report.
    events: list[tuple[Any, ...]] = field(default_factory=list)
    #: offer_daily increments of the records without an event: (container, day, offer,
    #: propositions), in key order.
    daily: list[tuple[str, str, str, int]] = field(default_factory=list)


def counter_owners(records: Sequence[DecisionRecord]) -> dict[str, str]:
    """The batch's counters, encoded, in key order (the order every writer locks them
    in), with the container each belongs to."""
    owners = {key.code: key.container_id for r in records for key, _ in r.reserve}
    return dict(sorted(owners.items()))


def plan_batch(
    records: Sequence[DecisionRecord],
    stored: set[str],
    counts: dict[str, int],
    owners: dict[str, str] | None = None,
) -> BatchPlan:
    """Every record of the batch, in order: ``stored`` holds the proposition ids already
    written, ``counts`` the current count of every counter of the batch (missing ones are
    0); ``owners`` is :func:`counter_owners` of the records when the caller has it. Both
    must stay as read until the caller commits what the plan says."""
    plan = BatchPlan()
    outcomes = plan.outcomes
    events = plan.events
    stored = set(stored)
    if owners is None:
        owners = counter_owners(records)
    counts = {code: counts.get(code, 0) for code in owners}
    changed: set[str] = set()
    daily: dict[tuple[str, str, str], int] = {}
    dumps = orjson.dumps
    for record in records:
        proposition_id = record.proposition_id
        if proposition_id in stored:
            outcomes.append(already_recorded(proposition_id))
            continue
        if record.reserve:
            need = counter_needs(record.reserve)
            full = [key for key, (n, limit) in need.items() if counts[key.code] + n > limit]
            if full:
                outcomes.append(full)
                continue
            for key, (n, _) in need.items():
                counts[key.code] += n
                changed.add(key.code)
        stored.add(proposition_id)
        container_id = record.container_id
        if record.body is not None:
            events.append(
                (
                    proposition_id,
                    container_id,
                    record.created,
                    record.created_us,
                    record.profile_key,
                    dumps(record.body).decode(),
                    dumps(record.proposed_offers).decode(),
                )
            )
        else:
            day = record.day
            for offer_id in record.proposed_offers:
                day_key = (container_id, day, offer_id)
                daily[day_key] = daily.get(day_key, 0) + 1
        outcomes.append([])
    plan.counters = [(code, owners[code], counts[code]) for code in owners if code in changed]
    plan.daily = [(*key, n) for key, n in sorted(daily.items())]
    return plan


def already_recorded(proposition_id: str) -> Conflict:
    """A record's outcome when its proposition id is stored already."""
    return Conflict(f"decision {proposition_id} is already recorded")


def commit_batch(batch: list[Item], write: Write) -> bool:
    """Write the batch and resolve its futures: each with its record's outcome once the
    batch committed, or all with the error when it failed (then nothing was written).
    A record whose caller gave up before its turn (a cancelled future) is not written.
    Returns whether the batch committed (some of it, when it was written record by record:
    :func:`refused_alone`)."""
    batch = [item for item in batch if _claim(item[1])]
    if not batch:
        return True
    return _commit_claimed(batch, write)


def _commit_claimed(batch: list[Item], write: Write) -> bool:
    try:
        outcomes = write([record for record, _ in batch])
    except Exception as exc:  # every waiting caller hears of it
        error = translated(exc) or Unavailable("decision records not written", internal=str(exc))
        if refused_alone(error, len(batch)):
            return any([_commit_claimed([item], write) for item in batch])
        log.error("decision records not written (%d): %s", len(batch), error)
        for _, future in batch:
            future.set_exception(error)
        return False
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, Conflict):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    return True


def refused_alone(error: NextOfferError, size: int) -> bool:
    """Whether a failed batch of ``size`` records is written again record by record: the
    database refused a value one of them carries (:class:`BadRequest`; the batch was
    rolled back whole), and the others should not pay for it. Each is then written
    alone, in order, and only the record that carries the value hears of it."""
    if isinstance(error, BadRequest) and size > 1:
        log.warning("a batch of %d records refused (%s): writing each alone", size, error)
        return True
    return False


def _claim(future: Pending) -> bool:
    """Whether the record is still wanted, taking it if so. A thread-safe future is marked
    running (a caller can no longer cancel it); an event loop's own future is resolved in
    the same callback that takes it, on the loop's thread, so nothing can cancel it in
    between."""
    if isinstance(future, Future):
        return future.set_running_or_notify_cancel()
    return not future.cancelled()


class BatchWriter(Generic[C]):
    """Group commit for callers off an event loop: a writer thread takes every record
    queued while the last batch committed (up to :data:`MAX_BATCH`) and commits them as
    one batch on the writer's connection.

    Until two callers first meet, there is no thread: a caller writes its own record on
    its own thread (one caller in a loop, the CLI, an embedding application), where handing
    it to a thread and waiting would cost two thread switches per decision and batch
    nothing. A caller that finds another writing starts the thread, and from then on every
    record goes through it, so concurrent callers keep sharing commits. The connection is
    used by one writer at a time (``_writing``), whichever thread that is.

    ``connect`` opens the connection (at the first write), ``write`` writes a batch on it
    in one transaction; after a failed batch the connection is closed (``disconnect``) and
    the next batch opens another. :meth:`close` writes what was queued before it, then
    stops the thread and closes the connection.

    ``fold`` folds the offers report from the decision events (``report_fold.py``) on the
    writer's own turn: after a batch when :data:`FOLD_SECONDS` have passed since the last
    fold, and — on the thread — when no record came for that long while events were left
    unfolded. At most :data:`FOLD_EVENTS` per turn; :meth:`close` folds all of them.
    """

    def __init__(
        self,
        connect: Callable[[], C],
        write: Callable[[C, list[DecisionRecord]], list[Outcome]],
        disconnect: Callable[[C], None],
        fold: Callable[[C, int | None], bool] | None = None,
    ) -> None:
        self._connect = connect
        self._write = write
        self._disconnect = disconnect
        self._fold = fold
        self._unfolded = False  # events may wait for a fold (the writer's, under _writing)
        self._folded_at = time.monotonic()
        self._queue: queue.SimpleQueue[Item | list[Item] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: C | None = None  # the writer's, whichever thread holds ``_writing``
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self.closed = False

    def put(self, record: DecisionRecord) -> Future[list[CounterKey]]:
        future: Future[list[CounterKey]] = Future()
        # Checked and queued under the lock close() takes to queue the stop mark: a
        # record is either refused here or queued before the mark. An inline write that
        # passed the check finishes before close() closes the connection (``_writing``).
        with self._lock:
            if self.closed:
                future.set_exception(Unavailable("the store is closed"))
                return future
            inline = self._thread is None and self._writing.acquire(blocking=False)
            if not inline:
                self._start()
                self._queue.put((record, future))
        if inline:
            try:
                self._commit([(record, future)])
                self._fold_if_due()
            finally:
                self._writing.release()
        return future

    def start(self) -> None:
        """Start the writer thread now: from here on every record goes through it, also a
        lone caller's (tests of batching use it to begin where concurrent callers are)."""
        with self._lock:
            self._start()

    def put_many(self, items: Sequence[Item]) -> None:
        """Queue records whose futures the caller made, in one hand-off to the thread
        (a batch job's chunk: one wake-up, not one per record). They are committed in the
        writer's next batch, which may then exceed :data:`MAX_BATCH`."""
        with self._lock:
            if self.closed:
                for _, future in items:
                    future.set_exception(Unavailable("the store is closed"))
                return
            self._start()
            self._queue.put(list(items))

    def _start(self) -> None:
        """Start the thread (the caller holds ``_lock``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="nextoffer-decision-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=self._fold_wait())
            except queue.Empty:  # no record for a while: fold what is left
                with self._writing:
                    self._fold_turn(FOLD_EVENTS)
                continue
            if item is None:
                break
            batch = list(item) if isinstance(item, list) else [item]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if isinstance(more, list):
                    batch.extend(more)
                else:
                    batch.append(more)
            with self._writing:
                self._commit(batch)
                self._fold_if_due()

    def _commit(self, batch: list[Item]) -> None:
        """Write one batch (the caller holds ``_writing``)."""
        if commit_batch(batch, self._write_batch):
            self._unfolded = True
        elif self._conn is not None:
            self._close_quietly(self._conn)
            self._conn = None

    def _fold_wait(self) -> float | None:
        """How long the thread may wait for a record before it folds (None: no fold owed)."""
        if self._fold is None or not self._unfolded:
            return None
        return max(0.0, self._folded_at + FOLD_SECONDS - time.monotonic())

    def _fold_if_due(self) -> None:
        """Fold one turn when the last fold is :data:`FOLD_SECONDS` old (the caller holds
        ``_writing``)."""
        if self._fold is not None and time.monotonic() - self._folded_at >= FOLD_SECONDS:
            self._fold_turn(FOLD_EVENTS)

    def _fold_turn(self, limit: int | None) -> None:
        """One fold on the writer's connection (the caller holds ``_writing``). A failure
        loses nothing: the events stay past the watermark for the next fold."""
        if self._fold is None:
            return
        self._folded_at = time.monotonic()
        try:
            if self._conn is None:
                self._conn = self._connect()
            self._unfolded = self._fold(self._conn, limit)
        except Exception as exc:
            log.error("offers report not folded (the events wait for the next fold): %s", exc)
            if self._conn is not None:
                self._close_quietly(self._conn)
                self._conn = None

    def _write_batch(self, records: list[DecisionRecord]) -> list[Outcome]:
        if self._conn is None:
            self._conn = self._connect()
        return self._write(self._conn, records)

    def _close_quietly(self, conn: C) -> None:
        try:
            self._disconnect(conn)
        except Exception as exc:
            log.warning("decision writer's connection not closed cleanly: %s", exc)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout=30)
        with self._writing:
            self._fold_turn(None)
            if self._conn is not None:
                self._close_quietly(self._conn)
                self._conn = None

"""Retention: decision and experience events older than the operator keeps are deleted.

Both tables grow with traffic — a decision event for every recorded decision, the
experience events applications send — and nothing else removes their rows. With
``NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS`` or ``NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS``
set, a server deletes what is older every :data:`PASS_SECONDS`, a few rows per
transaction so that records and folds never wait long for it (SQLite has one writer);
``nextoffer db prune`` does one pass from a shell.

What goes, and what stays (docs/deploy.md, "Retention"):

* a decision event, once the offers report has counted it
  (``Runtime.prune_decision_events``). The report, the cap counters and what ranking
  strategies learned stay: each was counted when the event was written or its feedback
  came. Feedback naming a proposition whose event is gone counts for nothing, so the
  displays and successes ranking strategies counted of decisions that old go too
  (``Ranking.prune_trials``, by the decision's time).
* an experience event, by its own timestamp. Rules that look back at events see only
  those kept, and an event's id is remembered only as long as the event.

Every pass, with a retention or without, first deletes the decision events of deleted
profiles (``Profiles.delete`` queues them: ``Erasures.erase_decision_events``), walking the
events :data:`ERASE_PLACES` places per transaction. The same rule holds: only events the
offers report has counted, and never the newest. Then their cap counters: a visitor
counted before having a profile is counted under its identity's own text
(``CapCounterStore.erase``, one walk of the counters for every erasure due).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from nextoffer.errors import NextOfferError
from nextoffer.ids import format_datetime
from nextoffer.storage.counters import CapCounterStore
from nextoffer.storage.erasures import ERASED_BATCH
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

log = logging.getLogger("nextoffer.retention")

#: Rows deleted per transaction: on SQLite the other writers wait for it meanwhile (a
#: few milliseconds; docs/benchmarks.md, "Retention").
PRUNE_ROWS = 200
#: The least a pass waits between two transactions; it waits at least twice as long as
#: the last one took, so it holds SQLite's write lock a third of the time at most.
PAUSE_SECONDS = 0.02
#: Seconds between two passes of a server.
PASS_SECONDS = 300.0
#: Seconds from a server's start to its first pass (at most): a worker restarted more
#: often than every :data:`PASS_SECONDS` still makes passes.
FIRST_PASS_SECONDS = 60.0
#: The longest retention in days: a longer one keeps every event as well (its cutoff would
#: lie before any date a database holds, or overflow).
MAX_DAYS = 1_000_000.0
#: Places of decision events an erasure's transaction walks (docs/benchmarks.md,
#: "Retention").
ERASE_PLACES = 2_000
#: Seconds after a profile's deletion during which its erasure follows the newest event:
#: decisions other processes make from their profile caches, and records in flight, are
#: written after the deletion. The root adds the profile cache's own bound.
SETTLE_SECONDS = 60.0

_DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows deleted so far by a pass."""

    decision_events: int = 0
    experience_events: int = 0
    ranking_trials: int = 0
    #: Decision events of deleted profiles.
    erased: int = 0
    #: Cap counters of deleted profiles.
    counters: int = 0


class Retention:
    """Deletes the events past their retention, on demand (:meth:`prune`) or in the
    background (:meth:`start`, a server)."""

    def __init__(
        self,
        store: Store,
        *,
        counters: Sequence[CapCounterStore] = (),
        decision_events_days: float,
        experience_events_days: float,
        clock: Callable[[], datetime],
        rows: int = PRUNE_ROWS,
        places: int = ERASE_PLACES,
        settle: float = SETTLE_SECONDS,
        pause: float = PAUSE_SECONDS,
        every: float = PASS_SECONDS,
    ) -> None:
        self._store = store
        self._counters = counters
        self.decision_events_days = decision_events_days
        self.experience_events_days = experience_events_days
        self._clock = clock
        self._rows = rows
        self._places = places
        self._settle = settle
        self._pause = pause
        self._every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def prune(self, *, on_progress: Callable[[Pruned], None] | None = None) -> Pruned:
        """Delete every event past its limit as of now, :data:`PRUNE_ROWS` per transaction
        (waiting between two, unless ``pause`` is 0); ``on_progress`` hears the totals
        after each one. Stops early when closed."""
        now_us = int(self._clock().timestamp() * 1_000_000)
        settled = format_datetime(self._clock() - timedelta(seconds=self._settle))
        erase = partial(self._store.write, partial(_erasure_step, self._places, settled))
        # Erasures go first, with a retention or without: until no step can be made now.
        pruned = self._walk("erased", erase, Pruned(), on_progress, last=_is_none)
        pruned = self._erase_counters(settled, pruned, on_progress)
        kinds: list[tuple[str, Callable[..., int], float]] = [
            ("decision_events", _decision_events, self.decision_events_days),
            ("ranking_trials", _ranking_trials, self.decision_events_days),
            ("experience_events", _experience_events, self.experience_events_days),
        ]
        for name, step, days in kinds:
            if days <= 0:
                continue
            # A limit past any date a database holds keeps every event (not an overflow).
            before_us = now_us - int(min(days, MAX_DAYS) * _DAY_US)
            chunk = partial(self._store.write, partial(_chunk, step, before_us, now_us, self._rows))
            # A transaction that deleted fewer rows than it may reached the limit.
            pruned = self._walk(
                name, chunk, pruned, on_progress, last=lambda n: (n or 0) < self._rows
            )
        return pruned

    def _erase_counters(
        self, settled: str, pruned: Pruned, on_progress: Callable[[Pruned], None] | None
    ) -> Pruned:
        """The cap counters of the erasures due, one walk of the counters per batch of
        them; a batch is unqueued once its walk is whole (a pass stopped half-way leaves it
        for the next)."""
        if not self._counters:
            return pruned
        database_only = not any(counters.outside_database for counters in self._counters)
        while not self._stop.is_set():
            with self._store.session() as session:  # a read: no write lock for it
                due, owned = _due_counter_erasures(settled, database_only, session)
            if not due:
                break
            scopes: dict[str, set[str]] = {}
            for container, org, sandbox in owned:
                scopes[container] = {scope for scope, o, s, _ in due if (o, s) == (org, sandbox)}
            for counters in self._counters:
                steps = counters.erase(scopes)
                pruned = self._walk(
                    "counters", partial(next, steps, None), pruned, on_progress, last=_is_none
                )
            if self._stop.is_set():
                break
            self._store.write(partial(_forget_counter_erasures, due))
            if len(due) < ERASED_BATCH:
                break
        return pruned

    def _walk(
        self,
        name: str,
        step: Callable[[], int | None],
        pruned: Pruned,
        on_progress: Callable[[Pruned], None] | None,
        *,
        last: Callable[[int | None], bool],
    ) -> Pruned:
        """``step`` (a transaction, or a bounded step of the counters) after another, its
        deletions added to ``pruned``'s ``name``, until ``last`` says its answer was the
        last one (or this is closed); between two, a pause twice as long as it took."""
        while not self._stop.is_set():
            started = time.monotonic()
            deleted = step()
            took = time.monotonic() - started
            if deleted:
                pruned = replace(pruned, **{name: getattr(pruned, name) + deleted})
                if on_progress is not None:
                    on_progress(pruned)
            if last(deleted):
                break
            self._stop.wait(max(self._pause, 2 * took) if self._pause else 0)
        return pruned

    # -- in a server -------------------------------------------------------------------

    def start(self) -> None:
        """Prune every :data:`PASS_SECONDS` in a thread of its own, until :meth:`close`
        (with no retention set, a pass only erases deleted profiles' decision events)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="nextoffer-retention", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        wait = min(self._every, FIRST_PASS_SECONDS)
        while not self._stop.wait(wait):
            wait = self._every
            try:
                pruned = self.prune()
            except NextOfferError as exc:  # the database away: the next pass tries again
                log.warning("retention: %s", exc)
                continue
            if pruned != Pruned():
                log.info(
                    "retention: deleted %d decision events, %d experience events and %d"
                    " ranking trials; %d decision events and %d cap counters of deleted"
                    " profiles",
                    pruned.decision_events,
                    pruned.experience_events,
                    pruned.ranking_trials,
                    pruned.erased,
                    pruned.counters,
                )

    def close(self) -> None:
        """Stop the background passes (a pass under way stops after its transaction)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)


def _chunk(
    step: Callable[..., int], before_us: int, now_us: int, rows: int, session: Session
) -> int:
    """One transaction of a pass: ``step`` on its session."""
    return step(session, before_us=before_us, now_us=now_us, limit=rows)


def _erasure_step(places: int, settled: str, session: Session) -> int | None:
    return session.erasures.erase_decision_events(places=places, settled=settled)


def _due_counter_erasures(
    settled: str, database_only: bool, session: Session
) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str, str]]]:
    """The erasures of counters due, and their tenants' containers. With
    ``database_only`` (this process has no Redis), a tenant with a container Redis counts
    for is left to a process that has it: walking the database's counters only would
    unqueue the erasure with its Redis counters kept."""
    erasures = session.erasures
    due = erasures.due_counters(settled=settled, redis_held=not database_only)
    if database_only:
        waiting = erasures.waiting_for_redis(settled=settled)
        if waiting:
            log.warning(
                "retention: the cap counters of %d deleted profile ids and identities are in"
                " Redis: a server with NEXTOFFER_REDIS set erases them",
                waiting,
            )
    return due, erasures.tenant_containers((org, sandbox) for _, org, sandbox, _ in due)


def _forget_counter_erasures(done: list[tuple[str, str, str, str]], session: Session) -> None:
    session.erasures.forget_counters(done)


def _is_none(deleted: int | None) -> bool:
    return deleted is None


def _decision_events(session: Session, *, before_us: int, now_us: int, limit: int) -> int:
    # An event dated more than a day ahead (a node's wrong clock) is stepped over, not
    # waited for: the walk stops at the first event still within the limit.
    return session.runtime.prune_decision_events(
        before_us=before_us, limit=limit, future_us=now_us + _DAY_US
    )


def _ranking_trials(session: Session, *, before_us: int, now_us: int, limit: int) -> int:
    return session.ranking.prune_trials(before_us=before_us, limit=limit)


def _experience_events(session: Session, *, before_us: int, now_us: int, limit: int) -> int:
    return session.runtime.prune_experience_events(before_us=before_us, limit=limit)

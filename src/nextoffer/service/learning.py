"""Ranking strategies learning from feedback: the statistics decisions read, and add to.

**Reading.** Each process keeps, per container, every strategy's statistics cells and the
posterior built from them (``engine.strategy.learn``). A decision uses them as they are
when they were checked less than ``check_interval`` seconds ago (0.5 s); otherwise it
reads the container's ranking version (one indexed read) and, when it moved, only the
cells written since, and rebuilds the posteriors of the offers they belong to. So
feedback reaches decisions of every worker and node within the interval plus a read,
and a restart reads everything once. While one thread reads, the container's other
decisions rank with the last read rather than wait for it.

**Adding.** Feedback on a proposition that a strategy ranked (the decision's record names
the strategy, the request's feature slots, whether it explored and the options it
ranked) adds to that strategy's cells in the transaction that stores the event: an
impression (``decisioning.propositionDisplay``) adds ``x xᵀ``, the strategy's goal (a
click, ``decisioning.propositionInteract``, or its custom event type) adds ``x`` to the
rewards. Only the strategy of the proposition the event names learns: an event naming a
scope counts for that scope's proposition only, so an offer proposed in two placements
trains the strategy of the placement it was shown in.

**Once per display.** Each proposition, offer and kind (display, success) is one trial,
counted the first time any event names it (``Ranking.claim``): a display repeated, or a
click repeated under new event ids (the Web SDK gives every event one), adds nothing, so
a strategy learns a Bernoulli trial per display. A success with no display counted
before counts as a display too (a click is on something shown), so no offer's successes
outnumber its displays. The statistics are exact sums of distinct trials, whatever the
order or the node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nextoffer.engine import Catalog
from nextoffer.engine.strategy import Learned, Strategy, increments, learn
from nextoffer.errors import Unavailable
from nextoffer.ids import epoch_micros, parse_datetime
from nextoffer.storage.ranking import CellKey, DailyKey, TrialKey
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

log = logging.getLogger("nextoffer.learning")

DISPLAY = "decisioning.propositionDisplay"
INTERACT = "decisioning.propositionInteract"


@dataclass(slots=True)
class _Known:
    """One container's statistics as this process last read them."""

    version: int = 0
    checked_at: float = float("-inf")
    #: strategy @id -> offer @id -> (row, col) -> total
    cells: dict[str, dict[str, dict[tuple[int, int], float]]] = field(default_factory=dict)
    learned: dict[str, Learned] = field(default_factory=dict)
    #: The catalog the posteriors were built for (a new one may change a strategy's type).
    catalog: Catalog | None = None


#: A trial's kind: a display, or a success (the strategy's goal).
DISPLAYED, SUCCEEDED = 0, 1


@dataclass(frozen=True, slots=True)
class _Trial:
    """One display or success of an offer a strategy ranked, before it is claimed."""

    strategy_id: str
    offer_id: str
    slots: tuple[int, ...]
    explored: bool
    #: The event's UTC day (the report's).
    day: str
    #: The decision's time, epoch µs (retention deletes trials by it).
    decided_us: int


@dataclass(slots=True)
class Gathered:
    """Feedback of one request, per container, before it is written: the trials its
    events name (the first event naming one is the one counted)."""

    trials: dict[str, dict[TrialKey, _Trial]] = field(default_factory=dict)


def ranking_note(
    strategy_id: str, slots: tuple[int, ...], explored: bool, offers: tuple[str, ...]
) -> dict[str, Any]:
    """What a decision's record keeps of how a strategy ranked a proposition."""
    return {
        "strategy": strategy_id,
        "slots": list(slots),
        "explored": explored,
        "offers": list(offers),
    }


class Learning:
    def __init__(
        self,
        store: Store,
        *,
        check_interval: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = check_interval
        self._monotonic = monotonic
        self._known: dict[str, _Known] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- reading ---------------------------------------------------------------------

    def ready(self, container_id: str, catalog: Catalog) -> Mapping[str, Learned] | None:
        """:meth:`learned` when that needs no read (checked less than the interval ago,
        or no strategy), else ``None``: an event loop then calls :meth:`learned` in a
        thread."""
        if not catalog.strategies:
            return {}
        known = self._known.get(container_id)
        if (
            known is not None
            and known.catalog is catalog
            and self._monotonic() - known.checked_at < self._interval
        ):
            return known.learned
        return None

    def learned(self, container_id: str, catalog: Catalog) -> Mapping[str, Learned]:
        """What each strategy of ``catalog`` has learned (none when it has no strategy)."""
        ready = self.ready(container_id, catalog)
        if ready is not None:
            return ready
        with self._guard:
            lock = self._locks.setdefault(container_id, threading.Lock())
        if not lock.acquire(blocking=False):
            known = self._known.get(container_id)
            if known is not None and known.catalog is not None:
                # Another thread is reading (a slow database, a large strategy's first
                # build): rank with the last read rather than hold a thread of the pool
                # that every tenant's calls share until that read ends.
                return known.learned
            lock.acquire()
        try:
            return self._refresh(container_id, catalog)
        finally:
            lock.release()

    def _refresh(self, container_id: str, catalog: Catalog) -> Mapping[str, Learned]:
        """Read what changed and rebuild the posteriors it moved (the container's lock is
        held)."""
        known = self._known.setdefault(container_id, _Known())
        now = self._monotonic()
        if known.catalog is catalog and now - known.checked_at < self._interval:
            return known.learned
        try:
            with self._store.session() as session:
                version, cells = session.ranking.changes(container_id, known.version)
        except Unavailable as exc:
            # The database is gone for now: rank with what was learned so far.
            log.error("ranking statistics unavailable; using the last read: %s", exc)
            version, cells = known.version, []
        touched: dict[str, set[str]] = {}  # strategy @id -> offers whose cells moved
        for cell in cells:
            offers = known.cells.setdefault(cell.strategy_id, {})
            offers.setdefault(cell.offer_id, {})[(cell.row, cell.col)] = cell.value
            touched.setdefault(cell.strategy_id, set()).add(cell.offer_id)
        rebuilt = set(touched) if known.catalog is catalog else set(catalog.strategies)
        learned = {k: v for k, v in known.learned.items() if k in catalog.strategies}
        for strategy_id in rebuilt:
            strategy = catalog.strategies.get(strategy_id)
            if strategy is not None:
                # Only the offers feedback named get a new posterior (a personalized
                # one is a matrix inverse per offer, and a strategy may rank thousands).
                learned[strategy_id] = learn(
                    strategy.type,
                    known.cells.get(strategy_id, {}),
                    previous=known.learned.get(strategy_id),
                    changed=touched.get(strategy_id, set()),
                )
        known.learned = learned
        known.version = version
        known.catalog = catalog
        known.checked_at = now
        return learned

    def invalidate(self, container_id: str) -> None:
        """Read the statistics on the next decision (this process just added to them)."""
        known = self._known.get(container_id)
        if known is not None:
            known.checked_at = float("-inf")

    # -- adding ----------------------------------------------------------------------

    def gather(
        self,
        gathered: Gathered,
        container_id: str,
        catalog: Catalog,
        proposition_id: str,
        decision: Mapping[str, Any],
        offer_ids: list[str],
        event_type: str | None,
        day: str,
        scope: tuple[str, str] | None = None,
    ) -> None:
        """Add one event's feedback on one decision to ``gathered``: for each offer of
        ``offer_ids`` a strategy ranked in the decision's proposition for ``scope``
        (activity, placement; any of them when ``None``), a display or a success (with
        its display: a click is on something shown). An offer counts once an event."""
        decided_us = _decided_us(decision)
        trials = gathered.trials.setdefault(container_id, {})
        seen: set[tuple[str, str]] = set()
        for position, proposition in enumerate(decision.get("propositions", [])):
            if not isinstance(proposition, Mapping):
                continue
            note = proposition.get("ranking")
            if not isinstance(note, Mapping):
                continue
            here = (proposition.get("activity"), proposition.get("placement"))
            if scope is not None and here != scope:
                continue  # another placement's proposition: its strategy did not rank this
            strategy = catalog.strategies.get(str(note.get("strategy")))
            if strategy is None:
                continue  # deleted since: its feedback has nothing left to train
            success = event_type == _goal_event(strategy)
            if not (event_type == DISPLAY or success):
                continue
            slots = tuple(int(s) for s in note.get("slots", [0]))
            ranked = set(note.get("offers", []))
            explored = bool(note.get("explored"))
            for offer_id in offer_ids:
                if offer_id not in ranked or (strategy.at_id, offer_id) in seen:
                    continue
                seen.add((strategy.at_id, offer_id))
                trial = _Trial(strategy.at_id, offer_id, slots, explored, day, decided_us)
                kinds = (DISPLAYED, SUCCEEDED) if success else (DISPLAYED,)
                for kind in kinds:
                    trials.setdefault((proposition_id, position, offer_id, kind), trial)

    def write(self, session: Session, gathered: Gathered) -> None:
        """Add the trials gathered that were not counted before, in the caller's
        transaction."""
        for container_id in sorted(gathered.trials):
            trials = gathered.trials[container_id]
            claimed = session.ranking.claim(
                container_id, {key: trial.decided_us for key, trial in trials.items()}
            )
            cells: dict[CellKey, float] = {}
            daily: dict[DailyKey, tuple[int, int]] = {}
            for key in claimed:
                trial, success = trials[key], key[3] == SUCCEEDED
                for (row, col), value in increments(
                    trial.slots, impression=not success, reward=success
                ).items():
                    cell = (trial.strategy_id, trial.offer_id, row, col)
                    cells[cell] = cells.get(cell, 0.0) + value
                day_key = (trial.strategy_id, trial.day, trial.offer_id, trial.explored)
                shown, won = daily.get(day_key, (0, 0))
                daily[day_key] = (shown + int(not success), won + int(success))
            session.ranking.add(container_id, cells, daily)

    def written(self, gathered: Gathered) -> None:
        """After commit: this process's next decisions read what it just added."""
        for container_id, trials in gathered.trials.items():
            if trials:
                self.invalidate(container_id)


def _decided_us(decision: Mapping[str, Any]) -> int:
    """A recorded decision's time in epoch µs (0, the oldest, when it has none)."""
    stamp = decision.get("timestamp")
    try:
        return epoch_micros(parse_datetime(stamp)) if isinstance(stamp, str) else 0
    except ValueError:
        return 0


def _goal_event(strategy: Strategy) -> str:
    return INTERACT if strategy.goal == "clicks" else strategy.goal

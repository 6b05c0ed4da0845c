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
rewards. An event id seen before is stored once and counted once (``service/events.py``),
so the statistics are exact sums of distinct events, whatever the order or the node.
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
from nextoffer.storage.ranking import CellKey, DailyKey
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


@dataclass(slots=True)
class Gathered:
    """Feedback of one request, per container, before it is written."""

    cells: dict[str, dict[CellKey, float]] = field(default_factory=dict)
    daily: dict[str, dict[DailyKey, list[int]]] = field(default_factory=dict)


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
        decision: Mapping[str, Any],
        offer_ids: list[str],
        event_type: str | None,
        day: str,
    ) -> None:
        """Add one event's feedback on one decision to ``gathered``."""
        seen: set[tuple[str, str]] = set()
        for proposition in decision.get("propositions", []):
            note = proposition.get("ranking") if isinstance(proposition, Mapping) else None
            if not isinstance(note, Mapping):
                continue
            strategy = catalog.strategies.get(str(note.get("strategy")))
            if strategy is None:
                continue  # deleted since: its feedback has nothing left to train
            impression, reward = event_type == DISPLAY, event_type == _goal_event(strategy)
            if not (impression or reward):
                continue
            slots = [int(s) for s in note.get("slots", [0])]
            ranked = set(note.get("offers", []))
            explored = bool(note.get("explored"))
            for offer_id in offer_ids:
                if offer_id not in ranked or (strategy.at_id, offer_id) in seen:
                    continue
                seen.add((strategy.at_id, offer_id))
                cells = gathered.cells.setdefault(container_id, {})
                for (row, col), value in increments(
                    slots, impression=impression, reward=reward
                ).items():
                    key = (strategy.at_id, offer_id, row, col)
                    cells[key] = cells.get(key, 0.0) + value
                counts = gathered.daily.setdefault(container_id, {}).setdefault(
                    (strategy.at_id, day, offer_id, explored), [0, 0]
                )
                counts[0] += int(impression)
                counts[1] += int(reward)

    def write(self, session: Session, gathered: Gathered) -> None:
        """Add what was gathered, in the caller's transaction."""
        for container_id in sorted(set(gathered.cells) | set(gathered.daily)):
            daily = {k: (v[0], v[1]) for k, v in gathered.daily.get(container_id, {}).items()}
            session.ranking.add(container_id, gathered.cells.get(container_id, {}), daily)

    def written(self, gathered: Gathered) -> None:
        """After commit: this process's next decisions read what it just added."""
        for container_id in set(gathered.cells) | set(gathered.daily):
            self.invalidate(container_id)


def _goal_event(strategy: Strategy) -> str:
    return INTERACT if strategy.goal == "clicks" else strategy.goal

"""What a process learns from the store (``service/learning.py``; audit of ranking,
helper-59): new feedback recomputes only the posteriors of the offers it names."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nextoffer import pql
from nextoffer.engine import build_catalog
from nextoffer.engine import catalog as schemas
from nextoffer.engine.strategy import increments, learn
from nextoffer.service.learning import Gathered, Learning
from nextoffer.storage.store import Store
from support.backends import migrated_sqlite
from unit.engine.engine_library import collection, fallback, instance, offer, placement

STRATEGY = "xcore:ranking-strategy:1"
OFFERS = [f"o{n:02d}" for n in range(20)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(migrated_sqlite(tmp_path))
    yield opened
    opened.close()


def _catalog() -> Any:
    criterion = {
        "xdm:placements": ["P1"],
        "xdm:optionSelection": {"xdm:filter": "C1"},
        "xdm:ranking": {
            "xdm:order": {
                "xdm:orderEvaluationType": "rankingStrategy",
                "xdm:rankingStrategy": STRATEGY,
            }
        },
    }
    body = {
        "xdm:name": "s",
        "xdm:strategyType": "personalized-optimization",
        "xdm:features": ["tier"],
    }
    catalog = build_catalog(
        [
            placement("P1"),
            fallback("F1"),
            *(offer(o) for o in OFFERS),
            collection("C1", OFFERS),
            instance(schemas.RANKING_STRATEGY, STRATEGY, body),
            instance(
                schemas.DECISION,
                "D1",
                {"xdm:status": "live", "xdm:criteria": [criterion], "xdm:fallback": "F1"},
            ),
        ],
        compile_rule=pql.compile,
    )
    assert catalog.errors == ()
    return catalog


def _add(store: Store, cells: dict[tuple[str, str, int, int], float]) -> None:
    with store.session(write=True) as session:
        session.ranking.add("c1", cells, {})


def test_a_click_recomputes_only_the_posterior_of_the_offer_it_names(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = _catalog()
    learning = Learning(store)
    shown = increments((0, 5), impression=True, reward=False)
    _add(store, {(STRATEGY, o, row, col): 3.0 for o in OFFERS for row, col in shown})
    first = learning.learned("c1", catalog)[STRATEGY]
    inverted: list[int] = []
    inverse = np.linalg.inv

    def counting(matrices: np.ndarray) -> Any:
        inverted.append(1 if matrices.ndim == 2 else matrices.shape[0])
        return inverse(matrices)

    monkeypatch.setattr(np.linalg, "inv", counting)
    clicked = increments((0, 5), impression=True, reward=True)
    _add(store, {(STRATEGY, "o07", row, col): value for (row, col), value in clicked.items()})
    learning.invalidate("c1")
    second = learning.learned("c1", catalog)[STRATEGY]
    assert sum(inverted) == 1  # was 20: every offer of the strategy, on every new click
    assert second is not first
    monkeypatch.setattr(np.linalg, "inv", inverse)
    with store.session() as session:
        _, cells = session.ranking.changes("c1", 0)
    totals: dict[str, dict[tuple[int, int], float]] = {}
    for cell in cells:
        totals.setdefault(cell.offer_id, {})[(cell.row, cell.col)] = cell.value
    whole = learn(catalog.strategies[STRATEGY].type, totals)
    assert second.means is not None and whole.means is not None
    assert second.covariances is not None and whole.covariances is not None
    np.testing.assert_allclose(second.means, whole.means, atol=1e-12)
    np.testing.assert_allclose(second.covariances, whole.covariances, atol=1e-12)
    assert second.means[second.index["o07"]][0] > first.means[first.index["o07"]][0]


class _Held:
    """A store whose reads wait, once armed, until released (a slow database)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.armed = False
        self.reading = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def session(self, **kwargs: Any) -> Iterator[Any]:
        if self.armed:
            self.reading.set()
            assert self.release.wait(10)
        with self.store.session(**kwargs) as session:
            yield session


def test_a_slow_read_does_not_hold_the_other_decisions_of_its_container(store: Store) -> None:
    catalog = _catalog()
    held = _Held(store)
    learning = Learning(held)  # type: ignore[arg-type]
    _add(store, {(STRATEGY, "o01", 0, 0): 1.0})
    first = learning.learned("c1", catalog)
    held.armed = True
    learning.invalidate("c1")
    reader = threading.Thread(target=learning.learned, args=("c1", catalog))
    reader.start()
    try:
        assert held.reading.wait(10)
        # A second decision of the container, while the first one's read is held: it
        # ranks with the last read at once (it waited for the read before).
        answered: list[Any] = []
        other = threading.Thread(target=lambda: answered.append(learning.learned("c1", catalog)))
        other.start()
        other.join(2)
        assert answered == [first]
    finally:
        held.release.set()
        reader.join(10)


def _decision(offers: list[str]) -> dict[str, Any]:
    """A recorded decision whose one proposition ``STRATEGY`` ranked."""
    note = {"strategy": STRATEGY, "slots": [0, 5], "explored": False, "offers": offers}
    return {
        "timestamp": "2026-01-01T00:00:00.000Z",
        "propositions": [
            {
                "activity": "D1",
                "placement": "P1",
                "options": [{"id": o} for o in offers],
                "ranking": note,
            }
        ],
    }


def _reward_of(store: Store, offer: str) -> tuple[float, float]:
    """(impressions, rewards) ``STRATEGY`` learned of ``offer``: cells (0, 0), (0, -1)."""
    with store.session() as session:
        _, cells = session.ranking.changes("c1", 0)
    found = {(c.row, c.col): c.value for c in cells if c.offer_id == offer}
    return found.get((0, 0), 0.0), found.get((0, -1), 0.0)


def test_concurrent_feedback_on_one_display_from_two_workers_counts_once(db_url: str) -> None:
    # Two workers store a click on one display at once (two event ids): the first holds
    # its transaction open; the second waits for it (PostgreSQL: on the trial's unique
    # key; SQLite: the write lock), then finds the trial counted and adds nothing.
    catalog = _catalog()
    stores = [Store.open(db_url), Store.open(db_url)]
    try:
        gathered = []
        for store in stores:
            batch = Gathered()
            Learning(store).gather(
                batch,
                "c1",
                catalog,
                "p-1",
                _decision(["o01"]),
                ["o01"],
                "decisioning.propositionInteract",
                "2026-01-01",
            )
            gathered.append(batch)
        second_done = threading.Event()

        def second() -> None:
            stores[1].write(lambda s: Learning(stores[1]).write(s, gathered[1]))
            second_done.set()

        with stores[0].session(write=True) as session:
            Learning(stores[0]).write(session, gathered[0])
            worker = threading.Thread(target=second)
            worker.start()
            assert not second_done.wait(0.5)  # it waits for the first to commit
        worker.join(10)
        assert second_done.is_set()
        assert _reward_of(stores[0], "o01") == (1.0, 1.0)  # a click counts its display
    finally:
        for store in stores:
            store.close()


def test_a_display_and_a_click_named_again_by_later_events_count_once(store: Store) -> None:
    catalog = _catalog()
    learning = Learning(store)
    for event_type in ["decisioning.propositionDisplay"] * 2 + [
        "decisioning.propositionInteract"
    ] * 3:
        batch = Gathered()
        learning.gather(
            batch, "c1", catalog, "p-1", _decision(["o02"]), ["o02"], event_type, "2026-01-01"
        )
        store.write(lambda s, batch=batch: learning.write(s, batch))  # type: ignore[misc]
    assert _reward_of(store, "o02") == (1.0, 1.0)

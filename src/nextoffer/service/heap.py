"""The cyclic garbage collector around bulk work and compiled snapshots.

A compiled library is hundreds of thousands of long-lived objects (rules, code, indexes)
that every full collection would scan again; three tools keep the collector off them:

* :func:`bulk_heap` while bulk work allocates millions of objects that mostly live on
  (an import's checks, a worker's first snapshot): young collections are rare, and what
  existed before is out of their sight;
* :func:`settle_heap` after a snapshot is built: one full collection, then everything
  alive is frozen (``gc.freeze``), so later collections scan only what requests allocate;
* :func:`settle_young`, its cheap form after a refresh: freeze what is new.

Frozen objects are still freed by reference counting; only garbage cycles among them
wait for the next :func:`settle_heap`.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

#: Allocations between two young-generation collections while :func:`bulk_heap` holds.
BULK_GC_THRESHOLD = 50_000

_bulk_lock = threading.Lock()
#: Blocks in :func:`bulk_heap` now (any thread), and the thresholds the first one found.
_bulk_depth = 0
_bulk_thresholds = gc.get_threshold()


@contextlib.contextmanager
def bulk_heap() -> Iterator[None]:
    """Garbage collection for bulk work in this process (an import, a worker's slice, a
    worker's first snapshot): what exists now is frozen out of the collector's scans (the
    bodies read, for an import), and the young generation is collected every 50,000
    allocations instead of 700. Compiling thousands of rules, or building a snapshot of
    thousands of offers, allocates millions of objects that mostly live on; each
    collection re-scanned the ones already made (``docs/benchmarks.md``). Cycles are still
    collected, only less often. Blocks nested or on several threads share one change:
    the last to end restores the thresholds and thaws the frozen objects."""
    global _bulk_depth, _bulk_thresholds
    with _bulk_lock:
        if _bulk_depth == 0:
            _bulk_thresholds = gc.get_threshold()
            gc.collect()
            gc.freeze()
            gc.set_threshold(BULK_GC_THRESHOLD, *_bulk_thresholds[1:])
        _bulk_depth += 1
    try:
        yield
    finally:
        with _bulk_lock:
            _bulk_depth -= 1
            if _bulk_depth == 0:
                gc.set_threshold(*_bulk_thresholds)
                gc.unfreeze()


def settle_heap() -> None:
    """Collect garbage once, then hide every live object from the cyclic collector.

    Frozen objects (the snapshots, ``bench/decision_path.py``) no longer cost a full
    collection anything; the collect first (after thawing what an earlier call froze)
    frees the cycles of replaced snapshots, so nothing accumulates. One full collection,
    on the thread that calls it.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def settle_young(generation: int | None = None) -> int:
    """Freeze what is not frozen yet (after collecting up to ``generation`` when one is
    given): the cheap :func:`settle_heap`. How many objects it froze.

    After an incremental rebuild most of the snapshot is the previous one's objects,
    already frozen; only what the rebuild made is new. A refresh freezes it without a
    collection (``generation`` ``None``): a collection would traverse the new objects
    once (a pool's 10,000-entry candidate tuple among them), a measurable share of a
    refresh at Adobe's guardrail, to find the few garbage cycles the decisions answered since the
    last refresh left (tens of objects); frozen, those wait for the next
    :func:`settle_heap`, which the caller's growth rule (``catalogs.FROZEN_GROWTH``)
    brings since they are counted here too — the memory they hold meanwhile is bounded by
    it (figures in docs/benchmarks.md, "A cheaper refresh"). Garbage cycles among frozen
    objects (a replaced snapshot's) also wait for it. (The count is of the unfrozen
    objects only: ``gc.get_freeze_count`` walks every frozen one.)
    """
    if generation is not None:
        gc.collect(generation)
    frozen = sum(len(gc.get_objects(g)) for g in range(3))
    gc.freeze()
    return frozen

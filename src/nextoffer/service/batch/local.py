"""The ``local`` batch engine: the audience decided in worker processes on this machine.

The runner reads the tenant's profiles in key order, :data:`CHUNK` at a time (one
statement each), and hands each chunk to a pool of worker processes (one per core by
default). Each worker opened its own composition root (its decision path: reads, cap
reservations, group commits) and compiled its own snapshot from the job's library image at
start; it decides the chunk (``chunk.ChunkDecider``) and writes it as one Parquet file
(``part-NNNNN.parquet``) into the job's folder, through pyarrow's file system for the
dataset's location (a local folder, S3, GCS, HDFS: ``locations.py``). At most two chunks
per worker are in flight, so memory stays flat whatever the audience's size.

A run that stops early (cancelled, stalled, shut down, a chunk failed) drops the chunks
not started, lets each worker stop at its next group, and kills within
:data:`GRACE_SECONDS` any worker still running: a worker stuck in a call that never
returns would otherwise hold the runner and its slot for ever.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context, parent_process
from multiprocessing.connection import wait as connection_wait
from multiprocessing.util import Finalize
from typing import Any

from nextoffer.service.batch.chunk import ChunkDecider, ChunkStats, OpenWorker, Stopped
from nextoffer.service.batch.output import arrow_table
from nextoffer.service.batch.plan import JobPlan
from nextoffer.service.locations import Location
from nextoffer.storage.batch import ProfileRow

#: Profiles per chunk: one read, one task, one Parquet file (a row group) each.
CHUNK = 10_000
#: Chunks in flight per worker: one deciding, one waiting (reads overlap decisions).
IN_FLIGHT = 2
#: Seconds a stopped run's workers get to finish the group in hand before they are
#: killed (a group of 512 profiles takes well under a second).
GRACE_SECONDS = 5.0

_worker: dict[str, Any] = {}


def _exit_with_parent() -> None:
    """End this worker when the runner that started it dies (killed outright, it shuts
    down no pool): a worker left behind would wait for chunks forever, holding its
    database connections and memory."""
    parent = parent_process()
    if parent is None:
        return

    def watch() -> None:
        connection_wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="nextoffer-batch-parent", daemon=True).start()


def _start_worker(open_worker: OpenWorker, plan: JobPlan, stop: Any) -> None:
    _exit_with_parent()
    resources = open_worker()
    # Closed when the pool stops the worker (multiprocessing's own exit hooks run it).
    Finalize(resources, resources.close, exitpriority=10)
    _worker["resources"] = resources
    _worker["decider"] = ChunkDecider(plan, resources.path, learning=resources.learning)
    _worker["stop"] = stop


def _decide_chunk(index: int, rows: list[ProfileRow], output: Location) -> tuple[int, ChunkStats]:
    import pyarrow.parquet as pq

    decider: ChunkDecider = _worker["decider"]
    stop = _worker["stop"]
    events, stats = decider.decide(rows, stopped=stop.is_set)
    if stop.is_set():  # cancelled or shutting down: the job publishes nothing
        return 0, stats
    started, cpu, wall = time.thread_time(), time.process_time(), time.perf_counter()
    if events:
        # Written in place: a part is listed only once the job's manifest names it.
        filesystem, folder = output.filesystem()
        pq.write_table(
            arrow_table(events), f"{folder}/part-{index:05d}.parquet", filesystem=filesystem
        )
    stats.seconds["write"] = time.thread_time() - started
    stats.cpu += time.process_time() - cpu
    stats.wall += time.perf_counter() - wall
    return len(events), stats


class LocalEngine:
    name = "local"

    def __init__(self, open_worker: OpenWorker, *, workers: int = 0, chunk: int = CHUNK) -> None:
        self._open_worker = open_worker
        self._workers = workers or os.cpu_count() or 1
        self._chunk = chunk

    def run(
        self,
        plan: JobPlan,
        chunks: Callable[[int], Iterator[list[ProfileRow]]],
        output: Location,
        progress: Callable[[ChunkStats], bool],
    ) -> ChunkStats:
        """Decide every chunk ``chunks(size)`` yields into ``output``; ``progress`` hears
        each finished chunk's stats and stops the run by answering False."""
        total = ChunkStats()
        total.seconds["read"] = 0.0
        # spawn: the runner may be a server with threads; a forked child would inherit
        # their locks mid-use.
        context = get_context("spawn")
        # Set when the run stops early: the workers' chunks in hand (the pool has handed
        # out more than it runs) stop at their next group instead of deciding on.
        stop = context.Event()
        pool = ProcessPoolExecutor(
            self._workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._open_worker, plan, stop),
        )
        inflight: set[Future[tuple[int, ChunkStats]]] = set()
        try:
            source = chunks(self._chunk)
            index = 0
            exhausted = False
            while True:
                while not exhausted and len(inflight) < self._workers * IN_FLIGHT:
                    started = time.thread_time()
                    rows = next(source, None)
                    total.seconds["read"] += time.thread_time() - started
                    if rows is None:
                        exhausted = True
                        break
                    inflight.add(pool.submit(_decide_chunk, index, rows, output))
                    index += 1
                if not inflight:
                    break
                done, inflight = wait(inflight, timeout=1.0, return_when=FIRST_COMPLETED)
                finished = ChunkStats(advanced=bool(done))
                for future in done:
                    _, stats = future.result()
                    finished.add(stats)
                total.add(finished)
                if not progress(finished):
                    raise Stopped("the job was cancelled")
        except BaseException:
            stop.set()
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)
        return total


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a run's workers without waiting on them for ever: queued chunks are dropped,
    a worker deciding gets :data:`GRACE_SECONDS` to stop at its next group (committing
    it), and one still running then — stuck on a file system or a database that does not
    answer — is killed. Waiting for it (``shutdown(wait=True)``) held the runner, its job
    and its slot for as long as the worker hung: a cancel or a stall freed nothing."""
    # The pool's own processes (``_processes``, private: Python 3.14's ``kill_workers``
    # is the public way), taken before shutdown forgets them.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    alive = {process.sentinel: process for process in processes}
    deadline = time.monotonic() + GRACE_SECONDS
    while alive and (left := deadline - time.monotonic()) > 0:
        for sentinel in connection_wait(list(alive), timeout=left):
            alive.pop(sentinel)
    for process in alive.values():
        process.kill()
    if alive:  # reaped by the pool's own thread; gone before the job says it stopped
        connection_wait(list(alive), timeout=GRACE_SECONDS)

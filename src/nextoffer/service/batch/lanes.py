"""Calls on a dataset's store that may never return, in a bounded number of threads.

A file system or an object store can stop answering (an NFS server gone, a FUSE daemon
hung): a call on it then blocks in the kernel or in the store's client, and nothing can
stop it. A runner cannot wait for such a call — its job's slot, a cancel, a shutdown would
wait as long — so it runs it in a thread it may stop waiting for (:meth:`Call.leave`).
A thread per call piled up one more for every job on a dead store, for as long as the
store stayed dead. :class:`Lanes` runs a store's calls (its *lane*) in at most
:data:`WIDTH` threads instead, which live while the lane has calls to run: a dead store
costs a runner that many threads however many of its jobs it holds. Calls behind stuck ones
wait their turn and run once the store answers, unless their caller left them and they need
not run at all (creating the folder of a job that has ended).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from nextoffer.service.locations import Location

__all__ = ["Call", "Lanes", "lane_of"]

log = logging.getLogger("nextoffer.batch")
T = TypeVar("T")
#: Calls run at once on one store: one slow call (a large folder's removal) does not hold
#: up the next job's folder, and a store that stopped answering holds this many threads.
WIDTH = 2
#: ``/proc/self/mountinfo`` escapes a mount point's space, tab, newline and backslash.
_ESCAPED = re.compile(r"\\([0-7]{3})")


def lane_of(location: Location, mounts: Path = Path("/proc/self/mountinfo")) -> str:
    """The lane a location's calls share: a remote store's scheme and bucket or host
    (``s3a`` as ``s3``: the same objects), a local folder's mount point, read from
    ``mounts`` without touching the folder (any call on a mount that stopped answering
    blocks; so does resolving a path's links). ``/`` where ``mounts`` does not tell."""
    scheme = location.scheme
    if scheme:
        authority = location.uri.split("://", 1)[1].split("/", 1)[0]
        return f"{'s3' if scheme == 's3a' else scheme}://{authority}"
    path = os.path.normpath(os.path.abspath(location.uri.removeprefix("file://")))
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return "/"
    best = "/"
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _ESCAPED.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best = point
    return best


class Call(Generic[T]):
    """A call waiting or running on a lane. Its caller waits for it (:meth:`wait`), or
    stops waiting (:meth:`leave`): a call left runs ``after`` once it has ended — or, if
    it is ``droppable``, is not run at all when its turn comes after it was left, and
    runs ``after`` then."""

    def __init__(
        self, call: Callable[[], T], *, after: Callable[[], None] | None, droppable: bool
    ) -> None:
        self._call = call
        self._after = after
        self._droppable = droppable
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._left = False
        self._result: list[T] = []  # the call's return, once it has
        self._error: BaseException | None = None

    def run(self) -> None:
        """Run the call (on its lane's thread); never raises."""
        with self._lock:
            dropped = self._left and self._droppable
        if not dropped:
            try:
                self._result.append(self._call())
            except BaseException as exc:  # the caller's to raise, or ``after``'s to tell
                self._error = exc
        with self._lock:
            self._done.set()
            left = self._left
        if left and self._after is not None:
            try:
                self._after()
            except Exception:
                log.exception("batch: what follows a call left behind failed")

    def wait(self, timeout: float) -> bool:
        """Whether the call ended within ``timeout`` seconds."""
        return self._done.wait(timeout)

    def leave(self) -> bool:
        """Stop waiting for the call; False when it has ended (its result is yours)."""
        with self._lock:
            if self._done.is_set():
                return False
            self._left = True
            return True

    @property
    def error(self) -> BaseException | None:
        """What the call raised, once it has ended (``None``: it returned, or was
        dropped)."""
        return self._error

    def result(self) -> T:
        """What the call returned, or its exception raised."""
        if self._error is not None:
            raise self._error
        return self._result[0]


class Lanes:
    """A runner's lanes: each runs its calls in order of arrival, :data:`WIDTH` at once at
    most, in threads that live while the lane has calls."""

    def __init__(self, width: int = WIDTH) -> None:
        self._width = width
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Call[Any]]] = {}  # calls not started, per lane
        self._threads: dict[str, int] = {}  # threads running each lane's calls

    def run(
        self,
        lane: str,
        call: Callable[[], T],
        *,
        after: Callable[[], None] | None = None,
        droppable: bool = False,
        first: bool = False,
    ) -> Call[T]:
        """Run ``call`` on ``lane`` after the calls before it (:class:`Call`), or with
        ``first`` before them: the cleanup of a call that just ended, which its thread then
        runs next."""
        task = Call(call, after=after, droppable=droppable)
        with self._lock:
            queue = self._queues.setdefault(lane, deque())
            if first:
                queue.appendleft(task)
            else:
                queue.append(task)
            if self._threads.get(lane, 0) >= self._width:
                return task  # a thread of the lane runs it in turn
            self._threads[lane] = self._threads.get(lane, 0) + 1
        threading.Thread(
            target=self._drain, args=(lane,), name=f"nextoffer-batch-lane {lane}", daemon=True
        ).start()
        return task

    def _drain(self, lane: str) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(lane)
                if not queue:
                    self._queues.pop(lane, None)
                    self._threads[lane] -= 1
                    if not self._threads[lane]:
                        del self._threads[lane]
                    return
                task = queue.popleft()
            task.run()

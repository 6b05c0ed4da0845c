"""Batch decisioning jobs (the workloads API): submit, read, cancel — and run.

:meth:`BatchJobs.submit` checks the request (one segment, a dataset of the tenant, 1–30
proposition requests the container's library can answer) and stores the job ``QUEUED``.
A runner — the server's background thread (:meth:`BatchJobs.start`) or ``nextoffer batch
run`` — claims it (:meth:`claim`: a compare-and-set, and at most ``MAX_RUNNING`` running
jobs per dataset) and runs it (:meth:`execute`) on its engine:

1. ``PROCESSING``: the library image and the segment's expression are read once; the
   engine decides every profile of the audience into part files under
   ``<location>/<job>/`` (a local folder or an object store: ``locations.py``),
   reporting progress; every report is also the job's heartbeat, and finds out whether
   the job was cancelled meanwhile.
2. ``INGESTING``: what is not a part file (an engine's leftovers) is removed, and
   ``manifest.json`` is written last: the job's commit (readers list committed jobs only).
   Each entry removed, and the commit, is progress.
3. ``COMPLETED``, or ``ERROR`` with the reason in ``ode:statusDetail`` (the job's folder
   removed, or what was not in ``leftBehind``: a removal on a store that stopped answering
   goes on, on the store's one lane (``lanes.py``), and updates ``leftBehind`` if it ends).

A job whose runner died (its heartbeat older than :data:`STALE_SECONDS`, or its process
on this host gone: no process with its PID, a zombie its parent has not reaped, or one
that started at another moment, since PIDs are reused) is marked ``ERROR`` with that
reason by the next runner to look (:meth:`recover`), never left ``PROCESSING``: the
decisions it made before dying were reserved and counted, but it published no files (its
folder is removed); run it again to decide again.

A job whose runner lives but whose engine stopped advancing (a local worker stuck on a file
system or a database that does not answer, a Spark job waiting for executors that never
come) is ended too: every advance (a chunk decided or exported, a Spark task started or
ended, an entry of its folder removed while ingesting) is recorded as ``progressAt``, and
a running job with none for :data:`STALL_SECONDS` ends in ``ERROR`` (``runnerStalled``) —
by its own runner's watchdog, or by any runner's :meth:`recover`. Its runner then stops
the engine (the local engine kills a worker that does not stop), or leaves a stuck
publish behind (removing the job's files if it ever returns), and frees its slot; it
publishes nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from nextoffer.engine import DecisionRequest, PropositionRequest
from nextoffer.engine.request import MAX_PROPOSITION_REQUESTS, check_item_count, resolve
from nextoffer.errors import Conflict, NextOfferError, NotFound, Unprocessable
from nextoffer.ids import IdFactory, format_datetime, parse_datetime
from nextoffer.service import locations
from nextoffer.service.auth import Principal
from nextoffer.service.batch import lifecycle as lc
from nextoffer.service.batch.chunk import ChunkStats, EngineFailed, Stopped
from nextoffer.service.batch.lanes import Call, Lanes, lane_of
from nextoffer.service.batch.plan import JobPlan
from nextoffer.service.catalogs import CatalogCache, build_snapshot
from nextoffer.service.datasets import Datasets
from nextoffer.service.locations import Location
from nextoffer.service.repository import Repository
from nextoffer.storage.batch import JobRecord, ProfileRow
from nextoffer.storage.store import Store

__all__ = ["BatchJobs", "JobRecord"]

log = logging.getLogger("nextoffer.batch")

#: A running job whose heartbeat is older than this is taken for dead.
STALE_SECONDS = 120.0
#: Heartbeats (and progress writes) at most this often.
HEARTBEAT_SECONDS = 1.0
#: A processing job whose engine has not advanced for this long is ended as stalled
#: (``runnerStalled``); 0 never. Spark counts a task's profiles only when the task ends, so
#: this must exceed the longest task (docs/batch.md).
STALL_SECONDS = 3600.0
#: Jobs a server's runner runs at once; others wait QUEUED. A local job already has a
#: worker process per core, and datasets cost nothing: without a bound, a tenant's jobs
#: on many datasets (five running each) started processes until memory ran out.
MAX_JOBS = 2
#: How long a runner waits for an ended job's folder to be removed. On a mount that stopped
#: answering (an NFS server gone) the removal blocks in the kernel: it is then left running
#: in a thread of its own, and the job's ``leftBehind`` says what was not removed.
CLEAN_SECONDS = 10.0
_BASE = "/xdm:propositionRequests"
#: ``/proc/<pid>/stat`` states of a process that exited: a zombie, dead (``X``, ``x``).
_EXITED = frozenset("ZXx")


class Engine(Protocol):
    name: str

    def run(
        self,
        plan: JobPlan,
        chunks: Callable[[int], Iterator[list[ProfileRow]]],
        output: Location,
        progress: Callable[[ChunkStats], bool],
    ) -> ChunkStats:
        """Decide the audience into part files (``part-*.parquet``) in ``output``."""
        ...


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _runner() -> str:
    """This process, as messages name it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner() -> str:
    """This process as a job's ``owner``: ``host:pid``, and where ``/proc`` tells it, when
    the process started (``host:pid@<boot id>/<start>``, :func:`_started`). A PID alone is
    reused: a container restarted gives its new runner the dead one's PID (1, or 7, again),
    and a job whose runner died would be taken for alive, and never ended."""
    started = _started(os.getpid())
    return _runner() if started is None else f"{_runner()}@{started}"


def _started(pid: int) -> str | None:
    """When process ``pid`` started: the kernel's boot id and the clock tick since boot
    (``/proc/<pid>/stat``'s 22nd field), which a later process given the same PID does
    not share. ``None`` where ``/proc`` does not tell (macOS, or another user's process
    hidden by ``hidepid``)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = _stat(pid)
    if fields is None or not boot:
        return None
    return f"{boot}/{fields[19]}"


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat``'s fields after the command (the state first, the start 20th);
    ``None`` where ``/proc`` does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command, in parentheses, may hold spaces
    return fields if len(fields) >= 20 else None


def _alive(pid: int, started: str | None) -> bool:
    """Whether the process recorded as ``pid`` that ``started`` then still runs. A zombie
    does not: it exited, and only its parent has not reaped it yet (a supervisor that
    does not wait for its children, or a container's PID 1 that is no init) — signal 0
    still reaches it, and its job stayed running until its heartbeat went stale. Without
    a recorded start (a record written before it was kept, a host without ``/proc``), or
    when ``/proc`` does not tell, the PID alone decides."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is not None and fields[0] in _EXITED:
        return False
    if started is None:
        return True
    now = _started(pid)
    return now is None or now == started


def _dead_here(owner: str | None, host: str) -> bool:
    """Whether a job's ``owner`` (:func:`_owner`; ``host:pid`` in older records) is a
    process of this host that is gone."""
    runner, _, started = (owner or "").partition("@")
    owner_host, _, pid = runner.rpartition(":")
    return owner_host == host and pid.isdigit() and not _alive(int(pid), started or None)


class _Left:
    """What an ended job left behind (``entry``: its ``leftBehind``), and the end of the
    call still at it. Once the job has recorded the entry (:meth:`recorded`) and the call
    has ended (:meth:`settled`), ``update`` hears how it ended (``None``: the folder was
    removed; else what failed), to bring the job's record up to date: whichever of the
    two comes second calls it (before the entry is recorded there is nothing to update;
    after it, nothing else would). Without ``update`` nothing goes on: the entry stays."""

    def __init__(
        self,
        entry: dict[str, str],
        update: Callable[[BaseException | None], None] | None = None,
    ) -> None:
        self.entry = entry
        self._update = update
        self._lock = threading.Lock()
        self._recorded = False
        self._ended: list[BaseException | None] = []  # how the call ended, once it has

    def recorded(self) -> None:
        with self._lock:
            if self._recorded:
                return
            self._recorded = True
            ended = list(self._ended)
        if ended and self._update is not None:
            self._update(ended[0])

    def settled(self, error: BaseException | None) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended.append(error)
            recorded = self._recorded
        if recorded and self._update is not None:
            self._update(error)


class _LeftBehind(Exception):
    """A job ended while a call on its folder was stuck (creating it, publishing): the
    call is left behind; ``left`` says so, for the job's ``leftBehind``."""

    def __init__(self, left: _Left) -> None:
        super().__init__(left.entry["location"])
        self.left = left


def _stuck(folder: Location, doing: str) -> dict[str, str]:
    """A job's ``leftBehind`` when it ended while ``doing`` on ``folder`` did not return."""
    return {
        "location": folder.uri,
        "reason": f"{doing} did not end when the job did: its file system or object store"
        " does not answer. It is never listed, its job not having completed; the call goes on and"
        " removes the folder if it returns, and this entry goes then (or says why the"
        " removal failed): else remove the folder by hand once the store answers",
    }


def _unremoved(folder: Location, exc: BaseException, when: str) -> dict[str, str]:
    """A job's ``leftBehind`` when removing its ``folder`` failed (``when``: ``" after
    all"`` for a removal that went on after the job ended)."""
    return {
        "location": folder.uri,
        "reason": f"the job's folder, if it was written, could not be removed{when}:"
        f" {locations.explain(folder, exc)}. It is never listed, its job not having completed:"
        " remove it by hand",
    }


def parse_propositions(body: Mapping[str, Any]) -> tuple[PropositionRequest, ...]:
    """``xdm:propositionRequests``: 1 to 30 of activity, placement and item count (1–30,
    default 1); 422 naming the field."""
    requests = body.get("xdm:propositionRequests")
    if not isinstance(requests, list) or not requests:
        raise Unprocessable("xdm:propositionRequests must be a non-empty array", pointer=_BASE)
    if len(requests) > MAX_PROPOSITION_REQUESTS:
        raise Unprocessable(
            f"at most {MAX_PROPOSITION_REQUESTS} proposition requests are allowed",
            pointer=_BASE,
        )
    parsed = []
    for index, item in enumerate(requests):
        base = f"{_BASE}/{index}"
        if not isinstance(item, dict):
            raise Unprocessable("a proposition request must be an object", pointer=base)
        activity = item.get("xdm:activityId")
        if not isinstance(activity, str) or not activity:
            raise Unprocessable("xdm:activityId is required", pointer=f"{base}/xdm:activityId")
        placement = item.get("xdm:placementId")
        if not isinstance(placement, str) or not placement:
            raise Unprocessable("xdm:placementId is required", pointer=f"{base}/xdm:placementId")
        count = check_item_count(item.get("xdm:itemCount", 1), f"{base}/xdm:itemCount")
        parsed.append(PropositionRequest(activity, placement, count))
    return tuple(parsed)


class BatchJobs:
    def __init__(
        self,
        store: Store,
        *,
        catalogs: CatalogCache,
        repository: Repository,
        datasets: Datasets,
        clock: Callable[[], datetime],
        ids: IdFactory,
        engines: Mapping[str, Engine],
        poll_seconds: float = 1.0,
        max_jobs: int | None = None,
        stall_seconds: float | None = None,
    ) -> None:
        self._store = store
        self._datasets = datasets
        self._catalogs = catalogs
        self._repository = repository
        self._clock = clock
        self._ids = ids
        self._engines = engines
        self._poll = poll_seconds
        self._max_jobs = MAX_JOBS if max_jobs is None else max_jobs
        self._stall = STALL_SECONDS if stall_seconds is None else stall_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        #: Calls on datasets' stores, a thread per store at most (``lanes.py``).
        self._lanes = Lanes()

    # -- the API -----------------------------------------------------------------------

    def submit(
        self,
        principal: Principal,
        body: Any,
        *,
        container_id: str | None,
        engine: str | None = None,
    ) -> JobRecord:
        """Check and store a job ``QUEUED``. ``container_id`` is the path's (the 2022
        form); without it the body's ``xdm:containerId`` or the sandbox's decisioning
        container. A refusal's detail starts with the field it names (its pointer too)."""
        try:
            return self._submit(principal, body, container_id=container_id, engine=engine)
        except (NotFound, Unprocessable) as exc:
            field = (exc.pointer or "").rstrip("/0123456789").rsplit("/", 1)[-1]
            if field and not exc.detail.startswith(field):
                exc.detail = f"{field}: {exc.detail}"
                exc.args = (exc.detail,)
            raise

    def _submit(
        self,
        principal: Principal,
        body: Any,
        *,
        container_id: str | None,
        engine: str | None,
    ) -> JobRecord:
        if not isinstance(body, dict):
            raise Unprocessable("the body must be a JSON object", pointer="/")
        segments = body.get("xdm:segmentIds")
        if not isinstance(segments, list) or len(segments) != 1 or not isinstance(segments[0], str):
            raise Unprocessable(
                "xdm:segmentIds must hold exactly one segment id", pointer="/xdm:segmentIds"
            )
        dataset_id = body.get("xdm:dataSetId")
        if not isinstance(dataset_id, str) or not dataset_id:
            raise Unprocessable("xdm:dataSetId is required", pointer="/xdm:dataSetId")
        include = body.get("xdm:includeContent", False)
        if not isinstance(include, bool):
            raise Unprocessable(
                "xdm:includeContent must be a boolean", pointer="/xdm:includeContent"
            )
        engine = engine or body.get("nextoffer:engine", "local")
        if engine not in lc.ENGINES or engine not in self._engines:
            raise Unprocessable(
                f"nextoffer:engine must be one of {', '.join(self._engines)}",
                pointer="/nextoffer:engine",
            )
        seed = body.get("nextoffer:seed")
        if seed is None:
            seed = secrets.randbits(31)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise Unprocessable(
                "nextoffer:seed must be an integer from 0 to 2^31-1", pointer="/nextoffer:seed"
            )
        propositions = parse_propositions(body)
        form = "ode" if container_id is not None else "dwm"
        named = None  # the body's container (the current form): refusals point at it
        if container_id is None:
            named = body.get("xdm:containerId")
            if named is not None and (not isinstance(named, str) or not named):
                raise Unprocessable(
                    "xdm:containerId must be a non-empty string", pointer="/xdm:containerId"
                )
            container_id = named or self._decisioning_container(principal)
        with self._store.session() as session:
            try:
                self._repository.container(session, principal, container_id)
            except NotFound as exc:
                if named is None:  # the path's container: the resource itself is missing
                    raise
                raise NotFound(exc.detail, pointer="/xdm:containerId") from exc
            if session.batch.get_segment(principal.org, principal.sandbox, segments[0]) is None:
                raise NotFound(f"no segment definition {segments[0]}", pointer="/xdm:segmentIds/0")
            dataset = session.batch.get_dataset(principal.org, principal.sandbox, dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id}", pointer="/xdm:dataSetId")
        # Unknown or unusable activities and placements are refused now, not at run time.
        snapshot = self._catalogs.get(container_id)
        resolve(snapshot.catalog, DecisionRequest(propositions))
        now = _ms(self._clock())
        record = JobRecord(
            job_id=self._ids.ordered_uuid7(self._clock()),
            org_id=principal.org,
            sandbox=principal.sandbox,
            container_id=container_id,
            dataset_id=dataset_id,
            segment_id=segments[0],
            engine=engine,
            status=lc.QUEUED,
            request={
                "form": form,
                "propositions": [
                    {
                        "xdm:activityId": p.activity_id,
                        "xdm:placementId": p.placement_id,
                        "xdm:itemCount": p.item_count,
                    }
                    for p in propositions
                ],
                "includeContent": include,
                "seed": seed,
            },
            detail={"engine": engine},
            created_ms=now,
            updated_ms=now,
            heartbeat_ms=None,
            owner=None,
        )
        with self._store.session(write=True) as session:
            # The segment stays until the job is stored: a delete then sees the job (409).
            if (
                session.batch.get_segment(
                    principal.org, principal.sandbox, segments[0], lock="key share"
                )
                is None
            ):
                raise NotFound(f"no segment definition {segments[0]}", pointer="/xdm:segmentIds/0")
            session.batch.insert_job(record)
        return record

    def get(
        self, principal: Principal, job_id: str, *, container_id: str | None = None
    ) -> JobRecord:
        with self._store.session() as session:
            record = session.batch.get_job(job_id, org=principal.org, sandbox=principal.sandbox)
        if record is None or (container_id is not None and record.container_id != container_id):
            raise NotFound(f"no batch job {job_id}")
        return record

    def find(self, job_id: str) -> JobRecord:
        """Any tenant's job (the operator's ``nextoffer batch status``)."""
        with self._store.session() as session:
            record = session.batch.get_job(job_id)
        if record is None:
            raise NotFound(f"no batch job {job_id}")
        return record

    def get_all(self, principal: Principal, *, limit: int = 100) -> list[JobRecord]:
        with self._store.session() as session:
            return session.batch.list_jobs(principal.org, principal.sandbox, limit=limit)

    def cancel(
        self, principal: Principal, job_id: str, *, container_id: str | None = None
    ) -> JobRecord:
        """End a queued or running job in ``ERROR`` (reason: cancelled); its runner stops at
        its next heartbeat and publishes nothing. A finished job is a 409."""
        record = self.get(principal, job_id, container_id=container_id)
        detail = {
            **record.detail,
            "errors": [{"code": "cancelled", "message": f"cancelled by {principal.client_id}"}],
            "finishedAt": format_datetime(self._clock()),
        }
        with self._store.session(write=True) as session:
            moved = session.batch.move_job(
                job_id,
                expect=lc.OPEN,
                values={"status": lc.ERROR, "detail": detail, "updated_ms": _ms(self._clock())},
            )
        if not moved:
            raise Conflict(f"batch job {job_id} is finished ({self.get(principal, job_id).status})")
        return self.get(principal, job_id)

    def _decisioning_container(self, principal: Principal) -> str:
        containers = [
            c for c in self._repository.containers(principal) if c.container_type == "decisioning"
        ]
        if not containers:
            raise NotFound(
                "the sandbox has no decisioning container; name one in xdm:containerId",
                pointer="/xdm:containerId",
            )
        return containers[0].container_id

    # -- running -----------------------------------------------------------------------

    def claim(self, job_id: str | None = None) -> JobRecord | None:
        """Move a queued job to ``PROCESSING`` for this process: ``job_id``, or the oldest
        whose dataset has fewer than ``MAX_RUNNING`` running jobs. ``None`` when none can."""
        with self._store.session(write=True) as session:
            batch = session.batch
            if job_id is not None:
                one = batch.get_job(job_id)
                candidates = [one] if one is not None and one.status == lc.QUEUED else []
            else:
                candidates = batch.jobs_with_status([lc.QUEUED])
            # Two runners claiming jobs of one dataset at once would each count four
            # running and both start one (PostgreSQL; SQLite's writers take turns).
            batch.lock_datasets([job.dataset_id for job in candidates])
            for job in candidates:
                if batch.count_jobs(dataset_id=job.dataset_id, statuses=lc.RUNNING) >= (
                    lc.MAX_RUNNING
                ):
                    continue
                now = _ms(self._clock())
                detail = {**job.detail, "startedAt": format_datetime(self._clock())}
                if batch.move_job(
                    job.job_id,
                    expect=[lc.QUEUED],
                    values={
                        "status": lc.PROCESSING,
                        "owner": _owner(),
                        "heartbeat_ms": now,
                        "updated_ms": now,
                        "detail": detail,
                    },
                ):
                    return batch.get_job(job.job_id)
        return None

    def recover(self) -> list[str]:
        """Mark ``ERROR`` every running job whose runner is gone, or whose engine or publish
        stalled; their ids. A lost runner's files are removed here (waited for at most
        :data:`CLEAN_SECONDS`: :meth:`_clean`); a stalled job's runner lives and removes
        its own: stalled most likely on a file system that stopped answering, removing
        them here too would hold this runner's loop that long for each."""
        now = _ms(self._clock())
        host = socket.gethostname()
        ended = []
        with self._store.session() as session:
            running = session.batch.jobs_with_status(lc.RUNNING)
        for job in running:
            dead_here = _dead_here(job.owner, host)
            stale = job.heartbeat_ms is None or now - job.heartbeat_ms > STALE_SECONDS * 1000
            done = job.detail.get("profilesDone", 0)
            if dead_here or stale:
                why = "exited" if dead_here else f"sent no heartbeat for {STALE_SECONDS:.0f} s"
                code = "runnerLost"
                message = (
                    f"the process running the job ({(job.owner or '').partition('@')[0]})"
                    f" {why} while it was"
                    f" {job.status} ({done} profiles done); decisions made before that count"
                    " toward caps, no files were published; submit the job again"
                )
            elif self._stalled(job, now):
                code, message = "runnerStalled", self._stall_message(job.detail, job.status)
            else:
                continue
            detail = {
                **job.detail,
                "errors": [{"code": code, "message": message}],
                "finishedAt": format_datetime(self._clock()),
            }
            with self._store.session(write=True) as session:
                moved = session.batch.move_job(
                    job.job_id,
                    expect=[job.status],
                    values={"status": lc.ERROR, "detail": detail, "updated_ms": now},
                )
            if moved:
                ended.append(job.job_id)
                log.error("batch job %s: %s", job.job_id, message)
                if code == "runnerLost":
                    self._note_left(job, self._clean(job))
        return ended

    def _stalled(self, job: JobRecord, now_ms: int) -> bool:
        """Whether a job another runner may own has not advanced for :data:`STALL_SECONDS`
        (its ``progressAt``, processing or ingesting; a job that has none yet is still
        being planned)."""
        text = job.detail.get("progressAt")
        if self._stall <= 0 or job.status not in lc.RUNNING or not isinstance(text, str):
            return False
        try:
            moment = parse_datetime(text)
        except ValueError:
            return False
        return now_ms - _ms(moment) > self._stall * 1000

    def _stall_message(self, detail: Mapping[str, Any], status: str) -> str:
        done = detail.get("profilesDone", 0)
        if status == lc.INGESTING:
            return (
                f"the job made no progress for {self._stall:g} s while it was INGESTING"
                f" ({done} profiles done): publishing its files is stuck (a file system or"
                " an object store that does not answer); decisions made before that count"
                " toward caps, no files were published; submit the job again"
            )
        return (
            f"the job's engine made no progress for {self._stall:g} s while it was PROCESSING"
            f" ({done} profiles done): a worker or a Spark job is"
            " stuck (a file system, a database or executors that do not answer); its engine"
            " was stopped, decisions made before that count toward caps, no files were"
            " published; submit the job again"
        )

    def execute(
        self, job: JobRecord, *, on_progress: Callable[[JobRecord], None] | None = None
    ) -> JobRecord:
        """Run a job this process claimed, to its end; the final record. ``on_progress``
        hears the record after every progress write (the CLI's progress bar)."""
        started = time.perf_counter()
        detail: dict[str, Any] = dict(job.detail)
        advanced = [time.monotonic()]  # when the engine last advanced (the watchdog's)
        alive = self._keep_alive(job, detail, advanced)
        try:
            plan, total = self._plan(job)
            detail.update(
                profilesTotal=total,
                profilesDone=0,
                decisions=0,
                progressAt=format_datetime(self._clock()),
            )
            if not self._write(job, detail, expect=[lc.PROCESSING]):
                raise Stopped("the job was cancelled")  # before its engine started
            output = self._output(job, lambda: self._beat(job, detail, on_progress))
            engine = self._engines[job.engine]
            last = [float("-inf")]  # the first finished chunk is reported at once

            def progress(step: ChunkStats) -> bool:
                detail["profilesDone"] = min(total, detail["profilesDone"] + step.profiles)
                detail["decisions"] += step.members
                now = time.monotonic()
                if step.advanced or step.profiles > 0:
                    advanced[0] = now
                    detail["progressAt"] = format_datetime(self._clock())
                if now - last[0] < HEARTBEAT_SECONDS:
                    return True
                last[0] = now
                return self._beat(job, detail, on_progress)

            stats = engine.run(plan, self._chunks(job), output, progress)
            detail.update(
                profilesDone=total,
                decisions=stats.members,
                refusedReservations=stats.refused,
                cpuSeconds={k: round(v, 3) for k, v in stats.seconds.items()},
                workerCpuSeconds=round(stats.cpu, 3),
            )
            advanced[0] = time.monotonic()  # the engine's end: ingesting starts afresh
            detail["progressAt"] = format_datetime(self._clock())
            if not self._write(job, detail, expect=[lc.PROCESSING], status=lc.INGESTING):
                raise Stopped("the job was cancelled")
            files = self._ingest(job, plan, output, detail, advanced)
            detail.update(
                files=files,
                finishedAt=format_datetime(self._clock()),
                elapsedSeconds=round(time.perf_counter() - started, 3),
            )
            if not self._write(job, detail, expect=[lc.INGESTING], status=lc.COMPLETED):
                raise Stopped("the job was cancelled")
        except _LeftBehind as exc:  # the call stuck removes the job's files if it returns
            self._note_left(job, exc.left)
        except Stopped:
            self._note_left(job, self._clean(job))
        except KeyboardInterrupt:  # Ctrl-C on ``nextoffer batch run``: end it, then go
            current = self._status(job)
            detail.update(
                errors=[
                    {
                        "code": "shutdown",
                        "message": f"the process running the job ({_runner()}) was interrupted"
                        f" while it was {current} ({detail.get('profilesDone', 0)} profiles"
                        " done); decisions made before that count toward caps, no files were"
                        " published; submit the job again",
                    }
                ],
                finishedAt=format_datetime(self._clock()),
            )
            self._end_running(job, detail)
            raise
        except Exception as exc:
            store = self._remote_store(job, exc)
            if isinstance(exc, NextOfferError):
                message = exc.detail
            elif isinstance(exc, EngineFailed):
                message = str(exc)
            elif store is not None:
                message = (
                    f"the dataset's location {store.uri} failed: {locations.explain(store, exc)}"
                )
            else:
                message = f"{type(exc).__name__}: {exc}"
            if store is not None:  # the store's own words are the operator's
                said = locations.store_said(exc)
                log.error("batch job %s failed: %s (the store said: %s)", job.job_id, message, said)
            elif isinstance(exc, (NextOfferError, OSError, EngineFailed)):  # told whole
                told = exc if isinstance(exc, NextOfferError) else message  # its internal too
                log.error("batch job %s failed: %s", job.job_id, told)
            else:  # a bug: its traceback is for whoever fixes it
                log.exception("batch job %s failed", job.job_id)
            detail.update(
                errors=[{"code": "failed", "message": message}],
                finishedAt=format_datetime(self._clock()),
            )
            self._end_running(job, detail)
        finally:
            alive.set()
        with self._store.session() as session:
            final = session.batch.get_job(job.job_id) or job
        if on_progress is not None:
            on_progress(final)
        return final

    def _remote_store(self, job: JobRecord, exc: BaseException) -> Location | None:
        """The job's dataset location when ``exc`` is its remote store's failure (an I/O
        error, a file system pyarrow lacks): its client is told what it means
        (:func:`locations.explain`), not the store's words (a library's search path, a
        host). A local folder's errors are told whole; anything else is no store's."""
        if not isinstance(exc, (OSError, ImportError)) or isinstance(exc, NextOfferError):
            return None
        try:
            location = self._location(job)
        except NextOfferError:  # the database away: the error is told whole
            return None
        return location if location is not None and location.scheme else None

    def _location(self, job: JobRecord) -> Location | None:
        """The job's dataset location; ``None`` once its dataset is gone."""
        with self._store.session() as session:
            dataset = session.batch.get_dataset(job.org_id, job.sandbox, job.dataset_id)
        return None if dataset is None else self._datasets.location(dataset)

    def _status(self, job: JobRecord) -> str:
        with self._store.session() as session:
            current = session.batch.get_job(job.job_id)
        return current.status if current is not None else job.status

    def _keep_alive(
        self, job: JobRecord, detail: Mapping[str, Any], advanced: list[float]
    ) -> threading.Event:
        """Write the job's heartbeat every quarter of :data:`STALE_SECONDS` while this
        process runs it, whatever its engine is doing: progress reports stop while Spark
        starts or the profiles are exported, and a job silent for that long would be taken
        for dead by any runner's :meth:`recover`. The heartbeat says the process lives, not
        that its engine does: the same thread is the job's watchdog, ending it as stalled
        when its engine, or its publish, has not advanced (``advanced[0]``, monotonic) for
        :data:`STALL_SECONDS`; the engine stops at its next progress report (the local
        engine's come every second, Spark's watcher's too), :meth:`_ingest` leaves a stuck
        publish behind. Set the event to stop."""
        done = threading.Event()
        period = STALE_SECONDS / 4
        if self._stall > 0:
            period = min(period, self._stall / 4)

        def beat() -> None:
            while not done.wait(period):
                try:
                    if self._stall > 0 and time.monotonic() - advanced[0] > self._stall:
                        self._end_stalled(job, detail)
                        return
                    with self._store.session(write=True) as session:
                        running = session.batch.move_job(
                            job.job_id,
                            expect=lc.RUNNING,
                            values={"heartbeat_ms": _ms(self._clock())},
                        )
                except NextOfferError as exc:  # the database away a moment: beat again
                    log.warning("batch job %s: heartbeat not written: %s", job.job_id, exc)
                    continue
                if not running:  # finished, cancelled or taken for dead meanwhile
                    return

        threading.Thread(
            target=beat, name=f"nextoffer-batch-beat-{job.job_id[:8]}", daemon=True
        ).start()
        return done

    def _end_stalled(self, job: JobRecord, detail: Mapping[str, Any]) -> None:
        """End this process's job as stalled, if it is still running: processing, else
        ingesting (in the order a job moves, so a job that starts ingesting meanwhile is
        still found), its message saying which."""
        for status in lc.RUNNING:
            message = self._stall_message(detail, status)
            ended = {
                **detail,
                "errors": [{"code": "runnerStalled", "message": message}],
                "finishedAt": format_datetime(self._clock()),
            }
            if self._write(job, ended, expect=[status], status=lc.ERROR):
                log.error("batch job %s: %s", job.job_id, message)
                return

    def _plan(self, job: JobRecord) -> tuple[JobPlan, int]:
        with self._store.session() as session:
            segment = session.batch.get_segment(job.org_id, job.sandbox, job.segment_id)
            total = session.batch.count_profiles(job.org_id, job.sandbox)
        if segment is None:
            raise NotFound(f"segment definition {job.segment_id} no longer exists")
        image = self._catalogs.image(job.container_id)
        propositions = tuple(
            PropositionRequest(p["xdm:activityId"], p["xdm:placementId"], p["xdm:itemCount"])
            for p in job.request["propositions"]
        )
        decided_at = self._clock()
        # The library may have changed since the job was submitted: check again, once.
        snapshot = build_snapshot(image, built=format_datetime(decided_at))
        resolve(snapshot.catalog, DecisionRequest(propositions))
        plan = JobPlan(
            job_id=job.job_id,
            org=job.org_id,
            sandbox=job.sandbox,
            container_id=job.container_id,
            segment=segment.body["expression"]["value"],
            propositions=propositions,
            include_content=bool(job.request.get("includeContent")),
            seed=int(job.request["seed"]),
            decided_at=decided_at,
            image=image,
        )
        return plan, total

    def _chunks(self, job: JobRecord) -> Callable[[int], Iterator[list[ProfileRow]]]:
        def chunks(size: int) -> Iterator[list[ProfileRow]]:
            after = ""
            while True:
                with self._store.session() as session:
                    rows = session.batch.profile_chunk(
                        job.org_id, job.sandbox, after=after, limit=size
                    )
                if not rows:
                    return
                after = rows[-1][0]
                yield rows

        return chunks

    def _output(self, job: JobRecord, going: Callable[[], bool]) -> Location:
        """The job's folder in its dataset's location, created on its store's lane
        (``lanes.py``) and waited for while the job goes on (``going``, each second: its
        progress and heartbeat written; False once it is cancelled, stalled or shut down).
        On a mount that stopped answering the call blocks in the kernel: waited for, it
        held the runner and its slot for ever, a cancel or a shutdown too. Then left
        behind, it removes the folder if it ever returns (and is not run at all if it had
        not started)."""
        location = self._location(job)
        if location is None:
            raise NotFound(f"dataset {job.dataset_id} no longer exists")
        output = location.join(job.job_id)
        left = self._pending(job, output, _stuck(output, "creating the job's folder"))
        task = self._lanes.run(
            lane_of(output),
            lambda: locations.make_folder(output),
            after=lambda: self._remove_late(output, left),
            droppable=True,
        )
        self._wait_for(task, going, left)
        task.result()
        return output

    def _ingest(
        self,
        job: JobRecord,
        plan: JobPlan,
        output: Location,
        detail: dict[str, Any],
        advanced: list[float],
    ) -> list[str]:
        """Publish the job (:meth:`_publish`) on its store's lane, and wait for it here,
        writing its progress every second. Each step (an entry removed, the manifest
        written) is an advance, so a long publish that advances is not ended; one stuck
        on a file system that does not answer is ended as stalled by the watchdog (or any
        runner's :meth:`recover`) — and left behind: waited for, it held this runner's slot
        for ever, as a call blocked in the kernel cannot be stopped. If that call ever
        returns, the job's files are removed (and it is not run at all if it had not
        started: it was waiting for another call on its store)."""

        def step() -> None:
            advanced[0] = time.monotonic()
            detail["progressAt"] = format_datetime(self._clock())

        left = self._pending(job, output, _stuck(output, "publishing the job's files"))
        task = self._lanes.run(
            lane_of(output),
            lambda: self._publish(job, plan, output, detail, step),
            after=lambda: self._remove_late(output, left),
            droppable=True,
        )

        def going() -> bool:
            return self._ingesting(job, detail)

        self._wait_for(task, going, left)
        return task.result()

    @staticmethod
    def _wait_for(task: Call[Any], going: Callable[[], bool], left: _Left) -> None:
        """Wait for ``task`` while ``going()`` (asked each second) says the job goes on;
        :class:`_LeftBehind` (saying ``left``) once it does not, the call still running or
        waiting its turn."""
        try:
            while not task.wait(HEARTBEAT_SECONDS):
                if not going() and task.leave():
                    raise _LeftBehind(left)
        except BaseException:  # ended, or Ctrl-C: a call still running is not waited for
            task.leave()
            raise

    def _ingesting(self, job: JobRecord, detail: Mapping[str, Any]) -> bool:
        """Write an ingesting job's progress; False once it is ended (cancelled, stalled,
        taken for dead). The database away a moment is not an end."""
        try:
            return self._write(job, detail, expect=[lc.INGESTING])
        except NextOfferError as exc:
            log.warning("batch job %s: progress not written: %s", job.job_id, exc)
            return True

    def _publish(
        self,
        job: JobRecord,
        plan: JobPlan,
        output: Location,
        detail: Mapping[str, Any],
        step: Callable[[], None],
    ) -> list[str]:
        """Remove what is not a part file (an engine's export, markers, checksums), then
        commit: the manifest, written last. ``step`` hears each entry removed and the
        commit (the job's progress)."""
        parts = []
        for info in locations.entries(output):
            name = info.base_name
            if info.is_file and name.startswith("part-") and name.endswith(".parquet"):
                parts.append(name)
            else:
                locations.delete(output, info)
                step()
        parts.sort()
        manifest = {
            "jobId": job.job_id,
            "dataSetId": job.dataset_id,
            "imsOrgId": job.org_id,
            "sandboxName": job.sandbox,
            "containerId": job.container_id,
            "segmentId": job.segment_id,
            "engine": job.engine,
            "seed": plan.seed,
            "decidedAt": format_datetime(plan.decided_at),
            "libraryVersion": plan.image.version,
            "propositionRequests": job.request["propositions"],
            "includeContent": plan.include_content,
            "profiles": detail.get("profilesTotal"),
            "rows": detail.get("decisions"),
            "format": "parquet",
            "files": parts,
        }
        locations.commit(output, manifest)
        step()
        return [f"{job.job_id}/{name}" for name in [*parts, locations.MANIFEST]]

    def _clean(self, job: JobRecord) -> _Left | None:
        """Remove what the job wrote (it published nothing, or was cancelled meanwhile),
        waiting at most :data:`CLEAN_SECONDS`; what was left behind (``leftBehind``: where,
        and why), or ``None``. The removal runs on its store's lane (``lanes.py``): on a
        mount that stopped answering it blocks in the kernel, and waited for it held the
        runner as long — a cancelled job's slot never freed, a shutdown waiting a minute a
        job, an interrupted ``batch run`` never ending, a server's loop stuck on a dead
        runner's job. Left running, it brings the job's ``leftBehind`` up to date if it
        ever ends (:meth:`_settle`). A folder left behind is never listed: it has no
        manifest."""
        location = self._location(job)
        if location is None:
            return None
        folder = location.join(job.job_id)
        left = self._pending(
            job,
            folder,
            {
                "location": folder.uri,
                "reason": f"removing the job's folder did not end within {CLEAN_SECONDS:g} s:"
                " its file system or object store does not answer. It is never listed, its"
                " job not having completed; the removal goes on, and this entry goes once it ends"
                " (or says why it failed): else remove the folder by hand once the store"
                " answers",
            },
        )
        task: Call[None] = self._lanes.run(
            lane_of(folder),
            lambda: locations.remove(folder),
            after=lambda: left.settled(task.error),
        )
        if task.wait(CLEAN_SECONDS) or not task.leave():
            try:
                task.result()
            except Exception as exc:  # the store's own words are for the operator's log
                log.warning(
                    "batch job %s: its files at %s could not be removed: %s",
                    job.job_id,
                    folder.uri,
                    locations.store_said(exc),
                )
                return _Left(_unremoved(folder, exc, ""))
            return None
        log.warning(
            "batch job %s: removing its files at %s did not end within %g s (a file system"
            " or object store that does not answer): left running",
            job.job_id,
            folder.uri,
            CLEAN_SECONDS,
        )
        return left

    def _remove_late(self, folder: Location, left: _Left) -> None:
        """Remove the folder of a job whose call on it (creating it, publishing) was left
        behind, once that call has ended; ``left`` hears how the removal ends. Not waited
        for: this runs on the folder's lane, after the call, and the removal runs next
        there (a publish that went on may have written the ended job's manifest: listed
        until its folder is removed)."""
        task: Call[None] = self._lanes.run(
            lane_of(folder),
            lambda: locations.remove(folder),
            after=lambda: left.settled(task.error),
            first=True,
        )
        if not task.leave():  # ended already
            left.settled(task.error)

    def _pending(self, job: JobRecord, folder: Location, entry: dict[str, str]) -> _Left:
        """``entry``, to be the job's ``leftBehind`` if the job ends while a call on its
        ``folder`` goes on; :meth:`_settle` brings it up to date once the call ends."""
        return _Left(entry, lambda error: self._settle(job, folder, error))

    def _settle(self, job: JobRecord, folder: Location, error: BaseException | None) -> None:
        """A removal of an ended job's folder, left running, ended after all: its
        ``leftBehind`` goes (the folder is removed), or says why the removal failed. The
        job's status told the operator to remove by hand a folder that was gone, or that
        the removal went on when it had failed; only the log said otherwise. The database
        away is logged, not raised."""
        if error is None:
            log.warning(
                "batch job %s: its files at %s were removed after all", job.job_id, folder.uri
            )
        else:
            log.warning(
                "batch job %s: its files at %s could not be removed after all: %s",
                job.job_id,
                folder.uri,
                locations.store_said(error),
            )
        try:
            with self._store.session(write=True) as session:
                current = session.batch.get_job(job.job_id)
                entry = None if current is None else current.detail.get("leftBehind")
                if current is None or not isinstance(entry, dict):
                    return
                if entry.get("location") != folder.uri:
                    return
                detail = dict(current.detail)
                if error is None:
                    del detail["leftBehind"]
                else:
                    detail["leftBehind"] = _unremoved(folder, error, " after all")
                session.batch.move_job(job.job_id, expect=[lc.ERROR], values={"detail": detail})
        except NextOfferError as exc:
            log.warning(
                "batch job %s: the end of its folder's removal not recorded: %s", job.job_id, exc
            )

    def _end_running(self, job: JobRecord, detail: dict[str, Any]) -> None:
        """End this runner's job in ``ERROR`` with ``detail``, its folder removed first: a
        client that reads ``ERROR`` finds nothing of the job left, or what was, in its
        ``leftBehind``."""
        left = self._clean(job)
        if left is not None:
            detail["leftBehind"] = left.entry
        try:
            self._write(job, detail, expect=lc.RUNNING, status=lc.ERROR)
        finally:
            if left is not None:
                left.recorded()

    def _note_left(self, job: JobRecord, left: _Left | None) -> None:
        """Record on an ended job (cancelled, shut down, stalled, its runner lost) what
        :meth:`_clean` left behind, if anything; the database away is logged, not raised."""
        if left is None:
            return
        try:
            with self._store.session(write=True) as session:
                current = session.batch.get_job(job.job_id)
                if current is None:
                    return
                session.batch.move_job(
                    job.job_id,
                    expect=[lc.ERROR],
                    values={"detail": {**current.detail, "leftBehind": left.entry}},
                )
        except NextOfferError as exc:
            log.warning("batch job %s: what was left behind not recorded: %s", job.job_id, exc)
        finally:
            left.recorded()

    def _write(
        self,
        job: JobRecord,
        detail: Mapping[str, Any],
        *,
        expect: tuple[str, ...] | list[str],
        status: str | None = None,
    ) -> bool:
        now = _ms(self._clock())
        values: dict[str, Any] = {"detail": dict(detail), "updated_ms": now, "heartbeat_ms": now}
        if status is not None:
            values["status"] = status
        with self._store.session(write=True) as session:
            return session.batch.move_job(job.job_id, expect=expect, values=values)

    def _beat(
        self,
        job: JobRecord,
        detail: Mapping[str, Any],
        on_progress: Callable[[JobRecord], None] | None,
    ) -> bool:
        """Write progress and the heartbeat; False when the job was cancelled meanwhile,
        or this process is closing (then the job ends in ``ERROR`` saying so)."""
        if self._stop.is_set():
            ended = {
                **detail,
                "errors": [
                    {
                        "code": "shutdown",
                        "message": f"the process running the job ({_runner()}) shut down while"
                        f" it was PROCESSING ({detail.get('profilesDone', 0)} profiles done);"
                        " decisions made before that count toward caps, no files were"
                        " published; submit the job again",
                    }
                ],
                "finishedAt": format_datetime(self._clock()),
            }
            self._write(job, ended, expect=[lc.PROCESSING], status=lc.ERROR)
            return False
        alive = self._write(job, detail, expect=[lc.PROCESSING])
        if alive and on_progress is not None:
            with self._store.session() as session:
                current = session.batch.get_job(job.job_id)
            if current is not None:
                on_progress(current)
        return alive

    # -- the background runner -----------------------------------------------------------

    def start(self) -> None:
        """Run queued jobs in the background (a server): a thread that recovers dead
        jobs, then claims and starts runnable ones every ``poll_seconds``."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="nextoffer-batch", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.recover()
                while self._has_room() and (job := self.claim()) is not None:
                    worker = threading.Thread(
                        target=self._run_claimed,
                        args=(job,),
                        name=f"nextoffer-batch-{job.job_id[:8]}",
                        daemon=True,
                    )
                    with self._lock:
                        self._running[job.job_id] = worker
                    worker.start()
            except NextOfferError as exc:
                log.error("batch runner: %s", exc)
            self._stop.wait(self._poll)

    def _has_room(self) -> bool:
        """Whether this runner may start another job: at most :data:`MAX_JOBS` at once."""
        with self._lock:
            return len(self._running) < self._max_jobs

    def _run_claimed(self, job: JobRecord) -> None:
        try:
            self.execute(job)
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)

    def close(self) -> None:
        """Stop claiming, and stop the jobs this process runs in the background: each
        ends in ``ERROR`` (reason: shutdown) at its next progress report, its files
        removed (or what was not, within :data:`CLEAN_SECONDS`, in its ``leftBehind``). (A
        process killed outright leaves that to the next :meth:`recover`.)"""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        with self._lock:
            running = list(self._running.values())
        for worker in running:
            worker.join(timeout=60)

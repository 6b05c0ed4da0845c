"""A job's lifecycle without a server's runner: at most five running per dataset, the rest
queued; cancelling queued and running jobs; a runner killed mid-run found and failed
with its reason, its files unpublished."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.root import NextOffer
from nextoffer.service import locations
from nextoffer.service.auth import Principal
from nextoffer.settings import Settings
from support.api import make_tenant
from support.batch import Library, add_profiles, batch_runner, dataset, segment, workload
from support.hung_mount import HungMount

PRINCIPAL = Principal("ACME@AdobeOrg", "prod", "test", "test")


@pytest.fixture
def setup(settings: Settings) -> Iterator[dict[str, Any]]:
    """A library, 30 profiles, an audience and two datasets, made over HTTP by a server
    that runs no jobs; then the test's own root."""
    quiet = Settings(**{**_fields(settings), "batch_runner": False})
    with TestClient(create_app(quiet)) as client:
        tenant = make_tenant(client, quiet.db_url, "ACME@AdobeOrg", "prod")
        library = Library(tenant, [])
        add_profiles(tenant, 30)
        body = workload(library, segment(tenant, "age >= 0"), dataset(tenant, "one"))
        other = dataset(tenant, "two")
        container = tenant.container
    with NextOffer.open(quiet) as no:
        yield {"no": no, "body": body, "other": other, "container": container}


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def test_five_running_per_dataset_the_rest_queued(setup: dict[str, Any]) -> None:
    no, body = setup["no"], setup["body"]
    jobs = [no.batch.submit(PRINCIPAL, body, container_id=None) for _ in range(6)]
    elsewhere = no.batch.submit(
        PRINCIPAL, {**body, "xdm:dataSetId": setup["other"]}, container_id=None
    )
    claimed = [no.batch.claim() for _ in range(5)]
    assert [c.job_id for c in claimed if c] == [j.job_id for j in jobs[:5]]
    assert all(c is not None and c.status == "PROCESSING" for c in claimed)
    # The sixth waits for its dataset; a job of another dataset goes ahead of it.
    nxt = no.batch.claim()
    assert nxt is not None and nxt.job_id == elsewhere.job_id
    assert no.batch.claim() is None
    assert no.batch.get(PRINCIPAL, jobs[5].job_id).status == "QUEUED"
    # One finishes: the sixth may start.
    assert claimed[0] is not None
    assert no.batch.execute(claimed[0]).status == "COMPLETED"
    sixth = no.batch.claim()
    assert sixth is not None and sixth.job_id == jobs[5].job_id


def test_cancelling_queued_and_running_jobs(setup: dict[str, Any]) -> None:
    no, body = setup["no"], setup["body"]
    queued = no.batch.submit(PRINCIPAL, body, container_id=None)
    cancelled = no.batch.cancel(PRINCIPAL, queued.job_id)
    assert cancelled.status == "ERROR"
    assert cancelled.detail["errors"][0]["code"] == "cancelled"
    assert no.batch.claim(queued.job_id) is None  # never runs
    running = no.batch.submit(PRINCIPAL, body, container_id=None)
    claimed = no.batch.claim(running.job_id)
    assert claimed is not None
    no.batch.cancel(PRINCIPAL, running.job_id)
    final = no.batch.execute(claimed)  # the runner notices at its first write and stops
    assert final.status == "ERROR" and final.detail["errors"][0]["code"] == "cancelled"
    assert no.datasets.files(PRINCIPAL, body["xdm:dataSetId"]) == []
    with pytest.raises(Exception, match="finished"):
        no.batch.cancel(PRINCIPAL, running.job_id)


def test_a_segment_in_use_cannot_be_deleted(setup: dict[str, Any]) -> None:
    no, body = setup["no"], setup["body"]
    job = no.batch.submit(PRINCIPAL, body, container_id=None)
    with pytest.raises(Exception, match="used by a batch job"):
        no.segments.delete(PRINCIPAL, body["xdm:segmentIds"][0])
    no.batch.cancel(PRINCIPAL, job.job_id)
    no.segments.delete(PRINCIPAL, body["xdm:segmentIds"][0])


def test_a_job_killed_mid_run_ends_in_error_with_its_reason(
    setup: dict[str, Any], settings: Settings, tmp_path: Path
) -> None:
    no, body = setup["no"], setup["body"]
    more = [
        {"identityMap": {"Email": [{"id": f"more{n}@example.com"}]}, "profile": {"age": 30}}
        for n in range(3000)
    ]
    assert no.profiles.upsert_many(PRINCIPAL, more) == [None] * 3000
    process = subprocess.Popen(
        _cli_run(settings, setup),
        env=_cli_env(settings, "2"),  # many small chunks: progress to see before the end
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        job = None
        while time.monotonic() < deadline:
            running = [
                j
                for j in no.batch.get_all(PRINCIPAL)
                if j.status == "PROCESSING" and j.detail.get("profilesDone", 0) > 0
            ]
            if running:
                job = running[0]
                break
            assert process.poll() is None, "the job ended before it could be killed"
            time.sleep(0.02)
        assert job is not None, "the job never started"
        os.killpg(process.pid, signal.SIGKILL)  # the runner and its worker processes
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert no.batch.get(PRINCIPAL, job.job_id).status == "PROCESSING"
    assert no.batch.recover() == [job.job_id]
    final = no.batch.get(PRINCIPAL, job.job_id)
    assert final.status == "ERROR"
    error = final.detail["errors"][0]
    assert error["code"] == "runnerLost"
    assert "exited while it was PROCESSING" in error["message"]
    done = final.detail["profilesDone"]
    assert 0 < done < final.detail["profilesTotal"] == 3030
    assert f"({done} profiles done)" in error["message"]
    assert no.datasets.files(PRINCIPAL, body["xdm:dataSetId"]) == []


@pytest.fixture
def one_chunk(settings: Settings) -> Iterator[dict[str, Any]]:
    """4,000 profiles decided as one chunk by one worker; A capped for everyone at a
    million, so its count is the number of decisions made."""
    quiet = Settings(
        **{**_fields(settings), "batch_runner": False, "batch_workers": 1, "batch_chunk": 4000}
    )
    with TestClient(create_app(quiet)) as client:
        tenant = make_tenant(client, quiet.db_url, "ACME@AdobeOrg", "prod")
        library = Library(tenant, [{"xdm:limit": 1_000_000, "xdm:scope": "global"}])
        body = workload(library, segment(tenant, "age >= 0"), dataset(tenant, "one"))
    with NextOffer.open(quiet) as no:
        people = [
            {"identityMap": {"Email": [{"id": f"p{n}@example.com"}]}, "profile": {"age": 30}}
            for n in range(4000)
        ]
        assert no.profiles.upsert_many(PRINCIPAL, people) == [None] * 4000
        yield {"no": no, "body": body, "container": tenant.container, "a": library.a}


class _SmallChunkFirst:
    """The local engine fed one profile, then all the others as one chunk: the runner
    hears of the first chunk (and of the cancel) while its worker holds the second."""

    name = "local"

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> Any:
        def split(size: int) -> Iterator[Any]:
            rows = [row for chunk in chunks(size) for row in chunk]
            yield rows[:1]
            yield rows[1:]

        return self._engine.run(plan, split, output, progress)


def test_a_cancelled_job_stops_deciding_the_chunks_in_hand(
    one_chunk: dict[str, Any], settings: Settings
) -> None:
    """Cancelled, the job stops within a group of the chunk its worker holds: it does
    not decide (and count toward caps) the 3,999 profiles it was handed."""
    from functools import partial

    from nextoffer.root import open_batch_worker
    from nextoffer.service.batch.local import LocalEngine

    no, body = one_chunk["no"], one_chunk["body"]
    worker_settings = Settings(**{**_fields(settings), "batch_runner": False})
    engine = LocalEngine(partial(open_batch_worker, worker_settings), workers=1, chunk=4000)
    batch = batch_runner(no, {"local": _SmallChunkFirst(engine)})
    job = batch.submit(PRINCIPAL, body, container_id=None)
    claimed = batch.claim(job.job_id)
    assert claimed is not None
    batch.cancel(PRINCIPAL, job.job_id)
    final = batch.execute(claimed)
    assert final.status == "ERROR" and final.detail["errors"][0]["code"] == "cancelled"
    counted = [
        row["count"]
        for row in no.reports.caps(PRINCIPAL, one_chunk["container"])
        if row["offerId"] == one_chunk["a"]
    ]
    assert counted and counted[0] < 2000, counted
    assert no.datasets.files(PRINCIPAL, body["xdm:dataSetId"]) == []


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text()
        except FileNotFoundError:  # the thread ended since the folder was listed
            continue
        found.update(int(p) for p in text.split())
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # exited, waiting for whoever adopted it to reap it


def test_workers_exit_when_their_runner_is_killed(
    one_chunk: dict[str, Any], settings: Settings
) -> None:
    """The runner killed outright (not its process group: the OOM killer picks one
    process) leaves no worker process waiting for chunks forever."""
    body = one_chunk["body"]
    request = body["xdm:propositionRequests"][0]
    command = [
        sys.executable,
        "-c",
        "from nextoffer.cli import main; main()",
        "batch",
        "run",
        "--db",
        settings.db_url,
        "--container",
        one_chunk["container"],
        "--segment",
        body["xdm:segmentIds"][0],
        "--activity",
        request["xdm:activityId"],
        "--placement",
        request["xdm:placementId"],
        "--dataset",
        body["xdm:dataSetId"],
        "--workers",
        "1",
    ]
    env = {
        **os.environ,
        "NEXTOFFER_DATASETS_DIR": settings.datasets_dir or "",
        "NEXTOFFER_BATCH_CHUNK": "4000",  # one chunk: seconds of work in hand
    }
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not children:
            assert process.poll() is None, "the job ended before its runner could be killed"
            children = {p for p in _children(process.pid) if b"spawn_main" in _cmdline(p)}
            time.sleep(0.02)
        assert children, "the runner has no worker processes"
        os.kill(process.pid, signal.SIGKILL)  # the runner alone
        process.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_gone(pid) for pid in children):
            time.sleep(0.1)
        assert all(_gone(pid) for pid in children), [p for p in children if not _gone(p)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


class _QuietEngine:
    """An engine that reports no progress for a while (Spark starting, the profiles
    exported), while another runner looks for dead jobs."""

    name = "local"

    def __init__(self) -> None:
        self.batch: Any = None
        self.recovered: list[str] | None = None

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> Any:
        from nextoffer.service.batch.chunk import ChunkStats

        time.sleep(1.5)  # longer than STALE_SECONDS below, without a progress report
        self.recovered = self.batch.recover()
        return ChunkStats()


def test_a_job_quiet_longer_than_the_stale_bound_is_not_taken_for_dead(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nextoffer.service.batch import jobs

    monkeypatch.setattr(jobs, "STALE_SECONDS", 0.4)
    no, body = setup["no"], setup["body"]
    engine = _QuietEngine()
    batch = batch_runner(no, {"local": engine})
    engine.batch = batch
    job = batch.submit(PRINCIPAL, body, container_id=None)
    claimed = batch.claim(job.job_id)
    assert claimed is not None
    final = batch.execute(claimed)
    assert engine.recovered == []
    assert final.status == "COMPLETED", final.detail


def _cli_run(settings: Settings, setup: dict[str, Any]) -> list[str]:
    body = setup["body"]
    request = body["xdm:propositionRequests"][0]
    return [
        sys.executable,
        "-c",
        "from nextoffer.cli import main; main()",
        "batch",
        "run",
        "--db",
        settings.db_url,
        "--container",
        setup["container"],
        "--segment",
        body["xdm:segmentIds"][0],
        "--activity",
        request["xdm:activityId"],
        "--placement",
        request["xdm:placementId"],
        "--dataset",
        body["xdm:dataSetId"],
        "--workers",
        "1",
    ]


def _cli_env(settings: Settings, chunk: str) -> dict[str, str]:
    return {
        **os.environ,
        "NEXTOFFER_DATASETS_DIR": settings.datasets_dir or "",
        "NEXTOFFER_BATCH_CHUNK": chunk,
    }


def test_ctrl_c_on_batch_run_ends_its_job_in_error(
    one_chunk: dict[str, Any], settings: Settings
) -> None:
    """Interrupted (Ctrl-C reaches the runner and its workers), ``batch run`` ends its job
    in ERROR and removes its parts: it held one of the dataset's five running slots."""
    no, body = one_chunk["no"], one_chunk["body"]
    process = subprocess.Popen(
        _cli_run(settings, one_chunk),
        env=_cli_env(settings, "4000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # Started in the background, Python would ignore SIGINT: a terminal's does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        job = None
        while time.monotonic() < deadline and job is None:
            assert process.poll() is None, "the job ended before it could be interrupted"
            running = [j for j in no.batch.get_all(PRINCIPAL) if j.status == "PROCESSING"]
            workers = [p for p in _children(process.pid) if b"spawn_main" in _cmdline(p)]
            job = running[0] if running and workers else None
            time.sleep(0.02)
        assert job is not None, "the job never started"
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    final = no.batch.get(PRINCIPAL, job.job_id)
    assert final.status == "ERROR", final.detail
    assert final.detail["errors"][0]["code"] == "shutdown"
    assert "interrupted while it was PROCESSING" in final.detail["errors"][0]["message"]
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    assert not (location / job.job_id).exists()


def test_batch_run_ends_jobs_whose_runner_died_before_waiting_for_their_slots(
    setup: dict[str, Any], settings: Settings
) -> None:
    """Five jobs left PROCESSING by runners that died (no server runs here to notice)
    hold every slot of the dataset: ``batch run`` ends them, then runs, instead of
    waiting for them forever."""
    no, body = setup["no"], setup["body"]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for _ in range(5):
        job = no.batch.submit(PRINCIPAL, body, container_id=None)
        assert no.batch.claim(job.job_id) is not None
        with no.store.session(write=True) as session:
            session.batch.move_job(
                job.job_id, expect=None, values={"owner": f"{socket.gethostname()}:{gone.pid}"}
            )
    finished = subprocess.run(
        _cli_run(settings, setup),
        env=_cli_env(settings, "10"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    statuses = sorted(j.status for j in no.batch.get_all(PRINCIPAL))
    assert statuses == ["COMPLETED"] + ["ERROR"] * 5


def _started(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc: the PID decides")
def test_a_dead_runners_job_ends_though_another_process_has_its_pid(
    setup: dict[str, Any],
) -> None:
    """A runner died and a live process now has its PID (a container restarted: PID 1
    again): the job recorded when its runner started, the live process started at another
    moment (or the machine booted since), so the job ends runnerLost at the first look,
    not only once its heartbeat is stale (two minutes on). A job of the live process
    itself, or recorded in the older ``host:pid`` form, stays running."""
    no, body = setup["no"], setup["body"]
    host = socket.gethostname()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    dead = subprocess.Popen(["sleep", "60"])
    dead_start = _started(dead.pid)
    dead.kill()
    dead.wait()
    time.sleep(0.05)  # a start is counted in clock ticks (10 ms): the next one starts later
    live = subprocess.Popen(["sleep", "60"])
    try:
        assert _started(live.pid) != dead_start
        owners = {
            "reused": f"{host}:{live.pid}@{boot}/{dead_start}",
            "rebooted": f"{host}:{live.pid}@{uuid.uuid4()}/{_started(live.pid)}",
            "itself": f"{host}:{live.pid}@{boot}/{_started(live.pid)}",
            "older": f"{host}:{live.pid}",
        }
        jobs = _claimed_by(no, body, owners)
        ended = no.batch.recover()
    finally:
        live.kill()
        live.wait()
    assert sorted(ended) == sorted([jobs["reused"], jobs["rebooted"]])
    for name in ("reused", "rebooted"):
        error = no.batch.get(PRINCIPAL, jobs[name]).detail["errors"][0]
        assert error["code"] == "runnerLost"
        message = error["message"]
        assert f"the process running the job ({host}:{live.pid}) exited while" in message
    for name in ("itself", "older"):
        assert no.batch.get(PRINCIPAL, jobs[name]).status == "PROCESSING"


def _claimed_by(no: NextOffer, body: dict[str, Any], owners: dict[str, str]) -> dict[str, str]:
    """A running job for each of ``owners``, recorded as claimed by that owner (a runner's
    ``host:pid@boot/start``); their ids by the owners' names."""
    jobs = {}
    for name, owner in owners.items():
        job = no.batch.submit(PRINCIPAL, body, container_id=None)
        assert no.batch.claim(job.job_id) is not None
        with no.store.session(write=True) as session:
            session.batch.move_job(job.job_id, expect=None, values={"owner": owner})
        jobs[name] = job.job_id
    return jobs


def _state(pid: int) -> str:
    """Process ``pid``'s state letter (``/proc/<pid>/stat``): ``Z`` for a zombie."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc: the PID decides")
def test_a_runner_that_exited_unreaped_is_taken_for_dead(setup: dict[str, Any]) -> None:
    """A runner died and its parent has not reaped it (a supervisor that does not wait for
    its children, a container's PID 1 that is no init): a zombie, which signal 0 still
    reaches. Its jobs, recorded with its start or in the older ``host:pid`` form, end
    runnerLost at the first look, not once their heartbeat is stale (two minutes on); a
    live process's job stays running."""
    no, body = setup["no"], setup["body"]
    host = socket.gethostname()
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    zombie = subprocess.Popen(["sleep", "60"])
    live = subprocess.Popen(["sleep", "60"])
    try:
        started = _started(zombie.pid)
        zombie.kill()  # not waited for: a zombie until the finally below reaps it
        deadline = time.monotonic() + 10
        while _state(zombie.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(zombie.pid) == "Z"
        owners = {
            "zombie": f"{host}:{zombie.pid}@{boot}/{started}",
            "older": f"{host}:{zombie.pid}",
            "live": f"{host}:{live.pid}@{boot}/{_started(live.pid)}",
        }
        jobs = _claimed_by(no, body, owners)
        ended = no.batch.recover()
    finally:
        for process in (zombie, live):
            process.kill()
            process.wait()
    assert sorted(ended) == sorted([jobs["zombie"], jobs["older"]])
    for name in ("zombie", "older"):
        error = no.batch.get(PRINCIPAL, jobs[name]).detail["errors"][0]
        assert error["code"] == "runnerLost"
        assert f"({host}:{zombie.pid}) exited while it was PROCESSING" in error["message"]
    assert no.batch.get(PRINCIPAL, jobs["live"]).status == "PROCESSING"


class _RecordingEngine:
    name = "local"

    def __init__(self) -> None:
        self.ran = False

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> Any:
        self.ran = True
        raise AssertionError("a cancelled job's engine started")


def test_a_job_cancelled_before_it_starts_starts_no_engine(setup: dict[str, Any]) -> None:
    """Cancelled between its claim and its run, the job starts no engine (no worker
    processes, no Spark) and ends as cancelled."""

    no, body = setup["no"], setup["body"]
    engine = _RecordingEngine()
    batch = batch_runner(no, {"local": engine})
    job = batch.submit(PRINCIPAL, body, container_id=None)
    claimed = batch.claim(job.job_id)
    assert claimed is not None
    batch.cancel(PRINCIPAL, job.job_id)
    final = batch.execute(claimed)
    assert not engine.ran
    assert final.status == "ERROR" and final.detail["errors"][0]["code"] == "cancelled"


def test_two_runners_claiming_at_once_keep_the_datasets_limit(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four jobs of a dataset running, two queued, two runners claiming at the same moment
    (a server's and ``batch run``'s, each slow between counting and claiming): one starts
    a fifth, the other none."""
    import threading

    from nextoffer.storage.batch import BatchTables

    no, body = setup["no"], setup["body"]
    jobs = [no.batch.submit(PRINCIPAL, body, container_id=None) for _ in range(6)]
    for job in jobs[:4]:
        assert no.batch.claim(job.job_id) is not None
    count_jobs = BatchTables.count_jobs

    def slow_count(self: BatchTables, **kwargs: Any) -> int:
        counted = count_jobs(self, **kwargs)
        time.sleep(0.5)  # both runners have counted before either claims
        return counted

    monkeypatch.setattr(BatchTables, "count_jobs", slow_count)
    claimed: list[Any] = []
    # A server's runner takes the oldest queued job while `batch run` takes its own.
    runners = [
        threading.Thread(target=lambda: claimed.append(no.batch.claim())),
        threading.Thread(target=lambda: claimed.append(no.batch.claim(jobs[5].job_id))),
    ]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    assert sorted(c is None for c in claimed) == [False, True], claimed
    statuses = sorted(no.batch.get(PRINCIPAL, j.job_id).status for j in jobs)
    assert statuses == ["PROCESSING"] * 5 + ["QUEUED"]


class _HeldEngine:
    """An engine that runs until the test lets it finish."""

    name = "local"

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> Any:
        from nextoffer.service.batch.chunk import ChunkStats

        while not self.release.wait(0.05):
            progress(ChunkStats())
        return ChunkStats()


def test_a_servers_runner_runs_a_bounded_number_of_jobs_at_once(
    setup: dict[str, Any],
) -> None:
    """Jobs of many datasets (five may run on each) do not all start at once on one
    runner: each local job has a process per core, and datasets cost nothing."""

    no, body = setup["no"], setup["body"]
    engine = _HeldEngine()
    batch = batch_runner(
        no,
        {"local": engine},
        poll_seconds=0.05,
    )
    submitted = []
    for n in range(4):
        dataset_id = no.datasets.create(PRINCIPAL, {"name": f"d{n}"}).dataset_id
        submitted.append(
            batch.submit(PRINCIPAL, {**body, "xdm:dataSetId": dataset_id}, container_id=None)
        )
    batch.start()
    try:
        time.sleep(1.0)
        statuses = [batch.get(PRINCIPAL, j.job_id).status for j in submitted]
        assert statuses == ["PROCESSING"] * 2 + ["QUEUED"] * 2  # two at once
        engine.release.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            statuses = [batch.get(PRINCIPAL, j.job_id).status for j in submitted]
            if statuses == ["COMPLETED"] * 4:
                break
            time.sleep(0.05)
        assert statuses == ["COMPLETED"] * 4
    finally:
        engine.release.set()
        batch.close()


def test_a_job_whose_store_fails_says_what_not_the_stores_words(
    setup: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A job whose dataset's store fails (an ``hdfs://`` location recorded while the
    server still had libhdfs and Java; pyarrow's real HDFS client): its error, which
    ``GET …/workloads`` and ``nextoffer batch run``/``status`` show, says which location
    failed, what that means and what to do; the store's words go to the log only."""
    from nextoffer.storage.batch import DatasetRecord

    no, body = setup["no"], setup["body"]
    with no.store.session(write=True) as session:
        session.batch.insert_dataset(
            DatasetRecord(
                "hdfs-set", PRINCIPAL.org, PRINCIPAL.sandbox, "h", "hdfs://127.0.0.1:9/o", 0
            )
        )
    job = no.batch.submit(PRINCIPAL, {**body, "xdm:dataSetId": "hdfs-set"}, container_id=None)
    claimed = no.batch.claim(job.job_id)
    assert claimed is not None
    final = no.batch.execute(claimed)
    assert final.status == "ERROR"
    message = final.detail["errors"][0]["message"]
    assert message.startswith("the dataset's location hdfs://127.0.0.1:9/o failed: this server")
    assert "HDFS" in message and "dlopen" not in message and "/usr/" not in message, message
    left = final.detail["leftBehind"]  # the store unreachable, its folder (if any) too
    assert left["location"] == f"hdfs://127.0.0.1:9/o/{job.job_id}"
    assert "dlopen" not in left["reason"] and "HDFS" in left["reason"], left
    assert "the store said: " in caplog.text


def test_a_job_failed_by_an_outage_shows_the_store_and_logs_the_drivers_words(
    setup: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A job ended by a store's outage: its error (which ``GET …/workloads`` shows the
    client) names the store; the driver's words (a host, a port) are in the log."""
    from nextoffer.errors import Unavailable

    no, body = setup["no"], setup["body"]
    outage = Unavailable("the database is unavailable", internal="10.9.9.9:5432 refused")
    engine = _StopOnlyEngine(interrupt=outage)
    batch = batch_runner(no, {"local": engine})
    job = batch.submit(PRINCIPAL, body, container_id=None)
    engine.held.add(job.job_id)
    claimed = batch.claim(job.job_id)
    assert claimed is not None
    final = batch.execute(claimed)
    assert final.status == "ERROR"
    assert final.detail["errors"][0]["message"] == "the database is unavailable"
    assert "the database is unavailable: 10.9.9.9:5432 refused" in caplog.text


class _StopOnlyEngine:
    """An engine that runs the jobs in ``held`` until they are stopped (cancelled, shut
    down: ``progress`` answers False), or raises ``interrupt`` in them; others at once."""

    name = "local"

    def __init__(self, interrupt: BaseException | None = None) -> None:
        self.held: set[str] = set()
        self.interrupt = interrupt

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> Any:
        from nextoffer.service.batch.chunk import ChunkStats, Stopped

        (Path(output.uri) / "part-00000.parquet").write_bytes(b"")  # a part, unpublished
        if plan.job_id in self.held:
            if self.interrupt is not None:
                raise self.interrupt
            while progress(ChunkStats(advanced=True)):
                time.sleep(0.05)
            raise Stopped("the job was cancelled")
        return ChunkStats()


def _hanging_removal(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make removing a job's folder block until the event returned is set, as on a mount
    whose server is gone (an NFS or FUSE mount that stopped answering): then it removes."""
    import threading

    from nextoffer.service.batch import jobs

    answers = threading.Event()
    remove = locations.remove

    def hanging(location: Any) -> None:
        answers.wait()
        remove(location)

    monkeypatch.setattr(locations, "remove", hanging)
    monkeypatch.setattr(jobs, "CLEAN_SECONDS", 0.5, raising=False)
    return answers


def _until(batch: Any, job: Any, status: str) -> Any:
    """The job once it reads ``status`` (within 20 s)."""
    deadline = time.monotonic() + 20
    while (current := batch.get(PRINCIPAL, job.job_id)).status != status:
        assert time.monotonic() < deadline, (status, current.status, current.detail)
        time.sleep(0.05)
    return current


def _gone_in_time(location: Path, jobs: Any, why: str) -> None:
    """The jobs' folders removed within 10 s (by the calls left running)."""
    deadline = time.monotonic() + 10
    while any((location / j.job_id).exists() for j in jobs):
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def _left_behind(job: Any, location: Path, says: str = "did not end within 0.5 s") -> None:
    """The ended job says its folder was left behind, and why (``says``)."""
    left = job.detail["leftBehind"]
    assert left["location"] == str(location / job.job_id)
    assert says in left["reason"], left


def _closed_ending(batch: Any, location: Path, cancelled: Any, closed: Any, says: str) -> None:
    """The runner shuts down within 10 s: ``cancelled`` ended cancelled and ``closed``
    shut down, each saying what it left behind."""
    started = time.monotonic()
    batch.close()
    assert time.monotonic() - started < 10
    for job, code in ((cancelled, "cancelled"), (closed, "shutdown")):
        final = batch.get(PRINCIPAL, job.job_id)
        assert final.status == "ERROR" and final.detail["errors"][0]["code"] == code
        _left_behind(final, location, says)


def test_cancel_and_shutdown_end_though_removing_the_jobs_folder_hangs(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job cancelled, then one running at shutdown, on a mount that stopped answering:
    removing their folders hangs. The runner waits for it a bounded time only — the
    cancelled job's slot runs the next job, shutdown ends within seconds, not a minute a
    job — each job's ``leftBehind`` names the folder left; the removal, left running,
    removes it once the mount answers."""
    no, body = setup["no"], setup["body"]
    answers = _hanging_removal(monkeypatch)
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    engine = _StopOnlyEngine()
    batch = batch_runner(no, {"local": engine}, poll_seconds=0.05, max_jobs=1)
    cancelled, after, closed = (batch.submit(PRINCIPAL, body, container_id=None) for _ in "abc")
    engine.held |= {cancelled.job_id, closed.job_id}

    def writing(job: Any) -> None:
        """Until the job's engine has written into its folder."""
        deadline = time.monotonic() + 20
        while not (location / job.job_id / "part-00000.parquet").exists():
            assert time.monotonic() < deadline, batch.get(PRINCIPAL, job.job_id)
            time.sleep(0.05)

    batch.start()
    try:
        writing(cancelled)
        batch.cancel(PRINCIPAL, cancelled.job_id)
        assert _until(batch, after, "COMPLETED").detail.get("leftBehind") is None
        writing(closed)
        _closed_ending(batch, location, cancelled, closed, "did not end within 0.5 s")
        assert all((location / job.job_id).exists() for job in (cancelled, closed))
    finally:
        answers.set()
        batch.close()
    _gone_in_time(location, (cancelled, closed), "the removals left running never ended")


def test_cancel_and_shutdown_end_a_job_whose_folder_cannot_be_created(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job starts on a mount that stopped answering: creating its folder hangs. Its
    runner does not wait for ever — cancelled, its slot runs the next job; shut down,
    it ends within seconds, its job in ERROR (shutdown) — each says what was left, and
    the call left running removes the folder once the mount answers."""
    import threading

    no, body = setup["no"], setup["body"]
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    answers = threading.Event()
    make_folder = locations.make_folder
    stuck: set[str] = set()

    def hanging(folder: Any) -> None:
        if folder.uri.rsplit("/", 1)[-1] in stuck:
            answers.wait()
        make_folder(folder)

    monkeypatch.setattr(locations, "make_folder", hanging)
    batch = batch_runner(no, {"local": _StopOnlyEngine()}, poll_seconds=0.05, max_jobs=1)
    cancelled, after, closed = (batch.submit(PRINCIPAL, body, container_id=None) for _ in "abc")
    stuck |= {cancelled.job_id, closed.job_id}

    batch.start()
    try:
        _until(batch, cancelled, "PROCESSING")
        time.sleep(0.5)  # in the folder's creation
        batch.cancel(PRINCIPAL, cancelled.job_id)
        assert _until(batch, after, "COMPLETED").detail.get("leftBehind") is None
        _until(batch, closed, "PROCESSING")
        time.sleep(0.5)
        _closed_ending(batch, location, cancelled, closed, "creating the job's folder did not end")
    finally:
        answers.set()
        batch.close()
    _gone_in_time(location, (cancelled, closed), "the calls left running left their folders")


def test_an_interrupted_run_ends_its_job_though_removing_its_folder_hangs(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C on ``nextoffer batch run`` while its job's mount stopped answering: the run
    ends (it hung in the removal for ever, its job left PROCESSING), its job in ERROR
    (``shutdown``) saying what was left behind."""
    import threading

    no, body = setup["no"], setup["body"]
    answers = _hanging_removal(monkeypatch)
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    engine = _StopOnlyEngine(interrupt=KeyboardInterrupt())
    batch = batch_runner(no, {"local": engine})
    job = batch.submit(PRINCIPAL, body, container_id=None)
    engine.held.add(job.job_id)
    claimed = batch.claim(job.job_id)
    assert claimed is not None
    raised: list[BaseException] = []

    def run() -> None:
        try:
            batch.execute(claimed)
        except BaseException as exc:
            raised.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        runner.join(10)
        assert not runner.is_alive(), "the interrupted run hangs removing its folder"
        assert [type(e) for e in raised] == [KeyboardInterrupt]
        final = batch.get(PRINCIPAL, job.job_id)
        assert final.status == "ERROR" and final.detail["errors"][0]["code"] == "shutdown"
        _left_behind(final, location)
    finally:
        answers.set()
        runner.join(10)


def _written(folder: Path) -> None:
    """Until a job's engine has written its part into ``folder`` (within 20 s)."""
    deadline = time.monotonic() + 20
    while not (folder / "part-00000.parquet").exists():
        assert time.monotonic() < deadline, f"no part in {folder}"
        time.sleep(0.05)


def _until_detail(batch: Any, job: Any, holds: Callable[[dict[str, Any]], bool]) -> Any:
    """The job once its ``ode:statusDetail`` ``holds`` (within 20 s)."""
    deadline = time.monotonic() + 20
    while not holds((current := batch.get(PRINCIPAL, job.job_id)).detail):
        assert time.monotonic() < deadline, (current.status, current.detail)
        time.sleep(0.05)
    return current


def _settled(detail: dict[str, Any]) -> bool:
    """Whether a job's ``leftBehind`` is settled: gone, or saying the removal left running
    failed after all."""
    return "leftBehind" not in detail or "after all" in detail["leftBehind"]["reason"]


def _in_kernel() -> set[str]:
    """This process's threads blocked in the kernel (state ``D``: on a FUSE mount that
    does not answer, or on a folder's lock a thread blocked there holds)."""
    blocked = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            if (task / "stat").read_text().rpartition(")")[2].split()[0] == "D":
                blocked.add(task.name)
    return blocked


@pytest.mark.parametrize("ending", ["answers", "fails"])
def test_a_removal_left_running_brings_the_jobs_left_behind_up_to_date(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """A job cancelled once its folder's file system stopped answering (a real FUSE mount
    over the folder, whose server reads nothing): removing the folder blocks in the
    kernel, is left running after ``CLEAN_SECONDS``, and the job's ``leftBehind`` names
    the folder. When the mount answers after all, the removal removes the folder and the
    entry goes: the job's status no longer tells the operator to remove by hand a folder
    that is gone. When the mount fails instead, the entry says the removal failed, and
    why."""
    from nextoffer.service.batch import jobs

    monkeypatch.setattr(jobs, "CLEAN_SECONDS", 0.5)
    no, body = setup["no"], setup["body"]
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    engine = _StopOnlyEngine()
    batch = batch_runner(no, {"local": engine}, poll_seconds=0.05, max_jobs=1)
    job = batch.submit(PRINCIPAL, body, container_id=None)
    engine.held.add(job.job_id)
    folder = location / job.job_id
    batch.start()
    try:
        _written(folder)
        with HungMount(folder) as mount:
            batch.cancel(PRINCIPAL, job.job_id)
            left = _until_detail(batch, job, lambda detail: "leftBehind" in detail)
            assert left.status == "ERROR" and left.detail["errors"][0]["code"] == "cancelled"
            _left_behind(left, location)
            if ending == "answers":
                mount.answer()
                final = _until_detail(batch, job, lambda detail: "leftBehind" not in detail)
                assert not folder.exists()
            else:
                mount.fail()
                final = _until_detail(
                    batch, job, lambda detail: "after all" in detail["leftBehind"]["reason"]
                )
                reason = final.detail["leftBehind"]["reason"]
                assert reason.startswith("the job's folder, if it was written, could not be")
                assert "Transport endpoint is not connected" in reason, reason
                assert "remove it by hand" in reason
                assert (folder / "part-00000.parquet").exists()  # beneath the mount, kept
        assert final.status == "ERROR" and final.detail["errors"][0]["code"] == "cancelled"
    finally:
        batch.close()


def test_jobs_on_a_dead_mount_hold_a_bounded_number_of_threads(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five jobs run one after another on a dataset whose mount stopped answering (a real
    FUSE mount over the dataset's folder, whose server reads nothing): each one's folder
    cannot be created, and cancelled, it ends with that call left behind. The calls left
    behind hold at most :data:`lanes.WIDTH` threads, all five jobs together (a thread each,
    blocked in the kernel for as long as the mount stays dead, piled up one more per
    job): the calls after the stuck ones wait their turn. Once the mount fails, the calls
    stuck end and those waiting run: every job's ``leftBehind`` goes (nothing of it is
    left), or, for a removal that was stuck, says it failed after all."""
    import threading

    from nextoffer.service.batch import jobs, lanes

    monkeypatch.setattr(jobs, "CLEAN_SECONDS", 0.5)
    no, body = setup["no"], setup["body"]
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    batch = batch_runner(no, {"local": _StopOnlyEngine()}, poll_seconds=0.05, max_jobs=1)
    submitted = [batch.submit(PRINCIPAL, body, container_id=None) for _ in range(5)]
    with HungMount(location) as mount:
        threads, blocked = threading.active_count(), _in_kernel()
        batch.start()  # its loop: one more thread
        try:
            for job in submitted:
                _until(batch, job, "PROCESSING")
                batch.cancel(PRINCIPAL, job.job_id)
                _until_detail(batch, job, lambda detail: "leftBehind" in detail)
            deadline = time.monotonic() + 10  # the runner's thread for the last job ends
            while threading.active_count() - threads > 1 + lanes.WIDTH:
                assert time.monotonic() < deadline, threading.enumerate()[threads:]
                time.sleep(0.05)
            assert len(_in_kernel() - blocked) <= lanes.WIDTH
            mount.fail()
            gone = 0
            for job in submitted:
                final = _until_detail(batch, job, _settled)
                assert final.status == "ERROR" and final.detail["errors"][0]["code"] == "cancelled"
                gone += "leftBehind" not in final.detail
            assert gone >= len(submitted) - lanes.WIDTH
        finally:
            batch.close()


def _hang_first_part(folder: Path) -> Path:
    """Make the job's first part file a FIFO nobody reads: its worker, writing the part,
    blocks in ``open()`` for ever, as on a file system that stopped answering (a hung NFS
    or FUSE mount). Its process lives and beats; its engine never advances again."""
    folder.mkdir(parents=True)
    fifo = folder / "part-00000.parquet"
    os.mkfifo(fifo)
    return fifo


def _hanging_manifest(monkeypatch: pytest.MonkeyPatch, keep: Path) -> Callable[[Path], Path]:
    """Make the job's manifest write block in ``open()`` for ever, as on a file system that
    stopped answering once the job's parts were written: the manifest's temporary file is
    a FIFO nobody reads. Its name is random, and the job's publish first removes whatever
    in its folder is not a part: so the temporary's name is made known (a fixed UUID), and
    the FIFO linked there when the name is drawn, between the two. The FIFO itself is
    ``keep`` (returned): a writer blocked on it can be let go after its folder is gone."""
    fixed = uuid.UUID(int=0)

    def hang(folder: Path) -> Path:
        temporary = folder / f".{locations.MANIFEST}.{fixed.hex}.tmp"

        def uuid4() -> uuid.UUID:
            if folder.is_dir() and not keep.exists():
                os.mkfifo(keep)
                os.link(keep, temporary)
            return fixed

        monkeypatch.setattr(locations, "uuid", SimpleNamespace(uuid4=uuid4))
        return keep

    return hang


def _fifo_writers() -> list[str]:
    """This process's threads blocked opening a FIFO for writing (waiting for a reader)."""
    tasks = Path("/proc/self/task").iterdir()
    return [t.name for t in tasks if "partner" in _wchan(t)]


def _wchan(task: Path) -> str:
    try:
        return (task / "wchan").read_text()
    except FileNotFoundError:
        return ""


def _unblock(fifo: Path) -> None:
    """Let a writer blocked on ``fifo`` go on (it then fails writing): the old runner
    waited for it, and the test must not leave it hanging."""
    with contextlib.suppress(FileNotFoundError):
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))


def _workers() -> set[int]:
    return {p for p in _children(os.getpid()) if b"spawn_main" in _cmdline(p)}


def _blocked_on_fifo(pid: int) -> bool:
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except FileNotFoundError:
        return False
    return any(word in wchan for word in ("partner", "fifo", "pipe"))


def _stuck_runner(
    setup: dict[str, Any],
    settings: Settings,
    *,
    stall: float,
    hang: Callable[[Path], Path] = _hang_first_part,
) -> tuple[Any, Any, Any, Path]:
    """A server's runner with one slot, running the real local engine (one worker); a job
    that will hang (``hang`` plants its FIFO, given the job's folder), and a second job
    queued behind it."""
    from functools import partial

    from nextoffer.root import open_batch_worker
    from nextoffer.service.batch.local import LocalEngine

    no, body = setup["no"], setup["body"]
    worker_settings = Settings(**{**_fields(settings), "batch_runner": False})
    batch = batch_runner(
        no,
        {"local": LocalEngine(partial(open_batch_worker, worker_settings), workers=1)},
        poll_seconds=0.05,
        max_jobs=1,
        stall_seconds=stall,
    )
    hung = batch.submit(PRINCIPAL, body, container_id=None)
    fifo = hang(Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location) / hung.job_id)
    later = batch.submit(PRINCIPAL, body, container_id=None)
    return batch, hung, later, fifo


def _until_both_end(batch: Any, hung: Any, later: Any, seen: set[int]) -> tuple[Any, Any]:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        seen |= _workers()
        first, second = (batch.get(PRINCIPAL, j.job_id) for j in (hung, later))
        if first.status == "ERROR" and second.status == "COMPLETED":
            break
        if first.status in ("PROCESSING", "INGESTING"):  # one slot: the second waits
            assert second.status == "QUEUED"
        time.sleep(0.05)
    return first, second


def test_a_job_whose_worker_hangs_ends_stalled_and_frees_its_slot(
    setup: dict[str, Any], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local worker stuck for ever (its runner alive and beating) made no progress for
    the stall bound: the job ends runnerStalled, its worker is killed, its folder removed,
    and its slot runs the next job to COMPLETED."""
    from nextoffer.service.batch import local

    monkeypatch.setattr(local, "GRACE_SECONDS", 1.0)
    no, body = setup["no"], setup["body"]
    # Well above a healthy job's worker start and first chunk (the second job's), which
    # take a second or two, and three on a busy machine.
    batch, hung, later, fifo = _stuck_runner(setup, settings, stall=8.0)
    seen: set[int] = set()
    batch.start()
    try:
        first, second = _until_both_end(batch, hung, later, seen)
    finally:
        _unblock(fifo)
        batch.close()
    _assert_stalled_then_next(first, second, "made no progress for 8 s while it was PROCESSING")
    assert first.detail["progressAt"] <= first.detail["finishedAt"]
    assert seen and all(_gone(pid) for pid in seen), [p for p in seen if not _gone(p)]
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    assert not (location / hung.job_id).exists()
    files = no.datasets.files(PRINCIPAL, body["xdm:dataSetId"])
    assert files and all(hung.job_id not in str(f) for f in files)


def test_cancelling_a_job_whose_worker_hangs_frees_its_slot(
    setup: dict[str, Any], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its worker is stuck, the job's runner does not wait for the worker
    for ever: it kills it, removes the job's folder, and the slot runs the next job."""
    from nextoffer.service.batch import local

    monkeypatch.setattr(local, "GRACE_SECONDS", 1.0)
    no, body = setup["no"], setup["body"]
    batch, hung, later, fifo = _stuck_runner(setup, settings, stall=0)  # no stall bound
    seen: set[int] = set()
    batch.start()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(_blocked_on_fifo(p) for p in seen):
            seen |= _workers()
            time.sleep(0.05)
        assert any(_blocked_on_fifo(p) for p in seen), "the worker never blocked"
        batch.cancel(PRINCIPAL, hung.job_id)
        first, second = _until_both_end(batch, hung, later, seen)
    finally:
        _unblock(fifo)
        batch.close()
    assert first.status == "ERROR" and first.detail["errors"][0]["code"] == "cancelled"
    assert second.status == "COMPLETED", second.detail
    assert all(_gone(pid) for pid in seen), [p for p in seen if not _gone(p)]
    location = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location)
    assert not (location / hung.job_id).exists()


def _assert_stalled_then_next(first: Any, second: Any, said: str) -> None:
    """The stuck job ended ``runnerStalled`` saying ``said``; the one behind it completed."""
    assert first.status == "ERROR", first.detail
    error = first.detail["errors"][0]
    assert error["code"] == "runnerStalled" and said in error["message"], error
    assert second.status == "COMPLETED", second.detail


def test_a_job_whose_publish_hangs_ends_stalled_and_frees_its_slot(
    setup: dict[str, Any],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Its parts written, the job's runner hangs writing its manifest (INGESTING; its
    process lives and beats): after the stall bound the job ends runnerStalled, publishes
    nothing, and its slot runs the next job to COMPLETED. The call left hanging, once it
    returns, removes the job's folder."""
    no, body = setup["no"], setup["body"]
    hang = _hanging_manifest(monkeypatch, tmp_path / "manifest.fifo")
    batch, hung, later, fifo = _stuck_runner(setup, settings, stall=8.0, hang=hang)
    batch.start()
    try:
        first, second = _until_both_end(batch, hung, later, set())
        assert _fifo_writers(), "the manifest's write is not hanging"
    finally:
        _unblock(fifo)
        batch.close()
    _assert_stalled_then_next(
        first, second, "made no progress for 8 s while it was INGESTING (30 profiles done)"
    )
    folder = Path(no.datasets.get(PRINCIPAL, body["xdm:dataSetId"]).location) / hung.job_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (folder.exists() or _fifo_writers()):
        time.sleep(0.05)
    assert not folder.exists() and not _fifo_writers()
    # Listed only now: the manifest's write, let go, may have moved the FIFO into place
    # as the manifest before its folder was removed, and reading it would block.
    files = no.datasets.files(PRINCIPAL, body["xdm:dataSetId"])
    assert files and all(hung.job_id not in str(f) for f in files)


class _LeftoversEngine:
    """An engine that leaves files that are not parts (as Spark leaves its profile export,
    markers and checksums), for the job's publish to remove one by one."""

    name = "local"

    def __init__(self, count: int) -> None:
        self.count = count

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> Any:
        from nextoffer.service.batch.chunk import ChunkStats

        for n in range(self.count):
            (Path(output.uri) / f"_leftover-{n}").write_bytes(b"left")
        return ChunkStats()


def test_a_long_publish_that_advances_is_not_ended(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish longer than the stall bound whose every step (an entry removed) comes
    well within it advances the job: neither its runner's watchdog nor another runner's
    recover ends it, and it completes."""
    no, body = setup["no"], setup["body"]
    batch = batch_runner(no, {"local": _LeftoversEngine(10)}, stall_seconds=3.0)
    other = batch_runner(no, {}, stall_seconds=3.0)
    recovered: list[list[str]] = []
    delete = locations.delete

    def slow_delete(location: Any, info: Any) -> None:
        time.sleep(0.5)  # ten of them: 5 s, longer than the bound
        if len(recovered) < 8:
            recovered.append(other.recover())
        delete(location, info)

    monkeypatch.setattr(locations, "delete", slow_delete)
    job = batch.submit(PRINCIPAL, body, container_id=None)
    claimed = batch.claim(job.job_id)
    assert claimed is not None
    final = batch.execute(claimed)
    assert final.status == "COMPLETED", final.detail
    assert recovered == [[]] * 8
    files = no.datasets.files(PRINCIPAL, body["xdm:dataSetId"])
    assert [f.path for f in files] == [f"{job.job_id}/{locations.MANIFEST}"]


@pytest.mark.parametrize("status", ["PROCESSING", "INGESTING"])
def test_recover_ends_a_beating_job_whose_engine_made_no_progress(
    setup: dict[str, Any], status: str
) -> None:
    """Another runner's job beats (its process lives) but its progressAt is older than the
    stall bound: any runner's recover ends it runnerStalled, processing or ingesting (its
    publish stuck); a recent one, or no bound, leaves it running."""
    from nextoffer.ids import format_datetime
    from nextoffer.service.batch import jobs

    no, body = setup["no"], setup["body"]
    job = no.batch.submit(PRINCIPAL, body, container_id=None)
    assert no.batch.claim(job.job_id) is not None
    now = no.clock()

    def progressed(seconds_ago: float) -> None:
        moment = datetime.fromtimestamp(now.timestamp() - seconds_ago, UTC)
        with no.store.session(write=True) as session:
            session.batch.move_job(
                job.job_id,
                expect=None,
                values={
                    "status": status,
                    "detail": {"progressAt": format_datetime(moment), "profilesDone": 7},
                    "heartbeat_ms": int(now.timestamp() * 1000),
                },
            )

    def runner(stall: float) -> jobs.BatchJobs:
        return batch_runner(no, {}, stall_seconds=stall)

    progressed(60)
    assert runner(3600).recover() == []
    progressed(2 * 3600)
    assert runner(0).recover() == []  # 0: no bound
    assert runner(3600).recover() == [job.job_id]
    final = no.batch.get(PRINCIPAL, job.job_id)
    assert final.status == "ERROR"
    error = final.detail["errors"][0]
    assert error["code"] == "runnerStalled"
    assert f"no progress for 3600 s while it was {status} (7 profiles done)" in error["message"]

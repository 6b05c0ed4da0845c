"""The spark engine, for real: PySpark in ``local[2]`` (Java 17), the same job as the local
engine on two copies of one database, the same decisions for the same seed."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.settings import Settings
from support.api import make_tenant
from support.batch import Library, add_profiles, batch_runner, dataset, segment, workload

MOMENT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def decisions(folder: Path) -> dict[str, list[tuple[str, bool]]]:
    """Identity -> the items of every proposition (id, fallback), from a job's files."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for part in sorted(folder.glob("part-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            identity = row["identityMap"][0][1][0]["id"]
            assert identity not in out
            out[identity] = [
                (item["id"], item["fallback"])
                for p in row["_experience"]["decisioning"]["propositions"]
                for item in p["items"]
            ]
    return out


@pytest.fixture
def prepared(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A SQLite database with a library of tied offers, 300 profiles, an audience and a
    dataset, and a second copy of it."""
    first = tmp_path / "one.db"
    settings = Settings(db_url=f"sqlite:///{first}", freeze_heap=False)
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")
        # A (priority 20) capped for everyone at 1000 and at 1 per profile: caps are
        # reserved on both engines, and hold without running out.
        library = Library(
            tenant,
            [{"xdm:limit": 1000, "xdm:scope": "global"}, {"xdm:limit": 1, "xdm:scope": "profile"}],
        )
        add_profiles(tenant, 300)
        body = workload(library, segment(tenant, "age >= 20"), dataset(tenant))
        body["xdm:propositionRequests"][0]["xdm:itemCount"] = 2
        body["nextoffer:seed"] = 1234
    second = tmp_path / "two.db"
    with sqlite3.connect(first) as source, sqlite3.connect(second) as target:
        source.backup(target)
    yield {"first": first, "second": second, "body": body, "library": library, "tmp": tmp_path}


def run(
    db: Path, datasets: Path, body: dict[str, Any], engine: str, redis_url: str | None = None
) -> tuple[Any, Path]:
    settings = Settings(
        db_url=f"sqlite:///{db}",
        freeze_heap=False,
        datasets_dir=str(datasets),
        batch_workers=2,
        spark_master="local[2]",
        redis_url=redis_url,
    )
    principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
    with NextOffer.open(settings, clock=lambda: MOMENT) as no:
        # A file:// URI: Spark's own writer and the local engine's pyarrow both take it.
        dataset_record = no.datasets.create(
            principal, {"name": engine, "location": (datasets / engine).as_uri()}
        )
        assert dataset_record.location == str(datasets / engine)
        job = no.batch.submit(
            principal,
            {**body, "xdm:dataSetId": dataset_record.dataset_id},
            container_id=None,
            engine=engine,
        )
        claimed = no.batch.claim(job.job_id)
        assert claimed is not None
        final = no.batch.execute(claimed)
    return final, Path(dataset_record.location) / job.job_id


def test_spark_and_local_decide_the_same(prepared: dict[str, Any]) -> None:
    tmp = prepared["tmp"]
    local, local_folder = run(prepared["first"], tmp / "d1", prepared["body"], "local")
    spark, spark_folder = run(prepared["second"], tmp / "d2", prepared["body"], "spark")
    assert local.status == "COMPLETED", local.detail
    assert spark.status == "COMPLETED", spark.detail
    assert spark.detail["engine"] == "spark" and local.detail["engine"] == "local"
    ours, theirs = decisions(local_folder), decisions(spark_folder)
    assert len(ours) == 240  # ages 20..99 of 0..99, three times over
    assert ours == theirs
    library = prepared["library"]
    # Every profile got A (its own cap of 1, the shared 1000) and B or the fallback.
    assert all(items[0] == (library.a, False) for items in ours.values())
    assert (tmp / "d2").exists() and (spark_folder / "manifest.json").exists()
    # Only the parts and the manifest remain: no export, no _SUCCESS, no checksums.
    assert {p.name for p in spark_folder.iterdir()} == {
        "manifest.json",
        *orjson.loads((spark_folder / "manifest.json").read_bytes())["files"],
    }


def test_spark_reserves_caps_on_the_store(prepared: dict[str, Any]) -> None:
    """A cap for everyone of 1000 and one per profile: after the spark job, an online
    decision for a decided profile no longer gets A (its own cap is taken)."""
    tmp = prepared["tmp"]
    final, _ = run(prepared["second"], tmp / "d3", prepared["body"], "spark")
    assert final.status == "COMPLETED", final.detail
    from nextoffer.engine import PropositionRequest
    from nextoffer.service.attempt import DecisionCall

    library = prepared["library"]
    settings = Settings(db_url=f"sqlite:///{prepared['second']}", freeze_heap=False)
    with NextOffer.open(settings) as no:
        principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
        container = no.repository.containers(principal)[0].container_id
        call = DecisionCall(
            (PropositionRequest(library.decision, library.placement, 1),),
            (("Email", "p0020@example.com"),),
        )
        outcome = no.decide(principal, container, call)
        assert [o.offer_id for o in outcome.result.propositions[0].options] != [library.a]
        untouched = DecisionCall(call.propositions, (("Email", "p0001@example.com"),))
        outcome = no.decide(principal, container, untouched)
        assert [o.offer_id for o in outcome.result.propositions[0].options] == [library.a]


def test_spark_writes_to_a_folder_with_spaces_and_glob_characters(
    prepared: dict[str, Any],
) -> None:
    """Hadoop takes a path's characters as they are and Spark globs what it reads: a
    dataset under ``weekly [EU] é%41?`` is read and written there, not under a
    percent-encoded twin (a job then COMPLETED with no parts) nor refused as missing."""
    tmp = prepared["tmp"]
    final, folder = run(prepared["second"], tmp / "weekly [EU] é%41?", prepared["body"], "spark")
    assert final.status == "COMPLETED", final.detail
    assert len(decisions(folder)) == 240
    assert not list(tmp.glob("weekly%20*"))


class _Counter:
    def __init__(self) -> None:
        self.value = 0


class _Context:
    """A SparkContext as the progress watcher sees it: its job group holds a finished
    job (the one that reads the export's schema) and the decisions' job, not started."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.cancelled: list[str] = []
        self.stages = {
            0: SimpleNamespace(numCompletedTasks=1, numTasks=1, numActiveTasks=0, numFailedTasks=0)
        }
        self.jobs = {0: SimpleNamespace(stageIds=[0])}

    def statusTracker(self) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(
            getJobIdsForGroup=lambda group: list(self.jobs),
            getJobInfo=self.jobs.get,
            getStageInfo=self.stages.get,
        )

    def cancelJobGroup(self, group: str) -> None:
        self.cancelled.append(group)


def test_spark_progress_counts_the_profiles_decided() -> None:
    """Progress is what finished tasks decided: nothing while the job that read the
    export's schema is the only one done (it was reported as every profile)."""
    import threading
    import time

    from nextoffer.service.batch.chunk import ChunkStats
    from nextoffer.service.batch.spark import SparkEngine

    counters = (_Counter(), _Counter(), _Counter(), _Counter())
    heard: list[ChunkStats] = []

    def progress(step: ChunkStats) -> bool:
        heard.append(step)
        return True

    stop, cancelled = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=SparkEngine._watch,
        args=(_Context(), "g", counters, progress, stop, cancelled),
    )
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heard and sum(s.profiles for s in heard) == 0
        counters[0].value, counters[1].value = 120, 30
        seen = len(heard)
        while len(heard) == seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(s.profiles for s in heard) == 120
        assert sum(s.members for s in heard) == 30
    finally:
        stop.set()
        watcher.join()


def test_spark_progress_hears_tasks_start_and_end_as_advances() -> None:
    """A Spark task that starts or ends is an advance (the job is not stalled) though no
    profile is counted yet: accumulators move only when a task ends. Nothing changing is
    no advance: executors that never come leave the job to its stall bound."""
    import threading
    import time
    from types import SimpleNamespace

    from nextoffer.service.batch.chunk import ChunkStats
    from nextoffer.service.batch.spark import SparkEngine

    context = _Context()
    heard: list[ChunkStats] = []

    def progress(step: ChunkStats) -> bool:
        heard.append(step)
        return True

    def hear(count: int) -> list[ChunkStats]:
        deadline = time.monotonic() + 10
        while len(heard) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return heard[:count]

    stop, cancelled = threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=SparkEngine._watch,
        args=(context, "g", (_Counter(), _Counter(), _Counter(), _Counter()), progress, stop),
        kwargs={"cancelled": cancelled},
    )
    watcher.start()
    try:
        assert [s.advanced for s in hear(1)] == [False]  # the decisions' job waits
        before = len(heard)
        context.jobs[1] = SimpleNamespace(stageIds=[1])
        context.stages[1] = SimpleNamespace(
            numCompletedTasks=0, numTasks=2, numActiveTasks=2, numFailedTasks=0
        )  # executors came: two tasks run
        steps = hear(before + 2)
        assert [s.advanced for s in steps[before:]] == [True, False]
        assert all(s.profiles == 0 for s in steps)
    finally:
        stop.set()
        watcher.join()


def test_two_spark_jobs_at_once_in_one_process(prepared: dict[str, Any]) -> None:
    """Two Spark jobs run by one process (a server's runner, jobs of two datasets): both
    complete. Spark gives a process one session; the first job to finish stopped it
    under the second, which ended in ERROR with its decisions counted."""
    import threading

    tmp = prepared["tmp"]
    settings = Settings(
        db_url=f"sqlite:///{prepared['second']}",
        freeze_heap=False,
        datasets_dir=str(tmp / "both"),
        spark_master="local[2]",
    )
    principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
    with NextOffer.open(settings, clock=lambda: MOMENT) as no:
        more = [
            {"identityMap": {"Email": [{"id": f"more{n}@example.com"}]}, "profile": {"age": 50}}
            for n in range(20_000)
        ]
        assert no.profiles.upsert_many(principal, more) == [None] * 20_000
        # The first job decides nobody and is done first; the second decides 20,000.
        nobody = no.segments.create(
            principal, {"name": "nobody", "expression": {"value": "age >= 1000"}}
        )
        claimed = []
        for name, segment_id in (("one", nobody.segment_id), ("two", None)):
            record = no.datasets.create(principal, {"name": name, "location": name})
            body = {**prepared["body"], "xdm:dataSetId": record.dataset_id}
            if segment_id is not None:
                body["xdm:segmentIds"] = [segment_id]
            job = no.batch.submit(principal, body, container_id=None, engine="spark")
            claimed.append(no.batch.claim(job.job_id))
        finals: list[Any] = []
        runners = [
            threading.Thread(target=lambda job=job: finals.append(no.batch.execute(job)))
            for job in claimed
        ]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
    assert [f.status for f in finals] == ["COMPLETED", "COMPLETED"], [f.detail for f in finals]


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc: Spark's JVM, its Python daemon, and the
    Python workers the daemon forks)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _python_workers() -> list[int]:
    """PySpark's Python workers under this process: forks of its daemon (the same command
    line as their parent's)."""
    found = []
    for pid in _descendants(os.getpid()):
        line = _cmdline(pid)
        if "pyspark" not in line or "daemon" not in line:
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if _cmdline(int(stat.rsplit(")", 1)[1].split()[1])) == line:
            found.append(pid)
    return found


def _counts(db: Path, offer: str) -> tuple[int, dict[str, int]]:
    """Offer ``offer``'s cap counters: everyone's, and each profile's."""
    everyone, profiles = 0, {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        for code, count in conn.execute("SELECT counter_key, count FROM cap_counters"):
            _, offer_id, _, _, _, scope = code.split("|")
            if offer_id != offer:
                continue
            if scope:
                profiles[scope] = count
            else:
                everyone = count
    return everyone, profiles


class _Killed(NamedTuple):
    db: Path
    library: Library
    profiles: int
    final: Any
    folder: Path
    container: str
    url: str


def _kill_a_task_once(
    tmp_path: Path, *, redis_url: str | None = None, db_url: str | None = None
) -> _Killed:
    """One job of 8,000 profiles in one partition (one task, one Python worker) on
    ``local[2,3]`` (three attempts), its Python worker SIGKILLed once its first groups
    are committed (the offers report has rows: with Redis counters the database holds
    no counter). Caps that never run out, counted for everyone and per profile (up to 5:
    a profile whose reservations counted twice shows 2). On SQLite unless ``db_url``."""
    import sqlalchemy

    db = tmp_path / "retry.db"
    settings = Settings(db_url=db_url or f"sqlite:///{db}", freeze_heap=False)
    principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")
        library = Library(
            tenant,
            [
                {"xdm:limit": 1_000_000, "xdm:scope": "global"},
                {"xdm:limit": 5, "xdm:scope": "profile"},
            ],
        )
        body = workload(library, segment(tenant, "age >= 0"), dataset(tenant))
    profiles = [
        {"identityMap": {"Email": [{"id": f"r{n:05d}@example.com"}]}, "profile": {"age": 30}}
        for n in range(8_000)
    ]
    run_settings = Settings(
        db_url=settings.db_url,
        freeze_heap=False,
        datasets_dir=str(tmp_path / "datasets"),
        spark_master="local[2,3]",
        redis_url=redis_url,
    )
    killed: list[int] = []
    done = threading.Event()
    reader = sqlalchemy.create_engine(settings.db_url, poolclass=sqlalchemy.NullPool)

    def committed() -> bool:
        with reader.connect() as conn:
            return conn.exec_driver_sql("SELECT 1 FROM offer_daily LIMIT 1").first() is not None

    def kill_a_deciding_worker() -> None:
        """SIGKILL the Python worker once its first groups are committed."""
        while not done.wait(0.02):
            if not committed():
                continue
            workers = _python_workers()
            if workers:
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                killed.extend(workers)
                return

    killer = threading.Thread(target=kill_a_deciding_worker, daemon=True)
    try:
        with NextOffer.open(run_settings, clock=lambda: MOMENT) as no:
            assert no.profiles.upsert_many(principal, profiles) == [None] * len(profiles)
            job = no.batch.submit(principal, body, container_id=None, engine="spark")
            claimed = no.batch.claim(job.job_id)
            assert claimed is not None
            killer.start()
            try:
                final = no.batch.execute(claimed)
            finally:
                done.set()
                killer.join()
            folder = Path(no.datasets.get(principal, body["xdm:dataSetId"]).location) / job.job_id
            container = claimed.container_id
    finally:
        reader.dispose()
    assert killed, "no Python worker was found deciding"
    return _Killed(db, library, len(profiles), final, folder, container, settings.db_url)


def _reported(url: str, offer: str) -> tuple[int, int]:
    """The offers report's propositions of ``offer``, and the ledger's rows left."""
    import sqlalchemy

    reader = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool)
    try:
        with reader.connect() as conn:
            [(proposed,)] = conn.exec_driver_sql(
                "SELECT sum(propositions) FROM offer_daily WHERE offer_id = '" + offer + "'"
            )
            [(ledger,)] = conn.exec_driver_sql("SELECT count(*) FROM batch_decisions")
    finally:
        reader.dispose()
    return int(proposed or 0), int(ledger)


def test_a_retried_spark_task_decides_again_and_counts_each_profile_once(tmp_path: Path) -> None:
    """A Spark task killed after some of its groups committed is retried: the retry
    decides the partition again from its first profile and the job completes, each
    profile's reservations and report counted once — the retry's records released what
    the killed attempt's had reserved (before the ledger, the retry failed the job;
    before that, it counted them twice). The job's ledger rows are gone once it ran."""
    db, library, profiles, final, folder, _, url = _kill_a_task_once(tmp_path)
    assert final.status == "COMPLETED", final.detail
    everyone, per_profile = _counts(db, library.a)
    _counted_once(profiles, everyone, per_profile, folder, library.a, url)


def _counted_once(
    profiles: int,
    everyone: int,
    per_profile: dict[str, int],
    folder: Path,
    offer: str,
    url: str,
) -> None:
    """Every profile got ``offer`` once: its own counter at 1, everyone's at the audience,
    a published row each, the report counting each once and no ledger row left."""
    assert len(per_profile) == profiles and set(per_profile.values()) == {1}
    assert everyone == profiles
    got = decisions(folder)
    assert len(got) == profiles
    assert all(items[0] == (offer, False) for items in got.values())
    assert _reported(url, offer) == (profiles, 0)


def test_with_redis_counters_a_retried_spark_task_counts_each_profile_once(
    tmp_path: Path,
) -> None:
    """PostgreSQL and Redis counters, the same kill: a reservation commits in Redis before
    its record's transaction, so the records go through the job's ledger in Redis, which
    releases what the killed attempt reserved as the retry takes its own. The job
    completes; in Redis every profile's own counter is 1 and everyone's the audience; the
    report counts once; the job's ledger is gone from Redis and from the database. (Before
    it, the session allowed no retry and the job ended in ERROR; without the ledger's
    release, profiles the killed attempt decided counted 2.)"""
    import redis as redis_client

    from nextoffer.storage.redis_ledger import ledger_key
    from support.backends import create_database, database_url, redis_url

    url = database_url(create_database())
    _, library, profiles, final, folder, container, _ = _kill_a_task_once(
        tmp_path, redis_url=redis_url(), db_url=url
    )
    assert final.status == "COMPLETED", final.detail
    raw = redis_client.Redis.from_url(redis_url())
    try:
        everyone, per_profile = 0, {}
        for name in raw.scan_iter(match=f"nextoffer:cap:{{{container}}}:*", count=1000):
            code = name.decode().partition("}:")[2]
            if "|" not in code:
                continue  # the marker
            _, offer_id, _, _, _, scope = code.split("|")
            if offer_id != library.a:
                continue
            count = int(raw.get(name) or 0)
            if scope:
                per_profile[scope] = count
            else:
                everyone = count
        assert not raw.exists(ledger_key(container, final.job_id))
    finally:
        raw.close()
    _counted_once(profiles, everyone, per_profile, folder, library.a, url)


class _ThreeAttempts:
    """An engine deciding the audience as three Spark task attempts would, in order,
    through the job's ledger (no Spark: what the ledger does, row by row): attempt 1 the
    first 30 profiles (then it died), attempt 2 all of them, then attempt 0 — a zombie
    older than both — the first profile again."""

    name = "spark"

    def __init__(self, no: NextOffer) -> None:
        self.no = no
        self.job_id = ""
        self.first = ""
        self.container = ""

    def run(self, plan: Any, chunks: Any, output: Any, progress: Any) -> Any:
        from nextoffer.service.batch.chunk import ChunkDecider, ChunkStats
        from nextoffer.service.batch.spark import _redis_ledger
        from nextoffer.storage.ledger import DecisionLedger

        [rows] = list(chunks(1000))
        self.job_id, self.first = plan.job_id, rows[0][0]
        self.container = plan.container_id
        redis = _redis_ledger(self.no, plan)  # with Redis counters, as a Spark run's
        if redis is not None:
            redis.open("run")
        ledger = DecisionLedger(self.no.store, plan.job_id, plan.container_id, redis)
        decider = ChunkDecider(plan, self.no.path, ledger=ledger)
        try:
            for attempt, some in (("1", rows[:30]), ("2", rows), ("0", rows[:1])):
                ledger.attempt = attempt
                decider.decide(some)
        finally:
            ledger.close()
        return ChunkStats()


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "postgresql+redis"])
def test_the_ledger_counts_each_profile_once_across_attempts(tmp_path: Path, database: str) -> None:
    """A cap for everyone of 40 and one per profile, 50 profiles: attempt 2's records
    release what attempt 1's reserved and reported, so the 30 profiles attempt 1 decided
    get A again (their own counters were at their limit) and the counters and the report
    hold attempt 2's decisions alone; a zombie attempt older than the ledger's row is
    refused and changes nothing. On both databases (PostgreSQL: the ledger's rows and
    the counters locked in the transaction), and with Redis counters (the reservations
    through the job's ledger in Redis: attempt 2's first records of A are refused there,
    everyone's cap full of attempt 1's, and release them)."""
    redis_url = None
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        from support.backends import create_database, database_url

        url = database_url(create_database())
        if database == "postgresql+redis":
            from support.backends import redis_url as test_redis_url

            redis_url = test_redis_url()
    settings = Settings(db_url=url, freeze_heap=False)
    principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")
        library = Library(
            tenant,
            [{"xdm:limit": 40, "xdm:scope": "global"}, {"xdm:limit": 1, "xdm:scope": "profile"}],
        )
        add_profiles(tenant, 50)
        body = workload(library, segment(tenant, "age >= 0"), dataset(tenant))
    run_settings = Settings(
        db_url=settings.db_url,
        freeze_heap=False,
        datasets_dir=str(tmp_path / "datasets"),
        redis_url=redis_url,
    )
    with NextOffer.open(run_settings, clock=lambda: MOMENT) as no:
        engine = _ThreeAttempts(no)
        jobs = batch_runner(no, {"spark": engine})
        job = jobs.submit(principal, body, container_id=None, engine="spark")
        claimed = jobs.claim(job.job_id)
        assert claimed is not None
        jobs.execute(claimed)
        jobs.close()
    import sqlalchemy

    reader = sqlalchemy.create_engine(url)
    with reader.connect() as conn:
        counters = [
            (code.split("|"), count)
            for code, count in conn.exec_driver_sql("SELECT counter_key, count FROM cap_counters")
        ]
        if redis_url is not None:
            assert counters == []
            counters, fields = _in_redis(redis_url, engine.container, engine.job_id)
            assert len(fields) == 50 and {attempt for attempt, *_ in fields.values()} == {"2"}
        daily = {
            offer: int(n)
            for offer, n in conn.exec_driver_sql(
                "SELECT offer_id, sum(propositions) FROM offer_daily GROUP BY 1"
            )
        }
        ledger = {
            profile: attempt
            for profile, attempt in conn.execute(
                sqlalchemy.text(
                    "SELECT profile_id, attempt FROM batch_decisions WHERE job_id = :j"
                ),
                {"j": engine.job_id},
            )
        }
    reader.dispose()
    a = [(key[5], count) for key, count in counters if key[1] == library.a]
    assert [count for scope, count in a if not scope] == [40]  # everyone's
    # (PostgreSQL's reservations create a counter at 0 before they find it full.)
    assert sorted(count for scope, count in a if scope and count) == [1] * 40
    assert daily[library.a] == 40
    assert sum(daily.values()) == 50  # one proposition per profile, attempt 1's released
    assert len(ledger) == 50 and set(ledger.values()) == {"2"}
    assert ledger[engine.first] == "2"


def _in_redis(
    url: str, container: str, job_id: str
) -> tuple[list[tuple[list[str], int]], dict[str, list[Any]]]:
    """The container's counters in Redis (code split, count), and the job's ledger's
    fields by profile (``redis_ledger.py``)."""
    import redis as redis_client

    from nextoffer.storage.redis_ledger import ledger_key

    raw = redis_client.Redis.from_url(url)
    try:
        counters = []
        for name in raw.scan_iter(match=f"nextoffer:cap:{{{container}}}:*", count=1000):
            code = name.decode().partition("}:")[2]
            if "|" in code:
                counters.append((code.split("|"), int(raw.get(name) or 0)))
        fields = {
            key.decode(): orjson.loads(value)
            for key, value in raw.hgetall(ledger_key(container, job_id)).items()
            if key
        }
    finally:
        raw.close()
    return counters, fields


def test_a_finished_jobs_ledger_rows_go_at_the_next_spark_runs_end_in_bounded_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner that died leaves its job's ledger rows; the end of any later Spark run
    deletes those of every finished job, a bounded number per transaction (a million at
    once held SQLite's write lock for seconds)."""
    from nextoffer.service.batch import spark
    from nextoffer.storage.batch import BatchTables

    db = tmp_path / "forget.db"
    settings = Settings(db_url=f"sqlite:///{db}", freeze_heap=False)
    principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")
        library = Library(tenant, [{"xdm:limit": 1, "xdm:scope": "profile"}])
        add_profiles(tenant, 20)
        body = workload(library, segment(tenant, "age >= 0"), dataset(tenant))
    steps: list[int] = []
    forget = BatchTables.forget_decisions

    def counted(self: BatchTables, job_id: str, *, limit: int) -> int:
        steps.append(forget(self, job_id, limit=limit))
        return steps[-1]

    monkeypatch.setattr(BatchTables, "forget_decisions", counted)
    monkeypatch.setattr(spark, "FORGET", 7)
    run_settings = Settings(db_url=settings.db_url, freeze_heap=False)
    with NextOffer.open(run_settings, clock=lambda: MOMENT) as no:
        engine = _ThreeAttempts(no)
        jobs = batch_runner(no, {"spark": engine})
        job = jobs.submit(principal, body, container_id=None, engine="spark")
        claimed = jobs.claim(job.job_id)
        assert claimed is not None
        assert jobs.execute(claimed).status == "COMPLETED"  # its rows left behind
        jobs.close()
        spark._forget(NextOffer.open(run_settings), "a-later-job")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        [(left,)] = conn.execute("SELECT count(*) FROM batch_decisions")
    assert left == 0
    assert steps == [0, 7, 7, 6, 0]  # the later job's (none), then the finished one's 20


@pytest.mark.parametrize("counters", ["database", "redis"])
def test_spark_sessions_leave_retries_to_the_cluster_and_allow_no_speculation(
    prepared: dict[str, Any], monkeypatch: pytest.MonkeyPatch, counters: str
) -> None:
    """The session a job creates leaves ``spark.task.maxFailures`` to the cluster (the
    ledger counts a retried task's profiles once: in the database, or in Redis with Redis
    counters) and allows no speculative copy (two live attempts of one partition): read
    from the live context."""
    from nextoffer.service.batch.spark import SparkEngine

    redis_url = None
    if counters == "redis":
        from support.backends import redis_url as test_redis_url

        redis_url = test_redis_url()
    seen: dict[str, str | None] = {}
    watch = SparkEngine._watch

    def reading(context: Any, *args: Any) -> None:
        conf = context.getConf()
        for key in ("spark.task.maxFailures", "spark.speculation"):
            seen[key] = conf.get(key)
        watch(context, *args)

    monkeypatch.setattr(SparkEngine, "_watch", staticmethod(reading))
    final, _ = run(prepared["second"], prepared["tmp"] / "d4", prepared["body"], "spark", redis_url)
    assert final.status == "COMPLETED", final.detail
    assert seen == {"spark.task.maxFailures": None, "spark.speculation": "false"}


def test_with_redis_counters_a_job_whose_ledger_is_gone_fails_saying_why(
    prepared: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's ledger in Redis missing while its tasks decide (here never made; in
    life evicted or deleted): each record reserves nothing, and the task fails rather
    than publish decisions its caps did not count; the job ends in ERROR saying what
    happened and what to do, no file published, nothing counted."""
    import redis as redis_client

    from nextoffer.storage.redis_ledger import RedisLedger
    from support.backends import redis_url

    monkeypatch.setattr(RedisLedger, "open", lambda self, run: None)
    final, folder = run(
        prepared["second"], prepared["tmp"] / "d5", prepared["body"], "spark", redis_url()
    )
    assert final.status == "ERROR", final.detail
    [error] = final.detail["errors"]
    assert error["message"].startswith("the job's ledger of reservations in Redis disappeared")
    assert "maxmemory-policy noeviction" in error["message"]
    assert "run the job again" in error["message"]
    assert not folder.exists()
    raw = redis_client.Redis.from_url(redis_url())
    try:
        counted = [
            int(raw.get(name) or 0)
            for name in raw.scan_iter(match=f"nextoffer:cap:{{{final.container_id}}}:*")
            if b"|" in name
        ]
    finally:
        raw.close()
    assert sum(counted) == 0


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def master_without_workers(tmp_path: Path) -> Iterator[str]:
    """A Spark standalone master no worker ever joins: a job sent to it waits for
    executors for ever (Spark logs "Initial job has not accepted any resources")."""
    import socket
    import subprocess
    import time

    import pyspark

    port = _free_port()
    log = (tmp_path / "master.log").open("wb")
    master = subprocess.Popen(
        [
            str(Path(pyspark.__file__).parent / "bin" / "spark-class"),
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(_free_port()),
        ],
        env={**os.environ, "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert master.poll() is None, (tmp_path / "master.log").read_text()[-2000:]
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"spark://127.0.0.1:{port}"
    finally:
        os.killpg(master.pid, signal.SIGTERM)
        master.wait(timeout=30)
        log.close()


def test_a_spark_job_waiting_for_executors_that_never_come_ends_stalled(
    prepared: dict[str, Any], master_without_workers: str
) -> None:
    """Sent to a cluster that gives it no executor, the job's Spark job waits for ever
    while its runner beats: no task starts or ends, so after the stall bound the job
    ends runnerStalled, its job group is cancelled and its runner is free again."""
    import threading
    from functools import partial

    from nextoffer.root import open_batch_worker
    from nextoffer.service.batch.spark import SparkEngine

    tmp = prepared["tmp"]
    settings = Settings(
        db_url=f"sqlite:///{prepared['first']}",
        freeze_heap=False,
        datasets_dir=str(tmp / "stalled"),
        batch_runner=False,
    )
    principal = Principal("ACME@AdobeOrg", "prod", "test", "test")
    with NextOffer.open(settings, clock=lambda: MOMENT) as no:
        engine = SparkEngine(partial(open_batch_worker, settings), master=master_without_workers)
        batch = batch_runner(
            no,
            {"spark": engine},
            stall_seconds=6.0,  # above the export and Spark's start here, far below forever
        )
        record = no.datasets.create(principal, {"name": "stalled"})
        job = batch.submit(
            principal,
            {**prepared["body"], "xdm:dataSetId": record.dataset_id},
            container_id=None,
            engine="spark",
        )
        claimed = batch.claim(job.job_id)
        assert claimed is not None
        finals: list[Any] = []
        runner = threading.Thread(target=lambda: finals.append(batch.execute(claimed)))
        runner.daemon = True  # the old runner never returned
        runner.start()
        runner.join(timeout=120)
        assert finals, "the runner still waits for executors"
        final = finals[0]
        assert final.status == "ERROR", final.detail
        assert final.detail["errors"][0]["code"] == "runnerStalled"
        assert final.detail["profilesDone"] == 0
        assert no.datasets.files(principal, record.dataset_id) == []
        assert not (Path(record.location) / job.job_id).exists()

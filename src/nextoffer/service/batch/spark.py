"""The ``spark`` batch engine: the same decisions on Apache Spark (PySpark).

The runner exports the tenant's profiles to Parquet (pyarrow, chunk by chunk: flat
memory) and Spark reads them; the job's plan — its library image included — is
broadcast, and each partition (``mapInArrow``: Arrow batches in and out) opens its own
composition root and compiles its snapshot once per Python worker, then decides with the
same ``chunk.ChunkDecider`` as the local engine: the same decision path, the same cap
reservations, the same per-profile seeded ties, the same Arrow rows
(``output.arrow_table``). Spark writes the output (its own Parquet writer, through
Hadoop's file systems: ``file://``, ``s3a://`` with hadoop-aws, ``hdfs://``, ``gs://``
with its connector) under the same schema (``output.SPARK_SCHEMA``) into the job's folder;
the export lies in the job's ``_export`` folder of the same location, so executors on a
cluster read it from where they write. S3 endpoint and keys reach Hadoop's S3A client
from the same settings as pyarrow's (``Location.hadoop_options``).

``Settings.spark_master`` picks the cluster (``local[2]`` by default, or a master URL);
``submit`` leaves it to ``spark-submit``'s ``--master`` (docs/batch.md). Executors need
nextoffer installed and the database reachable (PostgreSQL, or Redis counters beside it);
a SQLite file works only when the executors share this machine (``local[N]``).

A failed task is retried (Spark's ``spark.task.maxFailures``: a lost executor, a killed
Python worker), and each profile's reservations count once however many attempts decided
it. A task's reservations commit group by group as it decides, and a retry decides its
partition again from its first profile; so its records go through the job's ledger
(``storage.ledger.DecisionLedger``), which writes a row per decided profile in the
reservation's own transaction, and a later attempt's record of a profile releases what
the earlier one reserved as it takes its own. A failed attempt's output is never
published: the counters hold what the published rows received. Attempts are ordered by
the run's start and Spark's task attempt id (:func:`_attempt`). Speculative copies stay
off (two live attempts: the counters would follow the later one's decisions, Spark may
publish the other's rows). With Redis counters a reservation commits in Redis before the
record's transaction, so the reservations go through the job's ledger in Redis
(``storage.redis_ledger.RedisLedger``: the same rule, in the reservation's own step),
which the runner makes before Spark decides and deletes when the run ends; the database
ledger then writes the rest (docs/batch.md).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from nextoffer.service.batch.chunk import (
    ChunkDecider,
    ChunkStats,
    EngineFailed,
    OpenWorker,
    Stopped,
)
from nextoffer.service.batch.lifecycle import COMPLETED, ERROR
from nextoffer.service.batch.output import SPARK_SCHEMA, arrow_table
from nextoffer.service.batch.plan import JobPlan
from nextoffer.service.locations import Location, entries
from nextoffer.storage.batch import ProfileRow
from nextoffer.storage.ledger import DecisionLedger

log = logging.getLogger("nextoffer.batch")

#: ``Settings.spark_master`` when ``spark-submit`` started this process: its ``--master``.
SUBMITTED = "submit"
#: Profiles per exported Parquet row group, and per decided batch within a partition.
CHUNK = 10_000

#: Spark settings of every job: no speculative copy of a slow task (see the module).
NO_SPECULATION = {"spark.speculation": "false"}

#: What a task raises when the job's ledger in Redis is gone: the driver finds it in
#: Spark's error.
LEDGER_GONE = "nextoffer: the batch job's ledger in Redis is gone"


def _redis_ledger(resources: Any, plan: JobPlan) -> Any:
    """The job's ledger in Redis when the counters are there (``resources`` is a root),
    else ``None``."""
    if not resources.settings.redis_url:
        return None
    from nextoffer.storage.redis_ledger import RedisLedger  # redis: an optional dependency

    return RedisLedger(resources.counters, plan.container_id, plan.job_id)


class _Worker:
    """What a Python worker decides a job with: its root, its decider, and the job's
    ledger (with its part in Redis when the counters are there)."""

    def __init__(self, plan: JobPlan, open_worker: OpenWorker) -> None:
        self.resources = resources = open_worker()
        self.redis = _redis_ledger(resources, plan)
        self.ledger = DecisionLedger(resources.store, plan.job_id, plan.container_id, self.redis)
        self.decider = ChunkDecider(
            plan, resources.path, learning=resources.learning, ledger=self.ledger
        )

    def check(self) -> None:
        """Fail the task when the job's ledger in Redis was found gone: its records
        reserved nothing (decided as if every capped offer were full, and not counted),
        and the job must not publish them."""
        if self.redis is not None and self.redis.gone is not None:
            raise RuntimeError(f"{LEDGER_GONE}: {self.redis.gone}")

    def close(self) -> None:
        self.ledger.close()  # its queued records first, while the store is open
        self.resources.close()


#: Per Python worker of an executor: the job it decides for, and what it decides with.
_workers: dict[str, _Worker] = {}


def _worker(plan: JobPlan, open_worker: OpenWorker) -> _Worker:
    found = _workers.get(plan.job_id)
    if found is None:
        for worker in _workers.values():  # an earlier job's: this worker moved on
            worker.close()
        _workers.clear()
        found = _workers[plan.job_id] = _Worker(plan, open_worker)
    return found


def _attempt(run: int) -> str:
    """This task attempt's place among the job's attempts, as a string that sorts later
    for a later one: the run's start (epoch ms) and Spark's task attempt id, unique in
    its context and given in launch order (a retry is launched after the failure)."""
    from pyspark import TaskContext

    task = TaskContext.get()
    return f"{run:013d}.{task.taskAttemptId() if task is not None else 0:015d}"


def decide_partition(
    plan_value: Any, open_worker: OpenWorker, counters: Any, batches: Iterable[Any], run: int = 0
) -> Iterator[Any]:
    """``mapInArrow``: decide each Arrow batch of the partition's profiles; the decision
    events as Arrow batches in :func:`output.arrow_schema` (no row crosses between the JVM
    and Python one at a time). Records go through the job's ledger as this attempt's
    (:func:`_attempt`; ``run`` is the run's start)."""
    plan: JobPlan = plan_value.value
    worker = _worker(plan, open_worker)
    worker.ledger.attempt = _attempt(run)
    decider = worker.decider
    decider.restart()
    profiles, members, refused, cpu = counters
    for batch in batches:
        columns = batch.to_pydict()
        rows = list(
            zip(
                columns["profile_id"],
                columns["namespace"],
                columns["identity"],
                columns["attributes"],
                strict=True,
            )
        )
        events, stats = decider.decide(rows)
        worker.check()
        profiles.add(stats.profiles)
        members.add(stats.members)
        refused.add(stats.refused)
        cpu.add(stats.cpu)
        if events:
            yield from arrow_table(events).to_batches()


def export_profiles(
    chunks: Iterator[list[ProfileRow]],
    folder: Location,
    progress: Callable[[ChunkStats], bool] | None = None,
) -> int:
    """Write the profiles to ``folder/profiles.parquet`` one row group per chunk; how many.
    ``progress`` hears each chunk written (an advance: an export can take minutes) and
    stops the export by answering False (the job was cancelled or stalled)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("profile_id", pa.string()),
            ("namespace", pa.string()),
            ("identity", pa.string()),
            ("attributes", pa.string()),
        ]
    )
    filesystem, path = folder.filesystem()
    filesystem.create_dir(path, recursive=True)
    count = 0
    with pq.ParquetWriter(f"{path}/profiles.parquet", schema, filesystem=filesystem) as writer:
        for rows in chunks:
            columns = [[row[i] for row in rows] for i in range(4)]
            writer.write_table(pa.Table.from_arrays([pa.array(c) for c in columns], schema=schema))
            count += len(rows)
            if progress is not None and not progress(ChunkStats(advanced=True)):
                raise Stopped("the job was cancelled")
    return count


#: Characters Hadoop's path globbing reads as a pattern (Spark globs the paths it reads).
_GLOB = re.compile(r"([{}\[\]*?\\])")


def _literal(uri: str) -> str:
    """``uri`` as a path Spark reads as it is: its glob characters escaped (a dataset's
    folder may be named ``weekly [EU]``)."""
    return _GLOB.sub(r"\\\1", uri)


#: The jars that give Hadoop (so Spark) a file system for each scheme it lacks by itself.
_CONNECTORS = {
    "s3a": "hadoop-aws of Spark's Hadoop version (--packages org.apache.hadoop:hadoop-aws:V)",
    "gs": "Google's GCS connector (gcs-connector-hadoop3)",
}


def _ledger_gone(exc: Exception) -> str | None:
    """The reason in a sentence when Spark failed because the job's ledger in Redis was
    gone (:data:`LEDGER_GONE` in its error), else ``None``."""
    if LEDGER_GONE not in str(exc):
        return None
    return (
        "the job's ledger of reservations in Redis disappeared while it ran (Redis evicted"
        " or deleted it: set maxmemory-policy noeviction, docs/deploy.md), so its tasks"
        " stopped rather than count a profile twice; the decisions they committed count"
        " toward caps, no files were published; run the job again"
    )


def _missing_filesystem(output: Location, exc: Exception) -> str | None:
    """The reason in a sentence when Spark failed for want of the location's Hadoop file
    system (a Java ``ClassNotFoundException`` deep in its error), else ``None``."""
    text = str(exc)
    if "ClassNotFoundException" not in text or "FileSystem" not in text:
        return None
    scheme = output.hadoop_uri().split("://", 1)[0]
    return (
        f"Spark has no Hadoop file system for {scheme}:// on its classpath: add"
        f" {_CONNECTORS.get(scheme, 'its connector')} (docs/batch.md, On a cluster)"
    )


#: One Spark job at a time per process: ``getOrCreate`` hands every job of the process the
#: same session, and the first to finish would stop it under the others.
_SESSION = threading.Lock()


def _wait_turn(progress: Callable[[ChunkStats], bool]) -> None:
    """Take this process's Spark session, still hearing a cancel while another job has it.
    Waiting is not stalling (``advanced``): the job ahead is bounded by its own stall."""
    while not _SESSION.acquire(timeout=1.0):
        if not progress(ChunkStats(advanced=True)):
            raise Stopped("the job was cancelled")


def _tasks(tracker: Any, group: str) -> tuple[tuple[int, int, int, int], ...]:
    """The job group's stages and their running, finished and failed task counts: a
    change is an advance. One long task changes nothing until it ends (nor do the
    accumulators), so the stall bound must exceed the longest task (docs/batch.md)."""
    stages = []
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job is not None else ():
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                stages.append(
                    (stage_id, stage.numActiveTasks, stage.numCompletedTasks, stage.numFailedTasks)
                )
    return tuple(sorted(stages))


def _drop(redis: Any, job_id: str) -> None:
    """Delete the job's ledger in Redis (a record written later, by a zombie executor,
    reserves nothing). A failure is logged, not the job's error: the hash expires."""
    try:
        redis.drop()
    except Exception as exc:
        log.warning("batch job %s: its ledger in Redis not deleted (it expires): %s", job_id, exc)


#: Ledger rows deleted per transaction once a run ends.
FORGET = 10_000


def _forget(driver: Any, job_id: str) -> None:
    """Delete the job's ledger rows (and those of finished jobs whose runner died before
    it could), :data:`FORGET` per transaction, then close the driver's root. The ledger
    matters only while Spark may attempt a task again; a failure to delete is logged,
    not the job's error (the next Spark run deletes what is left)."""
    store = driver.store
    try:
        jobs = store.write(
            lambda session: session.batch.ledger_jobs(job_id, finished=(COMPLETED, ERROR))
        )
        for job in jobs:
            while store.write(
                lambda session, job=job: session.batch.forget_decisions(job, limit=FORGET)
            ):
                pass
    except Exception as exc:
        log.warning("batch job %s: its decision ledger's rows not deleted: %s", job_id, exc)
    finally:
        driver.close()


class SparkEngine:
    name = "spark"

    def __init__(self, open_worker: OpenWorker, *, master: str) -> None:
        self._open_worker = open_worker
        self._master = master

    def run(
        self,
        plan: JobPlan,
        chunks: Callable[[int], Iterator[list[ProfileRow]]],
        output: Location,
        progress: Callable[[ChunkStats], bool],
    ) -> ChunkStats:
        try:
            from pyspark.sql import SparkSession
        except ImportError as exc:  # an optional dependency
            raise RuntimeError(
                "the spark engine needs PySpark: pip install 'nextoffer[spark]'"
            ) from exc
        started = time.thread_time()
        # Not a name Spark hides (``_``/``.``): under the job's hidden export folder.
        export = output.join("_export", "profiles")
        export_profiles(chunks(CHUNK), export, progress)
        stats = ChunkStats()
        stats.seconds["export"] = time.thread_time() - started
        _wait_turn(progress)
        try:
            # The driver's own root: where the job's ledger rows are forgotten once Spark
            # is done with them, and its ledger in Redis made before (with Redis counters).
            driver = self._open_worker()
            redis = None
            try:
                redis = _redis_ledger(driver, plan)
                if redis is not None:
                    redis.open(str(time.time_ns()))
                return self._decide(SparkSession, plan, export, output, progress, stats)
            finally:
                if redis is not None:
                    _drop(redis, plan.job_id)
                _forget(driver, plan.job_id)
        finally:
            _SESSION.release()

    def _decide(
        self,
        session: Any,
        plan: JobPlan,
        export: Location,
        output: Location,
        progress: Callable[[ChunkStats], bool],
        stats: ChunkStats,
    ) -> ChunkStats:
        """Spark's part of the job: read the export, decide it, write the parts. A
        failed task is attempted again as the cluster allows (see the module)."""
        builder = session.builder.appName(f"nextoffer-batch-{plan.job_id}").config(
            "spark.sql.session.timeZone", "UTC"
        )
        for key, value in {**NO_SPECULATION, **output.hadoop_options()}.items():
            builder = builder.config(key, value)
        if self._master != SUBMITTED:  # under spark-submit, its --master stands
            builder = builder.master(self._master).config("spark.ui.enabled", "false")
        if self._master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
            # Executors on this machine run this interpreter (its installed nextoffer);
            # PySpark reads the variable when the context starts.
            os.environ["PYSPARK_PYTHON"] = sys.executable
        spark = builder.getOrCreate()
        context = spark.sparkContext
        group = f"nextoffer-{plan.job_id}"
        context.setJobGroup(group, f"nextoffer batch job {plan.job_id}", interruptOnCancel=True)
        counters = (
            context.accumulator(0),
            context.accumulator(0),
            context.accumulator(0),
            context.accumulator(0.0),
        )
        # Splits of about a quarter of the export per core, along its row groups: every
        # core gets work, whatever the export's size.
        size = sum(f.size for f in entries(export) if f.is_file)
        cores = context.defaultParallelism
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(2**20, size // (4 * cores))))
        stop = threading.Event()
        cancelled = threading.Event()
        watcher = threading.Thread(
            target=self._watch,
            args=(context, group, counters, progress, stop, cancelled),
            name=f"nextoffer-spark-watch-{plan.job_id}",
            daemon=True,
        )
        try:
            # Watching from before Spark reads the export: reading its schema is a Spark
            # job already, one that waits for executors as long as none come.
            watcher.start()
            decided_at = time.perf_counter()
            plan_value = context.broadcast(plan)
            open_worker = self._open_worker
            run = time.time_ns() // 1_000_000  # orders this run's attempts after earlier runs'
            decided = spark.read.parquet(_literal(export.hadoop_uri())).mapInArrow(
                lambda batches: decide_partition(plan_value, open_worker, counters, batches, run),
                SPARK_SCHEMA,
            )
            # append: the job's folder exists (it holds the export); the job publishes
            # only the part files (``jobs.BatchJobs._publish``).
            decided.write.mode("append").parquet(output.hadoop_uri())
            stats.wall = time.perf_counter() - decided_at
        except Exception as exc:
            if cancelled.is_set():
                raise Stopped("the job was cancelled") from None
            reason = _ledger_gone(exc) or _missing_filesystem(output, exc)
            if reason is not None:
                raise EngineFailed(reason) from None
            raise
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join()
            spark.stop()
        stats.profiles = counters[0].value
        stats.members = counters[1].value
        stats.refused = counters[2].value
        stats.cpu = counters[3].value
        return stats

    @staticmethod
    def _watch(
        context: Any,
        group: str,
        counters: tuple[Any, ...],
        progress: Callable[[ChunkStats], bool],
        stop: threading.Event,
        cancelled: threading.Event,
    ) -> None:
        """Report the profiles and decisions finished tasks counted (the accumulators: an
        estimate from Spark's tasks counted the job that reads the export's schema, done
        before anything is decided, as all of it), and as an advance any change in the
        group's stages and tasks (:func:`_tasks`); cancel the job group when told, and
        again every second until the run ends: a Spark job the group starts after a cancel
        (the write, once the read of the export's schema returned) is cancelled too."""
        profiles, members = counters[0], counters[1]
        reported = ChunkStats()
        tracker = context.statusTracker()
        seen = _tasks(tracker, group)
        while not stop.wait(1.0):
            if cancelled.is_set():
                context.cancelJobGroup(group)
                continue
            now = _tasks(tracker, group)
            step = ChunkStats(
                profiles=max(0, profiles.value - reported.profiles),
                members=max(0, members.value - reported.members),
                advanced=now != seen,
            )
            seen = now
            reported.profiles += step.profiles
            reported.members += step.members
            if not progress(step):
                cancelled.set()
                context.cancelJobGroup(group)

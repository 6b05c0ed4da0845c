"""Settings, read from ``NEXTOFFER_*`` variables or CLI flags — never at import time."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nextoffer.errors import BadRequest


def default_db_url() -> str:
    return "sqlite:///" + str(Path.cwd() / ".nextoffer" / "nextoffer.db")


#: The numeric variables: (setting, variable, type, lowest value, what it is).
NUMBERS: tuple[tuple[str, str, type[int] | type[float], float, str], ...] = (
    ("max_body_bytes", "NEXTOFFER_MAX_BODY_BYTES", int, 1, "a number of bytes"),
    ("max_json_depth", "NEXTOFFER_MAX_JSON_DEPTH", int, 1, "a nesting depth"),
    ("db_pool_size", "NEXTOFFER_DB_POOL_SIZE", int, 1, "a number of connections"),
    ("batch_workers", "NEXTOFFER_BATCH_WORKERS", int, 0, "processes; 0: one per core"),
    ("batch_chunk", "NEXTOFFER_BATCH_CHUNK", int, 1, "a number of profiles per chunk"),
    (
        "batch_stall_seconds",
        "NEXTOFFER_BATCH_STALL_SECONDS",
        float,
        0,
        "a number of seconds; 0: never",
    ),
    ("shutdown_timeout", "NEXTOFFER_SHUTDOWN_TIMEOUT", float, 0, "a number of seconds"),
    (
        "retain_decision_events_days",
        "NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS",
        float,
        0,
        "a number of days; 0: for ever",
    ),
    (
        "retain_experience_events_days",
        "NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS",
        float,
        0,
        "a number of days; 0: for ever",
    ),
    ("snapshot_wait_seconds", "NEXTOFFER_SNAPSHOT_WAIT_SECONDS", float, 0, "a number of seconds"),
    ("profile_cache_mb", "NEXTOFFER_PROFILE_CACHE_MB", float, 0, "megabytes; 0: no cache"),
    (
        "profile_cache_seconds",
        "NEXTOFFER_PROFILE_CACHE_SECONDS",
        float,
        0.001,
        "a number of seconds",
    ),
)

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _number(key: str, raw: str, kind: type[int] | type[float], low: float, what: str) -> Any:
    """``raw`` read as ``kind``, or :class:`BadRequest` naming ``key`` and what it must be."""
    noun = "an integer" if kind is int else "a number"
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low:
        bound = f"{low:g}" if kind is float else str(int(low))
        raise BadRequest(f"{key}={raw!r}: must be {noun} >= {bound} ({what})")
    return value


def _switch(key: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise BadRequest(f"{key}={raw!r}: must be one of {', '.join(_TRUE + _FALSE)}")


#: URI schemes a dataset may name besides a local folder (``service/locations.py``).
REMOTE_SCHEMES = ("s3", "s3a", "gs", "hdfs")
#: A remote folder as a dataset location takes it: one of :data:`REMOTE_SCHEMES`, a
#: bucket or host, a path; no credentials, query or fragment.
_REMOTE_PREFIX = re.compile(rf"(?i)({'|'.join(REMOTE_SCHEMES)})://[^/@?#\s]+(/[^@?#\s]*)?")
_SCHEMES = ", ".join(f"{s}://" for s in REMOTE_SCHEMES[:-1]) + f" or {REMOTE_SCHEMES[-1]}://"


def _prefixes(key: str, raw: str) -> tuple[str, ...]:
    """Comma-separated remote folders, each checked for the form a location takes."""
    found = tuple(part.strip() for part in raw.split(",") if part.strip())
    for prefix in found:
        if not _REMOTE_PREFIX.fullmatch(prefix):
            raise BadRequest(
                f"{key}={raw!r}: must be remote folders, comma-separated ({_SCHEMES}, a"
                f" bucket or host, no credentials); {prefix!r} is not one"
            )
    return found


#: SQLite's ``synchronous`` levels: NORMAL (WAL) survives a killed process, FULL and
#: EXTRA a power cut too, OFF neither.
SQLITE_SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


def sqlite_synchronous(env: Mapping[str, str] | None = None) -> str:
    """``NEXTOFFER_SQLITE_SYNCHRONOUS`` (default NORMAL), upper-cased; a value SQLite would
    take silently as NORMAL (``FUL``) is refused, naming the variable."""
    raw = (os.environ if env is None else env).get("NEXTOFFER_SQLITE_SYNCHRONOUS") or "NORMAL"
    value = raw.strip().upper()
    if value not in SQLITE_SYNCHRONOUS_LEVELS:
        raise BadRequest(
            f"NEXTOFFER_SQLITE_SYNCHRONOUS={raw!r}: must be one of"
            f" {', '.join(SQLITE_SYNCHRONOUS_LEVELS)}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    db_url: str = field(default_factory=default_db_url)
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    #: Largest request body accepted, in bytes (an offer may be 300 KB; leave headroom).
    max_body_bytes: int = 1024 * 1024
    #: Deepest JSON nesting accepted in a request body.
    max_json_depth: int = 64
    #: Database connections kept per process (and as many again on demand).
    db_pool_size: int = 5
    #: ``redis://host:port/N``: cap counters in Redis, shared by every node (else the database).
    redis_url: str | None = None
    #: On SIGTERM, how long in-flight requests may take to finish before they are cut.
    shutdown_timeout: float = 30.0
    #: How often a process checks whether a container's library changed (seconds).
    catalog_check_seconds: float = 0.25
    #: One JSON line per request on stdout (``api/access_log.py``).
    access_log: bool = True
    #: ``GET /metrics`` in Prometheus text format, without credentials: keep it off the
    #: public network (scrape it on the host or behind the gateway), or switch it off.
    metrics: bool = True
    #: After each library snapshot is built, collect garbage once and move every object
    #: then alive out of the collector's sight (``gc.freeze``): full collections then
    #: scan only what requests allocate, not the compiled library (``service/catalogs.py``).
    freeze_heap: bool = True
    #: Build every container's snapshot when a worker starts (in the background), so its
    #: first decisions do not wait ~0.5 s for the build.
    warm_catalogs: bool = True
    #: Where compiled rules are kept for the next start and the other workers
    #: (``service/compiled_rules.py``): ``None`` is a ``compiled-rules`` folder beside a
    #: SQLite database file (none for PostgreSQL or an in-memory database), ``""`` none.
    rule_cache: str | None = None
    #: How long a decision waits for its container's first snapshot (a worker that just
    #: started) before it is answered 503 with ``Retry-After``.
    snapshot_wait_seconds: float = 5.0
    # -- the profile cache (issue 16; ``service/profile_cache.py``) --
    #: Megabytes of memory a process may keep profiles in for its decisions (its JSON
    #: plus ~600 bytes per profile); 0 switches the cache off. ``None``: 64
    #: (docs/design.md, "Profiles from memory").
    profile_cache_mb: float | None = None
    #: The longest a process serves a profile another process or node has since changed
    #: (docs/api.md, "Profiles"): the change log is read every half of it.
    profile_cache_seconds: float = 1.0
    # -- retention (``service/retention.py``, docs/deploy.md "Retention") --
    #: Days a decision event is kept (0: for ever). Feedback naming a proposition whose
    #: event is gone counts for nothing; the offers report keeps its counts.
    retain_decision_events_days: float = 0.0
    #: Days an experience event is kept, by its own timestamp (0: for ever). Rules that
    #: look back at events see only those kept; an event id is remembered as long.
    retain_experience_events_days: float = 0.0
    # -- batch decisioning (issue 18) --
    #: Where datasets without a location of their own keep their files (default: a
    #: ``datasets`` folder beside a SQLite database file; ``.nextoffer/datasets`` in the
    #: working directory for PostgreSQL or an in-memory database).
    datasets_dir: str | None = None
    #: Worker processes of the local batch engine (0: one per core).
    batch_workers: int = 0
    #: Profiles per chunk of the local batch engine: one read, one task, one Parquet file.
    batch_chunk: int = 10_000
    #: Seconds without progress after which a processing batch job ends as
    #: ``runnerStalled`` (0: never); more than the longest Spark task (docs/batch.md).
    batch_stall_seconds: float = 3600.0
    #: Spark master of the ``spark`` batch engine (``spark-submit`` passes its own).
    spark_master: str = "local[2]"
    #: Whether a server runs queued batch jobs (off: API-only nodes; jobs then run where
    #: it is on, or with ``nextoffer batch run``).
    batch_runner: bool = True
    #: S3 (``s3://``, ``s3a://`` dataset locations): an endpoint of an S3-compatible store
    #: (``http://host:9000``; none: AWS), its region, and keys. Keys left unset fall back to
    #: the AWS SDK's own chain (``AWS_ACCESS_KEY_ID``…, ``~/.aws``, instance roles). Never
    #: stored with a dataset (docs/batch.md "Remote locations").
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)
    #: Remote folders tenants may create datasets under (``s3://lake/offers``,
    #: ``gs://bucket``): the server's own credentials write there for every tenant, so a
    #: remote location outside all of them is refused; none (the default) turns remote
    #: locations off (docs/batch.md, "Remote locations").
    dataset_remote_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        sqlite_synchronous(env)  # read by the store itself; refused here with the others
        values: dict[str, Any] = {}
        if env.get("NEXTOFFER_DB"):
            values["db_url"] = env["NEXTOFFER_DB"]
        if env.get("NEXTOFFER_REDIS"):
            values["redis_url"] = env["NEXTOFFER_REDIS"]
        if "NEXTOFFER_RULE_CACHE" in env:
            values["rule_cache"] = env["NEXTOFFER_RULE_CACHE"]
        if env.get("NEXTOFFER_DATASETS_DIR"):
            values["datasets_dir"] = env["NEXTOFFER_DATASETS_DIR"]
        if env.get("NEXTOFFER_SPARK_MASTER"):
            values["spark_master"] = env["NEXTOFFER_SPARK_MASTER"]
        if env.get("NEXTOFFER_DATASET_REMOTE_PREFIXES"):
            values["dataset_remote_prefixes"] = _prefixes(
                "NEXTOFFER_DATASET_REMOTE_PREFIXES", env["NEXTOFFER_DATASET_REMOTE_PREFIXES"]
            )
        for name in ("s3_endpoint", "s3_region", "s3_access_key", "s3_secret_key"):
            if env.get(f"NEXTOFFER_{name.upper()}"):
                values[name] = env[f"NEXTOFFER_{name.upper()}"]
        for name, key, kind, low, what in NUMBERS:
            if env.get(key):
                values[name] = _number(key, env[key], kind, low, what)
        for name, key in (
            ("access_log", "NEXTOFFER_ACCESS_LOG"),
            ("metrics", "NEXTOFFER_METRICS"),
            ("freeze_heap", "NEXTOFFER_FREEZE_HEAP"),
            ("warm_catalogs", "NEXTOFFER_WARM_CATALOGS"),
            ("batch_runner", "NEXTOFFER_BATCH_RUNNER"),
        ):
            if env.get(key):
                values[name] = _switch(key, env[key])
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})

    def rule_cache_dir(self) -> Path | None:
        """The folder of compiled rules (see ``rule_cache``), or ``None`` for none."""
        if self.rule_cache is not None:
            return Path(self.rule_cache) if self.rule_cache else None
        prefix = "sqlite:///"
        if self.db_url.startswith(prefix) and ":memory:" not in self.db_url:
            database = self.db_url[len(prefix) :].split("?", 1)[0]
            if database:
                return Path(database).parent / "compiled-rules"
        return None

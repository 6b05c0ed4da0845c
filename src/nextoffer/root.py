"""The composition root: :class:`NextOffer` opens everything one process needs and closes it.

From :class:`~nextoffer.settings.Settings` it opens the store, the cap counters (in the
database, or in Redis with ``redis_url``), the decision path strategy (SQLite's group
commit, or PostgreSQL's; wrapped when counters live elsewhere), the compiled
snapshots, the use cases and the thread pool for blocking work — and closes all of it,
in reverse order. The HTTP app (``api.app.create_app``), every CLI command and embedding
code open one; nothing else wires services together::

    with NextOffer.open(Settings(db_url="sqlite:///offers.db")) as no:
        tenant = no.bootstrap(org="ACME@AdobeOrg", sandbox="prod")
        ...
        outcome = no.decide(tenant.principal, tenant.container_id, call)

From an event loop, ``async with`` and ``await no.decide_async(...)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from nextoffer.errors import BadRequest, Unavailable
from nextoffer.ids import IdFactory, utcnow
from nextoffer.logs import Throttled
from nextoffer.repository.objects import ObjectType, SchemaRef
from nextoffer.repository.records import InstanceRecord
from nextoffer.service.auth import Authenticator, Principal
from nextoffer.service.batch.jobs import BatchJobs
from nextoffer.service.batch.local import LocalEngine
from nextoffer.service.batch.spark import SparkEngine
from nextoffer.service.catalogs import CatalogCache
from nextoffer.service.compiled_rules import CompiledRules
from nextoffer.service.datasets import Datasets
from nextoffer.service.datastreams import Datastreams
from nextoffer.service.decisions import DecisionCall, DecisionOutcome, Decisions
from nextoffer.service.dps import DpsLibrary
from nextoffer.service.edge import Edge
from nextoffer.service.events import Events
from nextoffer.service.learning import Learning
from nextoffer.service.locations import S3Settings
from nextoffer.service.offload import in_pool
from nextoffer.service.profile_cache import DEFAULT_PROFILE_CACHE_MB, ProfileCache
from nextoffer.service.profiles import Profiles
from nextoffer.service.reports import Reports
from nextoffer.service.repository import Repository
from nextoffer.service.retention import SETTLE_SECONDS, Retention
from nextoffer.service.search import Search
from nextoffer.service.segments import SegmentDefinitions
from nextoffer.service.tenants import DEFAULT_TOKEN_TTL, Credentials
from nextoffer.service.tenants import bootstrap as bootstrap_tenant
from nextoffer.service.tenants import clients as tenant_clients
from nextoffer.service.tenants import drop_old_signing_keys as drop_old_keys
from nextoffer.service.tenants import revoke as revoke_client
from nextoffer.service.tenants import rotate_signing_key as rotate_key
from nextoffer.settings import Settings
from nextoffer.storage.counters import CapCounterStore, SqlCounters
from nextoffer.storage.database import REDIS, require_client
from nextoffer.storage.decision_path import CountersElsewhere, DecisionPath
from nextoffer.storage.session import ClientRecord
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store

if TYPE_CHECKING:  # redis is an optional dependency
    from nextoffer.storage.counter_moves import CounterMoves, Moved
    from nextoffer.storage.redis_markers import CounterMarkers

T = TypeVar("T")

log = logging.getLogger("nextoffer.root")
#: Probes ask every second or so; while a store is away, one line every ten seconds.
_NOT_READY = Throttled(log)


class NextOffer:
    """One process's nextoffer: its resources and its use cases. Open with :meth:`open`."""

    settings: Settings
    store: Store
    counters: CapCounterStore
    #: The decision path strategy: reads and record writes of decisions (and GET by id).
    path: DecisionPath
    #: Blocking work (a database transaction) off the event loop: :meth:`run`.
    executor: ThreadPoolExecutor
    catalogs: CatalogCache
    auth: Authenticator
    repository: Repository
    search: Search
    #: The dps form of the same library (the caller's sandbox names the container).
    dps: DpsLibrary
    profiles: Profiles
    events: Events
    decisions: Decisions
    reports: Reports
    #: Datastreams and the Edge Network use case (issue 20).
    datastreams: Datastreams
    edge: Edge
    #: The time of decisions and writes.
    clock: Callable[[], datetime]
    # batch decisioning (issue 18)
    segments: SegmentDefinitions
    datasets: Datasets
    batch: BatchJobs

    def __init__(self, settings: Settings) -> None:
        # Use open(): it builds the rest, and closes what it opened if a step fails.
        self.settings = settings
        self._closers: list[Callable[[], None]] = []

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_rebuild: Callable[[], None] | None = None,
        on_refused: Callable[[], None] | None = None,
    ) -> NextOffer:
        """Open everything from ``settings`` (``Settings.from_env()`` when omitted).

        ``clock`` is the time of decisions and writes; ``on_rebuild`` is told of every
        snapshot rebuild, ``on_refused`` of every refused cap reservation (metrics).
        """
        no = cls(settings or Settings.from_env())
        try:
            no._build(clock=clock, on_rebuild=on_rebuild, on_refused=on_refused)
        except BaseException:
            no.close()
            raise
        return no

    def _build(
        self,
        *,
        clock: Callable[[], datetime],
        on_rebuild: Callable[[], None] | None,
        on_refused: Callable[[], None] | None,
    ) -> None:
        settings = self.settings
        self.store = store = Store.open(settings.db_url, pool_size=settings.db_pool_size)
        self._closers.append(store.close)
        self.counters = sql_counters = SqlCounters(store)
        # Every store counters may be in, for erasures: the database's, and Redis's when
        # there is one (a deployment that added Redis keeps what it counted before).
        counter_stores: list[CapCounterStore] = [sql_counters]
        #: What :meth:`readiness` reaches: the stores a decision needs.
        self._pings: dict[str, Callable[[], None]] = {"database": store.ping}
        shared_rates = None
        #: Which containers' counters Redis must still hold (with ``--redis`` only).
        self.counter_markers: CounterMarkers | None = None
        self.counter_moves: CounterMoves | None = None
        if settings.redis_url:  # shared by every node; redis is an optional dependency
            require_client(*REDIS)
            from nextoffer.storage.redis_counters import RedisCounters
            from nextoffer.storage.redis_rates import RedisRates

            self.counters = redis_counters = RedisCounters.from_url(settings.redis_url, store=store)
            counter_stores.append(redis_counters)
            self._closers.append(redis_counters.close)
            self.counter_markers = redis_counters.markers
            self.counter_moves = redis_counters.moves
            self._pings["counters"] = redis_counters.ping
            shared_rates = RedisRates(redis_counters)  # the Edge endpoints' rates too
        # The strategy for the decision path, chosen here once: driver reads and group
        # commits on either database; SQLite's are inline (an event loop runs them itself),
        # PostgreSQL's have a loop form (asyncpg: a loop awaits them without a thread).
        path: DecisionPath
        if store.sqlite_path:
            path = SqlitePath(store)
        else:  # psycopg is an optional dependency
            from nextoffer.storage.pg_path import PgPath

            path = PgPath(store)
        if settings.redis_url:
            path = CountersElsewhere(path, self.counters)
        self.path = path
        self._closers.append(path.close)
        # The standard library's default size (6 threads on 2 cores), not anyio's 40:
        # fewer threads contend for the GIL and the connection pool, and the hop itself
        # is cheaper (decisions over HTTP, docs/benchmarks.md).
        self.executor = ThreadPoolExecutor(
            min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="nextoffer"
        )
        self._closers.append(self.executor.shutdown)
        self.catalogs = CatalogCache(
            store,
            path=path,
            clock=clock,
            check_interval=settings.catalog_check_seconds,
            on_rebuild=on_rebuild,
            freeze_heap=settings.freeze_heap,
            rules=CompiledRules(settings.rule_cache_dir()),
            wait=settings.snapshot_wait_seconds,
        )
        self._closers.append(self.catalogs.close)
        self.auth = Authenticator(store)
        self.ids = IdFactory()
        self.repository = Repository(
            store,
            path=path,
            ids=self.ids,
            clock=clock,
            on_change=self.catalogs.invalidate,
            executor=self.executor,
            compile_rule=self.catalogs.rules.get,
        )
        self.search = Search(store, self.repository)
        self.dps = DpsLibrary(self.repository, self.search, executor=self.executor)
        # Profiles kept in memory for decisions, following the profiles' change sequence
        # (issue 16): on PostgreSQL a profile read is an awaited round trip per decision.
        # On SQLite too (the same default size): there it follows the change log from the
        # decisions (``inline``: no thread per worker; its trims go to the pool).
        self.profile_cache: ProfileCache | None = None
        cache_mb = settings.profile_cache_mb
        if cache_mb is None:
            cache_mb = DEFAULT_PROFILE_CACHE_MB
        if cache_mb > 0:
            self.profile_cache = ProfileCache(
                store,
                max_bytes=int(cache_mb * 1e6),
                bound=settings.profile_cache_seconds,
                inline=bool(store.sqlite_path),
                executor=self.executor,
            )
            self._closers.append(self.profile_cache.close)
        self.profiles = Profiles(
            store,
            clock=clock,
            on_change=self.profile_cache.invalidate if self.profile_cache is not None else None,
        )
        # What ranking strategies learned: feedback adds to it, decisions read it.
        self.learning = Learning(store)
        self.events = Events(
            store,
            counters=self.counters,
            catalogs=self.catalogs,
            clock=clock,
            learning=self.learning,
        )
        self.decisions = Decisions(
            store,
            path=path,
            repository=self.repository,
            catalogs=self.catalogs,
            clock=clock,
            executor=self.executor,
            on_refused=on_refused,
            learning=self.learning,
            profile_cache=self.profile_cache,
        )
        self.reports = Reports(
            store,
            repository=self.repository,
            decisions=self.decisions,
            counters=self.counters,
            clock=clock,
            fold=self.path.fold,
        )
        self._clock = self.clock = clock
        self.datastreams = Datastreams(
            store, repository=self.repository, clock=clock, shared=shared_rates
        )
        self.edge = Edge(decisions=self.decisions, events=self.events, run=self.run, clock=clock)
        # Events past the operator's retention, deleted in the background by a server.
        self.retention = Retention(
            store,
            counters=counter_stores,
            decision_events_days=settings.retain_decision_events_days,
            experience_events_days=settings.retain_experience_events_days,
            clock=clock,
            settle=SETTLE_SECONDS + settings.profile_cache_seconds,
        )
        self._closers.append(self.retention.close)
        self._build_batch(clock)

    def _build_batch(self, clock: Callable[[], datetime]) -> None:
        """Audiences, datasets and batch jobs (issue 18). Each worker process of an engine
        (local workers, Spark executors) opens a root of its own from the same settings
        (:func:`open_batch_worker`): the same decision path, caps and counters."""
        settings = self.settings
        self.segments = SegmentDefinitions(
            self.store, clock=clock, on_change=self.catalogs.invalidate
        )
        if settings.datasets_dir:
            root = Path(settings.datasets_dir)
        elif self.store.sqlite_path not in (None, "", ":memory:"):
            root = Path(str(self.store.sqlite_path)).resolve().parent / "datasets"
        else:
            root = Path.cwd() / ".nextoffer" / "datasets"
        s3 = S3Settings(
            endpoint=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
        )
        self.datasets = Datasets(
            self.store,
            clock=clock,
            default_root=root,
            s3=s3,
            remote_prefixes=settings.dataset_remote_prefixes,
        )
        open_worker = partial(open_batch_worker, settings)
        self.batch = BatchJobs(
            self.store,
            catalogs=self.catalogs,
            repository=self.repository,
            datasets=self.datasets,
            clock=clock,
            ids=self.ids,
            stall_seconds=settings.batch_stall_seconds,
            engines={
                "local": LocalEngine(
                    open_worker, workers=settings.batch_workers, chunk=settings.batch_chunk
                ),
                "spark": SparkEngine(open_worker, master=settings.spark_master),
            },
        )
        self._closers.append(self.batch.close)

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Close everything :meth:`open` opened, the last opened first (the pool's work
        finishes, then the decision path commits what it queued, then the counters and
        the store close). Closing twice is harmless."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """:meth:`close` from an event loop: what the decision path opened on this loop
        (asynchronous connections) is closed here, the rest in a thread (waiting for the
        pool and the writer blocks)."""
        path: DecisionPath | None = getattr(self, "path", None)
        if path is not None and path.on_loop is not None:
            await path.on_loop.aclose()
        await in_pool(None, self.close)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (it opens a database transaction) in the pool."""
        return await in_pool(self.executor, fn, *args, **kwargs)

    def readiness(self, progress: dict[str, str] | None = None) -> dict[str, str]:
        """Whether this process can decide and record now: ``database`` (and ``counters``
        when they are Redis's), each ``"ok"`` or ``"unavailable"``; why, to the log.
        ``progress`` is filled as the checks go, a check under way as ``"checking"``: a
        caller that stops waiting can tell which store hangs."""
        answers = progress if progress is not None else {}
        for name, ping in self._pings.items():
            answers[name] = "checking"
            try:
                ping()
            except Unavailable as exc:
                _NOT_READY.error("not ready: %s: %s", name, exc)
                answers[name] = "unavailable"
            else:
                answers[name] = "ok"
        return dict(answers)

    # -- use cases -------------------------------------------------------------------

    def bootstrap(
        self,
        *,
        org: str,
        sandbox: str,
        client_id: str | None = None,
        user: str | None = None,
        ttl: timedelta = DEFAULT_TOKEN_TTL,
    ) -> Credentials:
        """Create (or reuse) the org, sandbox, decisioning container, API client, and mint
        a token; ``.principal`` of the result is that caller."""
        return bootstrap_tenant(
            self.store,
            org=org,
            sandbox=sandbox,
            now=self._clock(),
            client_id=client_id,
            user=user,
            ttl=ttl,
        )

    def clients(self, *, org: str | None = None) -> list[ClientRecord]:
        """The API clients (of ``org``, or every one), with their sandboxes."""
        return tenant_clients(self.store, org=org)

    def revoke(self, client_id: str, *, sandbox: str | None = None) -> None:
        """Take ``sandbox`` from an API client, or delete the client: every node refuses
        its tokens within seconds (docs/deploy.md, "Credentials")."""
        revoke_client(self.store, client_id, sandbox=sandbox)

    def rotate_signing_key(self) -> str:
        """Sign tokens minted from now on with a new key (docs/deploy.md, "Credentials")."""
        return rotate_key(self.store, now=self._clock())

    def drop_old_signing_keys(self) -> int:
        """Delete every signing key but the newest: their tokens are refused within
        seconds everywhere."""
        return drop_old_keys(self.store)

    def lost_counters(self) -> list[str]:
        """The containers whose cap counters Redis has lost (docs/deploy.md, "Redis");
        none when the counters are the database's."""
        return self.counter_markers.lost() if self.counter_markers is not None else []

    def accept_counter_loss(self, containers: Sequence[str] | None = None) -> list[str]:
        """Let the caps of containers whose counters Redis lost (all, or those of
        ``containers``) count again, from what Redis holds now; the containers it did."""
        if self.counter_markers is None:
            raise BadRequest("the cap counters are the database's (no Redis): none was lost")
        return self.counter_markers.accept_loss(containers)

    def move_counters(
        self,
        containers: Sequence[str] | None = None,
        *,
        into_redis: bool,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Moved:
        """Move the cap counters (of every container, or of ``containers``) from the
        database into Redis (``into_redis``: a deployment that added Redis; until then
        their capped offers count as capped), or from Redis into the database (one that
        stops using it). Safe to stop and run again (docs/deploy.md, "Redis")."""
        if self.counter_moves is None:
            raise BadRequest("the cap counters move only with --redis (or NEXTOFFER_REDIS)")
        if into_redis:
            return self.counter_moves.move_in(containers, on_progress=on_progress)
        return self.counter_moves.move_out(containers, on_progress=on_progress)

    def create(
        self,
        principal: Principal,
        container_id: str,
        object_type: ObjectType,
        body: dict[str, Any],
    ) -> InstanceRecord:
        """Create a library object of ``object_type`` (its current schema version)."""
        ref = SchemaRef(object_type, object_type.stored_version, object_type.versioned_schema)
        return self.repository.create(principal, container_id, ref, body)

    def decide(
        self,
        principal: Principal,
        container_id: str,
        call: DecisionCall,
        *,
        profile: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] | None = None,
    ) -> DecisionOutcome:
        """Decide (recorded unless ``call.dry_run``); ``profile``/``events`` replace the
        stored profile (a simulation)."""
        return self.decisions.decide(principal, container_id, call, profile=profile, events=events)

    async def decide_async(
        self, principal: Principal, container_id: str, call: DecisionCall
    ) -> DecisionOutcome:
        """:meth:`decide` from an event loop."""
        return await self.decisions.decide_async(principal, container_id, call)


def open_batch_worker(settings: Settings) -> NextOffer:
    """The root of a batch worker process (a local engine's worker, a Spark executor's
    Python worker): picklable by reference, opened where the work runs."""
    return NextOffer.open(settings)

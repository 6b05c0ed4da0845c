"""The cap-counter contract on every store: SQLite, PostgreSQL and Redis (real servers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nextoffer.errors import Unavailable
from nextoffer.storage.counters import CapCounterStore, SqlCounters
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.store import Store
from support.backends import fresh_database, redis_url
from support.counter_contract import A, B, CounterContract
from support.servers import free_port, redis_server


class TestSqliteCounters(CounterContract):
    @pytest.fixture
    def counters(self, tmp_path: Path) -> Iterator[CapCounterStore]:
        store = Store.open(f"sqlite:///{tmp_path / 'c.db'}")
        yield SqlCounters(store)
        store.close()


class TestPostgresCounters(CounterContract):
    @pytest.fixture
    def counters(self) -> Iterator[CapCounterStore]:
        with fresh_database() as url:
            store = Store.open(url, pool_size=10)
            yield SqlCounters(store)
            store.close()


class TestRedisCounters(CounterContract):
    @pytest.fixture
    def counters(self, db: Store) -> Iterator[CapCounterStore]:
        # A database number of its own per test would run out (16); a flush would touch
        # other tests' keys. Keys carry the container id, so a fresh one isolates.
        opened = RedisCounters.from_url(redis_url(), store=db)
        opened.ping()
        yield _Isolated(opened, uuid.uuid4().hex)
        opened.close()

    def test_keys_of_a_container_share_a_cluster_slot(self) -> None:
        from nextoffer.storage.redis_counters import redis_key

        assert redis_key(A).startswith("nextoffer:cap:{c-1}:")


def test_counters_in_the_database_count_with_the_writer_s_transaction(db_url: str) -> None:
    # Feedback adds to them in the transaction that stores its events (service/events.py):
    # counted once with the events, or, when that transaction fails, not at all.
    store = Store.open(db_url)
    counters = SqlCounters(store)
    try:
        with pytest.raises(RuntimeError), store.session(write=True) as session:
            assert counters.add_in(session, [A, A, B]) is True
            raise RuntimeError("the write fails after counting")
        assert counters.read([A, B]) == {}
        with store.session(write=True) as session:
            counters.add_in(session, [A, A, B])
        assert counters.read([A, B]) == {A: 2, B: 1}
    finally:
        store.close()


def test_counters_in_redis_are_left_to_add_after_the_writer_s_commit(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    opened = RedisCounters.from_url(redis_url(), store=store)
    counters = _Isolated(opened, uuid.uuid4().hex)
    try:
        with store.session(write=True) as session:
            assert counters.add_in(session, [A]) is False
        assert counters.read([A]) == {}
    finally:
        opened.close()
        store.close()


class _Isolated:
    """The contract's keys moved into a container of their own (a fresh key space)."""

    def __init__(self, inner: RedisCounters, tag: str) -> None:
        self._inner = inner
        self._tag = tag

    def _key(self, key):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(key, container_id=f"{key.container_id}-{self._tag}")

    def read(self, keys):  # type: ignore[no-untyped-def]
        moved = {self._key(k): k for k in keys}
        return {moved[k]: v for k, v in self._inner.read(list(moved)).items()}

    def reserve(self, wanted):  # type: ignore[no-untyped-def]
        moved = {self._key(k): k for k, _ in wanted}
        return [moved[k] for k in self._inner.reserve([(self._key(k), n) for k, n in wanted])]

    def release(self, keys):  # type: ignore[no-untyped-def]
        self._inner.release([self._key(k) for k in keys])

    def add(self, keys, amount=1):  # type: ignore[no-untyped-def]
        self._inner.add([self._key(k) for k in keys], amount)

    def add_in(self, session, keys):  # type: ignore[no-untyped-def]
        return self._inner.add_in(session, [self._key(k) for k in keys])

    def erase(self, scopes, **options):  # type: ignore[no-untyped-def]
        moved = {f"{c}-{self._tag}": named for c, named in scopes.items()}
        return self._inner.erase(moved, **options)

    def close(self) -> None:
        self._inner.close()


def test_an_unreachable_redis_is_unavailable(db: Store) -> None:
    counters = RedisCounters.from_url("redis://127.0.0.1:1/0", store=db, timeout=0.5)
    try:
        with pytest.raises(Unavailable):
            counters.read([A])
        with pytest.raises(Unavailable):
            counters.reserve([(A, 1)])
    finally:
        counters.close()


def test_a_bad_redis_url_is_a_bad_request(db: Store) -> None:
    with pytest.raises(Exception) as caught:
        RedisCounters.from_url("http://nowhere", store=db)
    assert not isinstance(caught.value, redis.RedisError)


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        (("--appendonly", "no"), "Redis keeps no append-only file (appendonly no)"),
        (("--appendonly", "yes", "--appendfsync", "everysec"), "'everysec', not 'always'"),
        (("--appendonly", "yes", "--appendfsync", "always"), None),
        (
            ("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "allkeys-lru"),
            "evicts any key when it is full (maxmemory-policy allkeys-lru)",
        ),
    ],
    ids=["no persistence", "everysec", "always", "evicting"],
)
def test_a_redis_that_would_lose_counters_in_a_restart_says_so(
    tmp_path: Path, db: Store, options: tuple[str, ...], warned: str | None
) -> None:
    redis_url()  # the suite's Redis server: redis-server is installed (or, off CI, skip)
    port = free_port()
    with redis_server(port, tmp_path, *options) as url:
        counters = RedisCounters.from_url(url, store=db)
        try:
            warning = counters.persistence_warning()
            # A user the server refuses CONFIG to (as managed services do): nothing said.
            counters.read([A])  # connected
            redis.Redis(port=port).execute_command(
                "ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-config"
            )
            limited = RedisCounters.from_url(f"redis://app:pw@127.0.0.1:{port}/0", store=db)
            assert limited.persistence_warning() is None
            limited.close()
        finally:
            counters.close()
    if warned is None:
        assert warning is None
    else:
        assert warning is not None and warned in warning, warning


def test_an_eviction_policy_is_warned_of_with_what_it_can_evict(tmp_path: Path, db: Store) -> None:
    """Each ``maxmemory-policy`` set on a running Redis (``CONFIG SET``): ``allkeys-*``
    can evict counters and markers, ``volatile-*`` what carries an expiry (a Spark job's
    ledger of reservations, rate buckets), ``noeviction`` nothing. A Redis persisting
    nothing is told of that too, in the same text."""
    redis_url()  # the suite's Redis server: redis-server is installed (or, off CI, skip)
    port = free_port()
    with redis_server(port, tmp_path, "--appendonly", "yes", "--appendfsync", "always") as url:
        raw = redis.Redis(port=port)
        counters = RedisCounters.from_url(url, store=db)
        try:
            said: dict[str, str | None] = {}
            for policy in (
                "noeviction",
                "volatile-lru",
                "volatile-lfu",
                "volatile-random",
                "volatile-ttl",
                "allkeys-lru",
                "allkeys-random",
            ):
                raw.config_set("maxmemory-policy", policy)
                said[policy] = counters.persistence_warning()
            raw.config_set("appendonly", "no")
            both = counters.persistence_warning()
        finally:
            counters.close()
            raw.close()
    assert said["noeviction"] is None
    for policy in ("volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"):
        warning = said[policy]
        assert warning is not None, policy
        assert f"evicts keys that carry an expiry when it is full (maxmemory-policy {policy})" in (
            warning
        )
        assert "a Spark job's ledger of reservations can vanish" in warning
        assert "noeviction" in warning
    for policy in ("allkeys-lru", "allkeys-random"):
        warning = said[policy]
        assert warning is not None, policy
        assert f"evicts any key when it is full (maxmemory-policy {policy})" in warning
    assert both is not None
    assert "maxmemory-policy allkeys-random" in both and "appendonly no" in both

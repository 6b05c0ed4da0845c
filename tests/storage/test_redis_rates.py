"""Request rates in Redis (``storage/redis_rates.py``), on a real server: one bucket per
name for every client, refilled by the server's clock, and the per-process buckets of
``Datastreams.admit`` while Redis is out of reach."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from nextoffer.errors import TooManyRequests, Unavailable
from nextoffer.service.datastreams import Datastreams
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.redis_rates import RedisRates
from nextoffer.storage.session import DatastreamRecord
from nextoffer.storage.store import Store
from support.backends import redis_url

Two = tuple[RedisRates, RedisRates]


@pytest.fixture
def two(db: Store) -> Iterator[Two]:
    """Two clients of one server, as two processes (or nodes) hold."""
    opened = [RedisCounters.from_url(redis_url(), store=db) for _ in range(2)]
    yield RedisRates(opened[0]), RedisRates(opened[1])
    for counters in opened:
        counters.close()


def _taken(rates: tuple[RedisRates, ...], name: str, rate: int, n: int) -> list[float]:
    """``n`` takes, from each client in turn, on one loop; then its clients are closed."""

    async def run() -> list[float]:
        waits = [await rates[i % len(rates)].take(name, rate) for i in range(n)]
        for each in rates:
            await each._counters.on_loop.aclose()  # type: ignore[union-attr]
        return waits

    return asyncio.run(run())


def test_two_clients_take_from_one_bucket(two: Two) -> None:
    name, rate = uuid.uuid4().hex, 5
    started = time.monotonic()
    waits = _taken(two, name, rate, 30)
    elapsed = time.monotonic() - started
    admitted = sum(1 for w in waits if w == 0)
    assert rate <= admitted <= rate + int(elapsed * rate) + 1, (admitted, elapsed)
    assert waits[:rate] == [0.0] * rate  # a full bucket: one second's worth at once
    refused = [w for w in waits if w > 0]
    assert refused and all(0 < w <= 1 / rate for w in refused)


def test_a_bucket_refills_at_its_rate(two: Two) -> None:
    name, rate = uuid.uuid4().hex, 20
    assert sum(1 for w in _taken(two, name, rate, rate + 5) if w == 0) >= rate
    emptied = time.monotonic()
    time.sleep(0.5)  # half a second: half the bucket back, at least
    again = sum(1 for w in _taken(two, name, rate, rate) if w == 0)
    elapsed = time.monotonic() - emptied  # at most this long: a slow host refills more
    assert rate // 2 - 1 <= again <= elapsed * rate + 1, (again, elapsed)


def test_a_bucket_is_gone_two_seconds_after_its_last_use(two: Two) -> None:
    name = uuid.uuid4().hex
    _taken(two, name, 3, 1)
    client = redis.Redis.from_url(redis_url())
    try:
        assert 0 < client.ttl(f"nextoffer:rate:{{{name}}}") <= 2
    finally:
        client.close()


def test_a_server_that_lost_its_scripts_loads_it_again(two: Two) -> None:
    client = redis.Redis.from_url(redis_url())
    try:
        client.script_flush()
    finally:
        client.close()
    assert _taken(two[:1], uuid.uuid4().hex, 2, 3) == [0.0, 0.0, pytest.approx(0.5, abs=0.05)]


def test_an_unreachable_redis_is_unavailable(db: Store) -> None:
    counters = RedisCounters.from_url("redis://127.0.0.1:1/0", store=db, timeout=0.5)
    try:
        with pytest.raises(Unavailable):
            _taken((RedisRates(counters),), "x", 5, 1)
    finally:
        counters.close()


def _datastream(rate: int) -> DatastreamRecord:
    stamp = "2026-12-07T00:00:00.000Z"
    return DatastreamRecord(
        datastream_id=str(uuid.uuid4()),
        org_id="ACME@AdobeOrg",
        sandbox="prod",
        container_id="c",
        name="web",
        allowed_origins=(),
        rate_limit=rate,
        created=stamp,
        modified=stamp,
    )


def test_without_redis_each_process_meters_its_own_requests(db: Store) -> None:
    counters = RedisCounters.from_url("redis://127.0.0.1:1/0", store=db, timeout=0.5)
    now = time.monotonic()
    datastreams = Datastreams(
        None,  # type: ignore[arg-type]  # admit reads no store
        repository=None,  # type: ignore[arg-type]
        clock=lambda: datetime.now(UTC),
        monotonic=lambda: now,  # no token comes back between the requests
        shared=RedisRates(counters),
    )
    record = _datastream(2)

    async def run() -> list[str]:
        outcomes = []
        for _ in range(4):
            try:
                await datastreams.admit(record)
                outcomes.append("admitted")
            except TooManyRequests:
                outcomes.append("429")
        await counters.on_loop.aclose()  # type: ignore[union-attr]
        return outcomes

    try:
        assert asyncio.run(run()) == ["admitted", "admitted", "429", "429"]
    finally:
        counters.close()

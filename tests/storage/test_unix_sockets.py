"""PostgreSQL and Redis reached through their Unix sockets, the way a node beside its
servers connects (docs/deploy.md): every driver of the decision path — psycopg off a loop,
asyncpg and redis-py's asyncio client on one — on the same real servers the other tests
reach over loopback TCP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from nextoffer.storage.counters import CounterKey
from nextoffer.storage.decision_path import CountersElsewhere
from nextoffer.storage.pg_path import PgPath
from nextoffer.storage.redis_counters import RedisCounters, redis_key
from nextoffer.storage.store import Store
from support.backends import (
    create_database,
    database_url,
    drop_database,
    postgres_socket_url,
    redis_socket_url,
    redis_url,
)
from support.decision_path_contract import CONTAINER, A, add_profile, events_of, outcome, record


@pytest.fixture
def through_socket() -> Iterator[tuple[Store, PgPath, str]]:
    """A migrated database of its own, opened through the server's socket with the port
    in the URL's authority (``postgresql://user@:PORT/db?host=FOLDER``, as libpq and
    ``psql`` take it); yields the store, its decision path and the database's name."""
    name = create_database()
    url = make_url(postgres_socket_url()).set(database=name)
    assert url.port is not None and url.query["host"].startswith("/")
    store = Store.open(url.render_as_string(hide_password=False))
    path = PgPath(store)
    try:
        yield store, path, name
    finally:
        path.close()
        store.close()
        drop_database(name)


def _backends(name: str) -> list[tuple[str | None, str]]:
    """(client address, application) of every client connected to database ``name``, as
    the server sees them (asked over TCP): a socket's client has no address."""
    with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT host(client_addr), application_name FROM pg_stat_activity"
            " WHERE datname = %s AND backend_type = 'client backend'",
            (name,),
        ).fetchall()
    return [(addr, app) for addr, app in rows]


def test_both_postgresql_drivers_read_and_record_through_the_socket(
    through_socket: tuple[Store, PgPath, str],
) -> None:
    store, path, name = through_socket
    add_profile(store, "p-1", [("Email", "a@x")], {"tier": "gold"})
    found = ("p-1", {"tier": "gold"})
    # psycopg, off a loop: a read on the thread's connection, a record on the writer's.
    assert path.profile("O@AdobeOrg", "prod", "Email", "a@x") == found
    assert outcome(path, record(reserve=[(A, 2)])) == []
    on = path.on_loop
    assert on is not None

    async def on_the_loop() -> list[list[CounterKey]]:
        # asyncpg: reads on the loop's connections, records by the loop's writer.
        try:
            assert await on.profile("O@AdobeOrg", "prod", "Email", "a@x") == found
            outcomes = await asyncio.gather(
                *(on.record(record(reserve=[(A, 2)])) for _ in range(3))
            )
            clients = _backends(name)
        finally:
            await on.aclose()
        # The store's pool, the thread's reader, the writer's connection (a lone caller
        # writes on its own thread), the loop's reader and writer: all through the socket.
        assert len(clients) >= 4, clients
        assert {addr for addr, _ in clients} == {None}, clients
        return outcomes

    outcomes = asyncio.run(on_the_loop())
    assert sorted(outcomes) == [[], [A], [A]]  # the cap of 2: one left for the loop
    assert path.counts([A]) == {A: 2}
    assert len(events_of(store)) == 2


def test_redis_counters_reserve_exactly_through_the_socket(
    through_socket: tuple[Store, PgPath, str],
) -> None:
    store, path, _ = through_socket
    counters = RedisCounters.from_url(redis_socket_url(), store=store)
    elsewhere = CountersElsewhere(path, counters)
    over_tcp = redis.Redis.from_url(redis_url())
    container = f"{CONTAINER}-{uuid.uuid4().hex}"
    key = replace(A, container_id=container)
    limit = 5
    try:
        # The synchronous client (off a loop), then the loop's asyncio client.
        first = [
            outcome(elsewhere, record(container_id=container, reserve=[(key, limit)]))
            for _ in range(3)
        ]
        on = elsewhere.on_loop
        assert on is not None

        async def on_the_loop() -> list[list[CounterKey]]:
            try:
                return await asyncio.gather(
                    *(
                        on.record(record(container_id=container, reserve=[(key, limit)]))
                        for _ in range(6)
                    )
                )
            finally:
                await on.aclose()

        outcomes = first + asyncio.run(on_the_loop())
        # The server's own view: clients flagged U came through its Unix socket.
        assert any("U" in client["flags"] for client in over_tcp.client_list())
    finally:
        counters.close()
    assert first == [[], [], []]
    assert outcomes.count([]) == limit
    assert outcomes.count([key]) == 9 - limit
    assert int(over_tcp.get(redis_key(key)) or 0) == limit  # the same server as over TCP
    assert len(events_of(store, container)) == limit

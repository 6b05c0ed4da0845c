"""``storage/errors.py``: real driver errors, raised by real servers, become ours."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from nextoffer.errors import BadRequest, Conflict, DatabaseRefused, Unavailable
from nextoffer.storage.errors import guarded, translated
from support.backends import postgres_url


def raised(run) -> BaseException:
    try:
        run()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def test_a_constraint_broken_on_sqlite_is_a_conflict() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES ('a')")
    exc = raised(lambda: conn.execute("INSERT INTO t VALUES ('a')"))
    assert isinstance(translated(exc), Conflict)


def test_an_integer_past_64_bits_on_sqlite_is_a_bad_request() -> None:
    conn = sqlite3.connect(":memory:")
    exc = raised(lambda: conn.execute("SELECT ?", (2**63,)))
    assert isinstance(exc, OverflowError)
    assert isinstance(translated(exc), BadRequest)
    engine = create_engine("sqlite://")
    try:
        with (
            engine.connect() as conn2,
            pytest.raises(BadRequest, match="SQLite INTEGER"),
            guarded(),
        ):
            conn2.execute(text("SELECT :v"), {"v": -(2**64)})
    finally:
        engine.dispose()


def test_an_overflow_elsewhere_is_left_to_propagate() -> None:
    exc = raised(lambda: float(10**400))
    assert isinstance(exc, OverflowError)
    assert translated(exc) is None


@pytest.mark.parametrize(
    ("sql", "value"),
    [("SELECT %s::int8", 2**63), ("SELECT %s::text", "a\x00b")],
    ids=["bigint-out-of-range", "nul-in-text"],
)
def test_a_value_postgresql_cannot_hold_is_a_bad_request(sql: str, value: object) -> None:
    with psycopg.connect(postgres_url()) as conn:
        exc = raised(lambda: conn.execute(sql, (value,)))
    assert isinstance(exc, psycopg.DataError)
    assert isinstance(translated(exc), BadRequest)


def test_a_value_past_an_index_entry_on_postgresql_is_a_bad_request() -> None:
    # 3,000 random CJK characters (9 KB that do not compress) in a b-tree of 2,704 bytes.
    rng = random.Random(7)
    value = "".join(chr(0x4E00 + rng.randrange(20000)) for _ in range(3000))
    with psycopg.connect(postgres_url()) as conn:
        conn.execute("CREATE TEMPORARY TABLE t (v text)")
        conn.execute("CREATE INDEX ON t (v)")
        exc = raised(lambda: conn.execute("INSERT INTO t VALUES (%s)", (value,)))
    assert getattr(exc, "sqlstate", "") == "54000", exc
    assert isinstance(translated(exc), BadRequest)


def test_the_same_through_sqlalchemy_is_a_bad_request() -> None:
    url = postgres_url().replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with (
            engine.connect() as conn,
            pytest.raises(BadRequest, match="bigint out of range"),
            guarded(),
        ):
            conn.execute(text("SELECT CAST(:v AS bigint)"), {"v": 2**63})
    finally:
        engine.dispose()


def test_a_server_that_refuses_the_connection_is_unavailable() -> None:
    closed = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    exc = raised(lambda: psycopg.connect(closed))
    assert isinstance(exc, psycopg.OperationalError)
    ours = translated(exc)
    assert type(ours) is Unavailable and ours.exit_code == 6
    # The driver's words (host, port) are the operator's: not in what a client reads.
    assert ours.detail == "the database is unavailable"
    assert ours.internal is not None and "127.0.0.1" in ours.internal
    assert str(ours) == f"the database is unavailable: {ours.internal}"


def _refusing_urls() -> dict[str, str]:
    """URLs the test server answers with a refusal: no such database, no such role, a
    role that may not log in (made here)."""
    url = make_url(postgres_url())
    nologin = f"nologin_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {nologin} NOLOGIN")
    return {
        "database": url.set(database=f"none_{uuid.uuid4().hex[:8]}").render_as_string(False),
        "role": url.set(username=f"none_{uuid.uuid4().hex[:8]}").render_as_string(False),
        "nologin": url.set(username=nologin).render_as_string(False),
    }


@pytest.mark.parametrize("driver", ["psycopg", "asyncpg"])
def test_a_server_that_refuses_us_is_database_refused(driver: str) -> None:
    # psycopg gives a refusal at connection no SQLSTATE (libpq's words are read);
    # asyncpg gives 3D000 and class 28.
    async def connect(url: str) -> None:
        await (await asyncpg.connect(url)).close()

    for why, url in _refusing_urls().items():
        if driver == "psycopg":
            exc = raised(lambda url=url: psycopg.connect(url).close())
        else:
            exc = raised(lambda url=url: asyncio.run(connect(url)))
        ours = translated(exc)
        assert isinstance(ours, DatabaseRefused), (why, exc)
        assert ours.exit_code == 3 and ours.status == 503, why
        assert "refused the connection" in ours.detail and "127.0.0.1" not in ours.detail
        assert ours.internal is not None and "check the database URL" in ours.internal, why

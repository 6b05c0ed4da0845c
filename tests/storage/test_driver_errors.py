"""``storage/errors.py``: real driver errors, raised by real servers, become ours."""

from __future__ import annotations

import random
import sqlite3

import psycopg
import pytest
from sqlalchemy import create_engine, text

from nextoffer.errors import BadRequest, Conflict, Unavailable
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
    assert isinstance(translated(exc), Unavailable)

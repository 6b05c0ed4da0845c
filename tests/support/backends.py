"""The PostgreSQL and Redis servers of a test run (``scripts/services`` starts them).

``scripts/test`` hands their URLs over in ``NEXTOFFER_TEST_POSTGRES_URL`` and
``NEXTOFFER_TEST_REDIS_URL`` (loopback TCP), and the same servers' Unix sockets in
``NEXTOFFER_TEST_POSTGRES_SOCKET_URL`` and ``NEXTOFFER_TEST_REDIS_SOCKET_URL``. Without
them (``pytest`` run directly) the tests that need a server are skipped, saying why; under
CI (``CI=true``) a missing server fails them, so a broken service script cannot turn into
a green run of skips.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url

from nextoffer.storage.store import Store

POSTGRES_VAR = "NEXTOFFER_TEST_POSTGRES_URL"
REDIS_VAR = "NEXTOFFER_TEST_REDIS_URL"
POSTGRES_SOCKET_VAR = "NEXTOFFER_TEST_POSTGRES_SOCKET_URL"
REDIS_SOCKET_VAR = "NEXTOFFER_TEST_REDIS_SOCKET_URL"


#: The servers asked for since the last clear (``tests/conftest.py`` counts tests per
#: backend with it): every way to a server comes through :func:`_required`.
asked: set[str] = set()


def _required(variable: str, what: str) -> str:
    asked.add(what)
    value = os.environ.get(variable)
    if value:
        return value
    reason = f"{what} tests need {variable} (./scripts/test starts the server and sets it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_url() -> str:
    """The server's maintenance database (a superuser: tests create their own databases)."""
    return _required(POSTGRES_VAR, "PostgreSQL")


def redis_url() -> str:
    return _required(REDIS_VAR, "Redis")


def postgres_socket_url() -> str:
    """:func:`postgres_url` through the server's Unix socket (libpq's form: the socket's
    folder as the ``host`` parameter, the port in the authority)."""
    return _required(POSTGRES_SOCKET_VAR, "PostgreSQL")


def redis_socket_url() -> str:
    """:func:`redis_url` through the server's Unix socket (``unix://PATH``)."""
    return _required(REDIS_SOCKET_VAR, "Redis")


def database_url(name: str) -> str:
    return make_url(postgres_url()).set(database=name).render_as_string(hide_password=False)


def _admin() -> psycopg.Connection:
    return psycopg.connect(postgres_url(), autocommit=True)


_template_lock = threading.RLock()
_template: str | None = None
_counter = itertools.count()


def _migrated_template() -> str:
    """A database at the newest revision, made once per test process, to copy from."""
    global _template
    with _template_lock:
        if _template is None:
            name = f"tmpl_{uuid.uuid4().hex[:12]}"
            with _admin() as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            Store.open(database_url(name)).close()  # runs the migrations
            _template = name
        return _template


def create_database(*, migrated: bool = True) -> str:
    """A new database (a copy of a migrated one, or empty); returns its name."""
    name = f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    template = _migrated_template() if migrated else "template0"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


_sqlite_template: Path | None = None


def migrated_sqlite(folder: Path) -> str:
    """The URL of a SQLite database at the newest revision in ``folder``: a copy of one
    migrated once per test process (migrating a new file costs ~0.1 s, copying ~3 ms).
    ``tests/storage/test_migrations.py`` and the fresh-clone test migrate new files."""
    global _sqlite_template
    with _template_lock:
        if _sqlite_template is None:
            home = Path(tempfile.mkdtemp(prefix="nextoffer-template-"))
            atexit.register(shutil.rmtree, home, ignore_errors=True)
            template = home / "template.db"
            Store.open(f"sqlite:///{template}").close()  # runs the migrations
            _sqlite_template = template
    target = folder / "nextoffer.db"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


def drop_database(name: str) -> None:
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


#: Tables whose rows belong to the schema itself, not to a test.
_SCHEMA_TABLES = frozenset({"alembic_version", "schema_info", "search_state"})
_shared: dict[str, str] = {}


def emptied_database() -> str:
    """The URL of this process's shared database, emptied of every row.

    Cheaper than a new database (copying even a small template costs ~0.5 s, emptying
    ~0.05 s), for the many API tests. Connections a previous test left open are ended
    first, so none holds a lock the TRUNCATE would wait for.
    """
    with _template_lock:
        if "name" not in _shared:
            _shared["name"] = create_database()
    name = _shared["name"]
    names = [t.name for t in tables_metadata().sorted_tables if t.name not in _SCHEMA_TABLES]
    tables = ", ".join(f'"{name}"' for name in names)
    with psycopg.connect(database_url(name), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")
    return database_url(name)


def tables_metadata() -> MetaData:
    from nextoffer.storage import search_index, tables

    assert search_index.search_values.metadata is tables.metadata
    return tables.metadata


@contextmanager
def fresh_database(*, migrated: bool = True) -> Iterator[str]:
    """The URL of a database of its own, dropped afterwards."""
    name = create_database(migrated=migrated)
    try:
        yield database_url(name)
    finally:
        drop_database(name)

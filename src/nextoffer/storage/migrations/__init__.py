"""Schema migrations with Alembic, one history for SQLite and PostgreSQL.

The revisions live in ``versions/``; ``env.py`` runs them on a connection we hand it, so
nothing here reads ``alembic.ini``. :func:`prepare` is what ``Store.open`` calls at start:

* an empty database is upgraded to the newest revision (``serve`` on a fresh file works);
* a database at the newest revision is used as it is;
* a database at a revision this code does not know (written by a newer nextoffer) is
  refused with :class:`~nextoffer.errors.Unavailable`;
* an older one is upgraded when ``upgrade_older`` (the SQLite default: one machine owns
  the file) and refused otherwise, naming ``nextoffer db upgrade`` (the PostgreSQL
  default: a shared database is migrated once, by an operator, before nodes roll out).

A database made before migrations existed (tables but no ``alembic_version``) counts as
older: the first revision adopts it, creating only what is missing.

Upgrades take a lock first (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory
lock on PostgreSQL), so nodes starting together on an empty database migrate it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from nextoffer.errors import Unavailable

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

SCRIPT_LOCATION = Path(__file__).parent
#: The newest revision in ``versions/``: a database already at it is used without
#: loading Alembic (a worker's start at head pays only one query). Bumped with every new
#: revision; ``tests/storage/test_migrations.py`` checks it is Alembic's head.
HEAD = "0025_batch_decisions"
#: Any constant will do: it names the lock every migrating process takes on PostgreSQL.
_ADVISORY_LOCK = 7_240_611


@dataclass(frozen=True, slots=True)
class SchemaState:
    #: The database's revision; None when it has none (empty, or made before migrations).
    current: str | None
    #: The newest revision this code knows.
    head: str
    #: Tables but no revision: made by nextoffer before migrations existed.
    legacy: bool
    #: The revision is one this code does not know (a newer nextoffer wrote it).
    unknown: bool

    @property
    def empty(self) -> bool:
        return self.current is None and not self.legacy

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head() -> str:
    value = script().get_current_head()
    assert value is not None, "the migration history is empty"
    return value


def revisions() -> list[str]:
    """Every known revision, oldest first."""
    return [r.revision for r in reversed(list(script().walk_revisions()))]


def state(conn: Connection) -> SchemaState:
    from alembic.runtime.migration import MigrationContext
    from alembic.util.exc import CommandError

    current = MigrationContext.configure(conn).get_current_revision()
    inspector = inspect(conn)
    legacy = current is None and (
        inspector.has_table("instances") or inspector.has_table("schema_info")
    )
    unknown = False
    if current is not None:
        try:
            unknown = script().get_revision(current) is None
        except CommandError:
            unknown = True
    return SchemaState(current=current, head=head(), legacy=legacy, unknown=unknown)


def read_state(engine: Engine) -> SchemaState:
    with engine.connect() as conn, conn.begin():
        return state(conn)


def _current(engine: Engine) -> str | None:
    """The database's revision by one query (None without one), as Alembic keeps it: one
    row in ``alembic_version`` for a history without branches."""
    with engine.connect() as conn, conn.begin():
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def _locked(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})


def upgrade(engine: Engine, target: str = "head") -> None:
    """Upgrade to ``target`` in one transaction (PostgreSQL and SQLite both have
    transactional DDL, so a failed revision leaves the database as it was)."""
    from alembic import command

    with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
        _locked(conn)
        command.upgrade(_config(conn), target)


def downgrade(engine: Engine, target: str) -> None:
    """Downgrade to ``target`` (a revision, ``-1`` for one step, or ``base``)."""
    from alembic import command

    with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
        _locked(conn)
        command.downgrade(_config(conn), target)


def prepare(engine: Engine, *, upgrade_older: bool) -> SchemaState:
    """Make the database usable by this code, or refuse it (see the module docstring)."""
    if _current(engine) == HEAD:
        return SchemaState(current=HEAD, head=HEAD, legacy=False, unknown=False)
    found = read_state(engine)
    if found.at_head:
        return found
    if found.unknown:
        raise Unavailable(
            f"the database schema is at revision {found.current}, which this nextoffer does not "
            f"know (it knows up to {found.head}): a newer nextoffer migrated it; upgrade nextoffer"
        )
    if not found.empty and not upgrade_older:
        where = found.current or "a schema made before migrations"
        raise Unavailable(
            f"the database schema is at {where}, older than this nextoffer needs ({found.head}); "
            "run `nextoffer db upgrade --db URL` once, then start nextoffer"
        )
    upgrade(engine)
    return read_state(engine)

"""``nextoffer db``: the schema's revision, and moving it (Alembic, ``storage/migrations``).

``serve`` upgrades an empty database by itself, and an older SQLite file too; a shared
PostgreSQL database is upgraded here, once, before the nodes that need it start.
"""

from __future__ import annotations

import click

from nextoffer.cli.options import db_option, existing_database
from nextoffer.settings import Settings
from nextoffer.storage import migrations
from nextoffer.storage.database import open_engine
from nextoffer.storage.errors import guarded
from nextoffer.storage.search_index import ensure_current


@click.group()
def db() -> None:
    """Inspect and migrate the database schema."""


@db.command()
@db_option(creates=False)
def current(db_url: str | None) -> None:
    """Print the database's revision and the newest this nextoffer knows."""
    engine = open_engine(existing_database(Settings.from_env(db_url=db_url).db_url))
    try:
        with guarded():
            found = migrations.read_state(engine)
    finally:
        engine.dispose()
    if found.empty:
        status = "empty"
    elif found.legacy:
        status = "made before migrations: run `nextoffer db upgrade`"
    elif found.unknown:
        status = "newer than this nextoffer"
    elif found.at_head:
        status = "up to date"
    else:
        status = "behind: run `nextoffer db upgrade`"
    click.echo(f"current: {found.current or '-'}")
    click.echo(f"head:    {found.head}")
    click.echo(f"status:  {status}")


@db.command()
@db_option(creates=True)
@click.option("--to", "target", default="head", show_default=True, help="Revision to reach.")
def upgrade(db_url: str | None, target: str) -> None:
    """Upgrade the schema (to the newest revision unless --to says otherwise)."""
    engine = open_engine(Settings.from_env(db_url=db_url).db_url)
    try:
        with guarded():
            before = migrations.read_state(engine)
            if before.unknown:
                migrations.prepare(engine, upgrade_older=False)  # raises, naming the revision
            migrations.upgrade(engine, target)
            after = migrations.read_state(engine)
            if after.at_head:
                # A revision that reshapes the search index empties it; index the library
                # now, in the operator's step, rather than in the first search a node serves.
                click.echo("search index: checking (a reshaped index is rebuilt now)…")
                ensure_current(engine)
    finally:
        engine.dispose()
    click.echo(f"upgraded: {before.current or '-'} -> {after.current}")


@db.command()
@db_option(creates=False)
@click.option("--to", "target", default="-1", show_default=True, help="Revision (-1: one step).")
def downgrade(db_url: str | None, target: str) -> None:
    """Downgrade the schema one revision (or to --to). Data in dropped columns is lost."""
    engine = open_engine(existing_database(Settings.from_env(db_url=db_url).db_url))
    try:
        with guarded():
            before = migrations.read_state(engine)
            migrations.downgrade(engine, target)
            after = migrations.read_state(engine)
    finally:
        engine.dispose()
    click.echo(f"downgraded: {before.current or '-'} -> {after.current or '-'}")

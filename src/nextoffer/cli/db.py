"""``nextoffer db``: the schema's revision, and moving it (Alembic, ``storage/migrations``);
deleting the events past their retention (``prune``); a live SQLite database's copy
(``backup``); every row copied into another database, SQLite's into PostgreSQL to scale
out (``copy``).

``serve`` upgrades an empty database by itself, and an older SQLite file too; a shared
PostgreSQL database is upgraded here, once, before the nodes that need it start.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import Engine, inspect

from nextoffer.cli.options import db_option, existing_database
from nextoffer.errors import BadRequest, Conflict
from nextoffer.root import NextOffer
from nextoffer.service.retention import Pruned
from nextoffer.settings import Settings
from nextoffer.storage import migrations
from nextoffer.storage.backup import backup_sqlite
from nextoffer.storage.copy import Copied, changed_since, copy_database, emptying, refuse_same
from nextoffer.storage.database import open_engine, parse_url, sqlite_file
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
@click.option(
    "--to",
    "target",
    default="head",
    show_default=True,
    help="Revision to reach (`nextoffer db current` and an error list them), or +N steps.",
)
def upgrade(db_url: str | None, target: str) -> None:
    """Upgrade the schema (to the newest revision unless --to says otherwise)."""
    engine = open_engine(Settings.from_env(db_url=db_url).db_url)
    try:
        with guarded():
            before = migrations.read_state(engine)
            if before.unknown:
                migrations.prepare(engine, upgrade_older=False)  # raises, naming the revision
            with revision_named("upgrade", target, before):
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
@click.option(
    "--to",
    "target",
    default="-1",
    show_default=True,
    help="Revision to reach, -N steps, or base (drops every table: asks first).",
)
@click.option("--yes", is_flag=True, help="Do not ask before --to base drops every table.")
def downgrade(db_url: str | None, target: str, yes: bool) -> None:
    """Downgrade the schema one revision (or to --to). Data in dropped columns is lost.

    --to base drops every table, with all its data: it asks first, unless --yes (and
    without a terminal to ask on, it is refused unless --yes).
    """
    url = existing_database(Settings.from_env(db_url=db_url).db_url)
    engine = open_engine(url)
    try:
        with guarded():
            before = migrations.read_state(engine)
            if before.current is None:
                raise BadRequest(
                    "the database has no revision to downgrade from "
                    f"({'empty' if before.empty else 'made before migrations'})"
                )
            if target == "base" and not yes:
                confirm_dropping_everything(parse_url(url).render_as_string(hide_password=True))
            with revision_named("downgrade", target, before):
                migrations.downgrade(engine, target)
            after = migrations.read_state(engine)
    finally:
        engine.dispose()
    click.echo(f"downgraded: {before.current or '-'} -> {after.current or '-'}")


def _finite(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    """``FloatRange`` lets ``inf`` and ``nan`` through: a number of days is finite."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of days")
    return value


@db.command()
@db_option(creates=False)
@click.option(
    "--decision-events-days",
    type=click.FloatRange(min=0),
    callback=_finite,
    help="Keep decision events this many days, 0: for ever "
    "(default: NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS).",
)
@click.option(
    "--experience-events-days",
    type=click.FloatRange(min=0),
    callback=_finite,
    help="Keep experience events this many days, by their timestamp, 0: for ever "
    "(default: NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS).",
)
def prune(
    db_url: str | None, decision_events_days: float | None, experience_events_days: float | None
) -> None:
    """Delete the events older than their retention, and the decision events and cap
    counters of deleted profiles, now.

    A server does this every five minutes (docs/deploy.md, "Retention"). The offers report
    counts the decision events first; only counted ones go. With no retention given or
    set, only deleted profiles' decision events go.
    """
    settings = Settings.from_env(
        db_url=existing_database(Settings.from_env(db_url=db_url).db_url),
        retain_decision_events_days=decision_events_days,
        retain_experience_events_days=experience_events_days,
    )
    with (
        NextOffer.open(settings) as no,
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            transient=True,
            console=Console(stderr=True),
        ) as bar,
    ):
        task = bar.add_task("counting the decision events into the offers report")
        no.path.fold()

        def show(pruned: Pruned) -> None:
            bar.update(
                task,
                description=f"deleted {pruned.decision_events:,} decision events, "
                f"{pruned.experience_events:,} experience events, "
                f"{pruned.erased:,} of deleted profiles and {pruned.counters:,} of their cap "
                "counters",
            )

        show(Pruned())
        pruned = no.retention.prune(on_progress=show)
    click.echo(
        f"deleted: {pruned.decision_events} decision events, "
        f"{pruned.experience_events} experience events, "
        f"{pruned.ranking_trials} ranking trials, "
        f"{pruned.erased} decision events and {pruned.counters} cap counters of deleted"
        " profiles"
    )
    kept = [
        kind
        for kind, days in (
            ("decision events", settings.retain_decision_events_days),
            ("experience events", settings.retain_experience_events_days),
        )
        if not days
    ]
    if kept:  # `--decision-events-days 0` reads as "keep none": say what it means
        click.echo(
            f"note: {' and '.join(kept)} are kept for ever (no retention given or set;"
            " 0 days is for ever)",
            err=True,
        )


@db.command()
@db_option(creates=False)
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def backup(db_url: str | None, dest: Path) -> None:
    """Copy a SQLite database to DEST while servers use it (a consistent copy, checked).

    PostgreSQL: use pg_dump (docs/deploy.md, "Backups").
    """
    url = existing_database(Settings.from_env(db_url=db_url).db_url)
    source = sqlite_file(url)
    if source is None:
        raise BadRequest(
            "db backup copies a SQLite database; back PostgreSQL up with pg_dump "
            '(docs/deploy.md, "Backups")'
        )
    with Progress(
        TextColumn("copying {task.fields[source]}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("backup", total=None, source=source.name)
        written = backup_sqlite(
            source,
            dest,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    click.echo(f"backed up: {source} -> {dest} ({written:,} bytes, checked)")


@db.command("copy")
@db_option(creates=False)
@click.option(
    "--to",
    "target_url",
    required=True,
    metavar="URL",
    help="The database to copy into: a new SQLite file, or an empty PostgreSQL database "
    "(its tables are made by the migrations first).",
)
def copy_command(db_url: str | None, target_url: str) -> None:
    """Copy every row of the database (--db) into an empty one (--to): a SQLite
    deployment's into PostgreSQL to scale out, or back.

    Stop the servers and batch runs that write to the source first: the copy is the source
    as it was when the copy began, and what they write after that is not in it (said after
    the copy, which then exits 5). The target is written in one transaction (a failed copy
    leaves it empty) and its search index is built from the instances copied. Cap counters
    in Redis stay there (docs/deploy.md, "Moving to PostgreSQL").
    """
    source_url = existing_database(Settings.from_env(db_url=db_url).db_url)
    refuse_same(source_url, target_url)
    source = open_engine(source_url)
    try:
        target = open_engine(target_url)
        try:
            with guarded():
                _ready(source, target, source_url, target_url)
                copied = _copy_shown(source, target)
                changed = changed_since(source, copied)
        finally:
            target.dispose()
    finally:
        source.dispose()
    click.echo(
        f"copied: {_shown(source_url)} -> {_shown(target_url)} ({copied.total:,} rows in "
        f"{len(copied.rows)} tables; search index built)"
    )
    for name, rows in copied.rows.items():
        if rows:
            click.echo(f"  {name:<24}{rows:>12,}")
    if changed or copied.written:
        what = ", ".join(_change(name, was, now) for name, (was, now) in changed.items())
        click.echo(
            "warning: the source changed while it was copied ("
            + (what or "rows changed in place, e.g. cap counters a batch job counted")
            + "): those writes are not in the copy. Stop the servers and batch runs that"
            f" write to it, empty the target ({emptying(target_url)}) and copy again.",
            err=True,
        )
        # The copy is whole, but not the source as it is now: a script that goes on to
        # start the nodes on it (`db copy && …`) must not.
        sys.exit(Conflict.exit_code)


def _change(table: str, was: int, now: int) -> str:
    """A table the source changed during the copy, as the warning names it: by its rows,
    or (as many rows as copied, PostgreSQL's source only) as changed in place."""
    if was == now:
        return f"{table} changed in place"
    return f"{table} {was:,} -> {now:,} rows"


def _ready(source: Engine, target: Engine, source_url: str, target_url: str) -> None:
    """The source at the newest revision, and the target made by the migrations if it
    has no tables yet; refuse otherwise."""
    with guarded(f"--db {_shown(source_url)}"):
        found = migrations.read_state(source)
    if not found.at_head:
        raise BadRequest(
            f"the source database is at revision {found.current or '-'}, not the newest "
            f"({found.head}): run `nextoffer db upgrade` on it first"
        )
    with guarded(f"--to {_shown(target_url)}"):
        into = migrations.read_state(target)
        if into.at_head:
            return
        if not into.empty:
            where = "made before migrations" if into.legacy else f"at revision {into.current}"
            raise BadRequest(
                f"the target database is {where}: copy into a new database, or an empty one"
                f" at the newest revision ({into.head})"
            )
        _refuse_other_tables(target)
        migrations.upgrade(target, "head")


def _refuse_other_tables(target: Engine) -> None:
    """Refuse a target without a revision that holds tables all the same: another
    application's database (a URL naming the wrong one), which the migrations would fill
    with nextoffer's tables beside its own."""
    with target.connect() as conn:  # Alembic's own table outlives a downgrade to base
        names = sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
    if names:
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise BadRequest(
            f"the target database holds tables that are not nextoffer's ({listed}): copy into"
            ' a new database (docs/deploy.md, "Running it", creates one)'
        )


def _copy_shown(source: Engine, target: Engine) -> Copied:
    """:func:`copy_database` under a progress bar of the rows written."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("counting the rows", total=None)
        return copy_database(
            source,
            target,
            on_start=lambda counts: bar.update(
                task, total=sum(counts.values()), description="copying"
            ),
            on_table=lambda name: bar.update(task, description=f"copying {name}"),
            on_rows=lambda n: bar.advance(task, n),
        )


def _shown(url: str) -> str:
    return parse_url(url).render_as_string(hide_password=True)


def confirm_dropping_everything(where: str) -> None:
    """Ask before ``--to base``; refuse when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        raise BadRequest(
            f"--to base drops every table of {where} with all its data; "
            "give --yes to do it (there is no terminal to ask on)"
        )
    click.confirm(f"--to base drops every table of {where} with all its data. Go on?", abort=True)


@contextmanager
def revision_named(action: str, target: str, before: migrations.SchemaState) -> Iterator[None]:
    """Alembic's refusal of ``target`` (unknown, no such step) as :class:`BadRequest`
    listing the revisions there are."""
    from alembic.util.exc import CommandError

    try:
        yield
    except CommandError as exc:
        raise BadRequest(
            f"cannot {action} to {target!r}: {exc}; the database is at "
            f"{before.current or 'no revision'}; the revisions, oldest first: "
            f"{', '.join(migrations.revisions())}, "
            + ("or head, or +N steps" if action == "upgrade" else "or base, or -N steps")
        ) from None

"""``nextoffer import profiles FILE.jsonl``: bulk-load profiles with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nextoffer.cli import jsonfile
from nextoffer.cli.library_import import library
from nextoffer.cli.options import db_option, existing_database
from nextoffer.errors import BadRequest, NextOfferError, NotFound
from nextoffer.repository.validation import LONG_INTEGER_REFUSED, long_integer_at
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.settings import Settings

#: Lines written per transaction (one commit each).
BATCH = 2_000


@click.group(name="import")
def import_() -> None:
    """Load data in bulk."""


import_.add_command(library)


def stopped(exc: NextOfferError, path: Path, line: int, loaded: int, bad: int) -> NextOfferError:
    """``exc``, which stopped the import at ``line``, saying what was done before it."""
    detail = (
        f"{exc.for_operator()}; stopped at line {line} of {path}: {loaded} profiles were "
        f"loaded before it, {bad} lines rejected. Profiles are upserted: running the same "
        "file again is safe"
    )
    exc.internal = None  # said in the detail, which only the operator reads here
    return exc.reworded(detail)


@import_.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option(creates=False)
@click.option("--org", required=True, help="Organisation the profiles belong to.")
@click.option("--sandbox", required=True, help="Sandbox the profiles belong to.")
def profiles(path: Path, db_url: str | None, org: str, sandbox: str) -> None:
    """Upsert one profile per line: {"identityMap": {...}, "profile": {...}}.

    Lines are written in transactions of 2,000. Bad lines are reported with their line
    number and skipped (a transaction the database refuses for a value is written again
    line by line, to reject only the line holding it); the exit code is 1 when any line
    was bad. Should the database fail (gone, locked too long), the import stops saying
    at which line and how many profiles were loaded before it.
    """
    settings = Settings.from_env(db_url=db_url)
    existing_database(settings.db_url)
    principal = Principal(org, sandbox, "nextoffer-cli", "nextoffer-cli")
    console = Console(stderr=True)
    loaded = bad = 0
    with NextOffer.open(settings) as no:
        with no.store.session() as session:
            if not session.sandbox_exists(org, sandbox):
                raise NotFound(
                    f"no sandbox {sandbox!r} in organisation {org!r}; run admin bootstrap first"
                )
        with path.open("rb") as raw:
            total = sum(1 for _ in raw)
        pending: list[tuple[int, Any]] = []
        #: The first line of what is being written (where an outage stops the import).
        writing = 0

        def record(number: int, error: NextOfferError | None) -> None:
            nonlocal loaded, bad
            if error is None:
                loaded += 1
            else:
                bad += 1
                console.print(f"line {number}: {error.detail}", markup=False, highlight=False)

        def flush() -> None:
            nonlocal writing
            writing = pending[0][0]
            try:
                outcomes = no.profiles.upsert_many(principal, [body for _, body in pending])
            except BadRequest:
                # The database refused a value of the batch (the whole transaction): write
                # it again line by line, so that only the line holding it is rejected.
                for number, body in pending:
                    writing = number
                    try:
                        [error] = no.profiles.upsert_many(principal, [body])
                    except BadRequest as exc:
                        error = exc
                    record(number, error)
            else:
                for (number, _), error in zip(pending, outcomes, strict=True):
                    record(number, error)
            pending.clear()

        try:
            with (
                path.open("rb") as lines,
                Progress(
                    TextColumn("profiles"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=console,
                ) as bar,
            ):
                task = bar.add_task("profiles", total=total)
                for number, line in enumerate(lines, start=1):
                    if line.strip():
                        try:
                            body = orjson.loads(line)
                            if (where := long_integer_at(line)) is not None:
                                raise BadRequest(f"{LONG_INTEGER_REFUSED} (at {where or '/'})")
                            pending.append((number, body))
                        except (orjson.JSONDecodeError, BadRequest) as exc:
                            bad += 1
                            problem = (
                                f"line {number}: {exc.detail}"
                                if isinstance(exc, BadRequest)
                                else jsonfile.line_problem(number, line, exc)
                            )
                            console.print(problem, markup=False, highlight=False)
                    if len(pending) >= BATCH:
                        flush()
                        bar.update(task, completed=number)
                if pending:
                    flush()
                bar.update(task, completed=total)
        except NextOfferError as exc:  # the database gone, locked too long…
            raise stopped(exc, path, writing, loaded, bad) from exc
    click.echo(f"{loaded} profiles loaded, {bad} lines rejected")
    if bad:
        raise SystemExit(1)

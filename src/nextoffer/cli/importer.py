"""``nextoffer import profiles FILE.jsonl``: bulk-load profiles with a progress bar."""

from __future__ import annotations

import json
from pathlib import Path

import click

from nextoffer.errors import NextOfferError, NotFound
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.settings import Settings


@click.group(name="import")
def import_() -> None:
    """Load data in bulk."""


@import_.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--db",
    "db_url",
    envvar="NEXTOFFER_DB",
    help="Database URL (default: ./.nextoffer/nextoffer.db).",
)
@click.option("--org", required=True, help="Organisation the profiles belong to.")
@click.option("--sandbox", required=True, help="Sandbox the profiles belong to.")
def profiles(path: Path, db_url: str | None, org: str, sandbox: str) -> None:
    """Upsert one profile per line: {"identityMap": {...}, "profile": {...}}.

    Bad lines are reported with their line number and skipped; the exit code is 1 when
    any line was bad.
    """
    settings = Settings.from_env(db_url=db_url)
    principal = Principal(org, sandbox, "nextoffer-cli", "nextoffer-cli")
    loaded = bad = 0
    with NextOffer.open(settings) as no:
        with no.store.session() as session:
            if not session.sandbox_exists(org, sandbox):
                raise NotFound(
                    f"no sandbox {sandbox!r} in organisation {org!r}; run admin bootstrap first"
                )
        with path.open("rb") as raw:
            total = sum(1 for _ in raw)
        with (
            path.open(encoding="utf-8") as lines,
            click.progressbar(length=total, label="profiles") as bar,
        ):
            for number, line in enumerate(lines, start=1):
                bar.update(1)
                if not line.strip():
                    continue
                try:
                    no.profiles.upsert(principal, json.loads(line))
                    loaded += 1
                except (json.JSONDecodeError, NextOfferError) as exc:
                    bad += 1
                    detail = exc.detail if isinstance(exc, NextOfferError) else str(exc)
                    click.echo(f"\nline {number}: {detail}", err=True)
    click.echo(f"{loaded} profiles loaded, {bad} lines rejected")
    if bad:
        raise SystemExit(1)

"""``nextoffer admin``: tenants and credentials."""

from __future__ import annotations

from datetime import timedelta

import click
import orjson

from nextoffer.cli.options import db_option
from nextoffer.console import login_link
from nextoffer.root import NextOffer
from nextoffer.settings import Settings


@click.group()
def admin() -> None:
    """Manage organisations, sandboxes and credentials."""


@admin.command()
@db_option(creates=True)
@click.option("--org", required=True, help="IMS organisation id, e.g. ACME@AdobeOrg.")
@click.option("--sandbox", required=True, help="Sandbox name, e.g. prod.")
@click.option("--client-id", help="API key to create or reuse (default: derived from the org).")
@click.option("--user", help="User the token acts as (repo:createdBy).")
@click.option(
    "--ttl",
    default=86400,
    show_default=True,
    type=click.IntRange(60),
    help="Token lifetime, seconds.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (the only output format)."
)
def bootstrap(
    db_url: str | None,
    org: str,
    sandbox: str,
    client_id: str | None,
    user: str | None,
    ttl: int,
    as_json: bool,
) -> None:
    """Create or reuse the org, sandbox, container, API client, and mint a token."""
    settings = Settings.from_env(db_url=db_url)
    with NextOffer.open(settings) as no:
        creds = no.bootstrap(
            org=org, sandbox=sandbox, client_id=client_id, user=user, ttl=timedelta(seconds=ttl)
        )
    base = f"http://{settings.host}:{settings.port}"
    console = login_link(
        base,
        org=creds.org,
        sandbox=creds.sandbox,
        api_key=creds.api_key,
        access_token=creds.access_token,
    )
    click.echo(orjson.dumps({**creds.as_json(), "consoleUrl": console}).decode())

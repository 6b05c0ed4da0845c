"""``nextoffer admin``: tenants, credentials, and the cap counters in Redis."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nextoffer.cli.options import db_option, existing_database
from nextoffer.console import login_link
from nextoffer.errors import BadRequest, CountersLost
from nextoffer.root import NextOffer
from nextoffer.settings import Settings


@click.group()
def admin() -> None:
    """Manage organisations, sandboxes and credentials."""


#: The longest an org, sandbox or client id may be: the tables' columns (String(255)).
NAME_MAX = 255
#: The longest token lifetime: ten years (a longer one overflowed the date arithmetic).
TTL_MAX = 10 * 365 * 86400


def tenant_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An org, sandbox or client id as the API's headers can carry it: 1 to 255 printable
    ASCII characters, no space at either end (a header's value loses those)."""
    if value is None:
        return None
    option = param.opts[0]
    if not value:
        raise BadRequest(f"{option} must not be empty")
    if len(value) > NAME_MAX:
        raise BadRequest(f"{option} is {len(value):,} characters long; at most {NAME_MAX}")
    if value != value.strip() or not all(" " <= c <= "~" for c in value):
        raise BadRequest(
            f"{option} {value!r} must be printable ASCII without a space at either end "
            "(as the API's headers carry it)"
        )
    return value


def _base_url(value: str | None) -> str | None:
    """``--url`` as a link's start: ``http(s)://host[:port][/path]``, nothing after."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise BadRequest(
            f"--url {value!r} must be http:// or https:// and a host, e.g. "
            "https://offers.example.com"
        )
    return value


@admin.command()
@db_option(creates=True)
@click.option(
    "--org",
    required=True,
    callback=tenant_name,
    help=f"IMS organisation id, e.g. ACME@AdobeOrg (1 to {NAME_MAX} printable ASCII characters).",
)
@click.option(
    "--sandbox",
    required=True,
    callback=tenant_name,
    help=f"Sandbox name, e.g. prod (1 to {NAME_MAX} printable ASCII characters).",
)
@click.option(
    "--client-id",
    callback=tenant_name,
    help="API key to create or reuse (default: derived from the org).",
)
@click.option("--user", help="User the token acts as (repo:createdBy).")
@click.option(
    "--ttl",
    default=86400,
    show_default=True,
    type=click.IntRange(60, TTL_MAX),
    help="Token lifetime, seconds (at most ten years).",
)
@click.option(
    "--url",
    "base_url",
    callback=lambda _ctx, _param, value: _base_url(value),
    help="The server's address, where consoleUrl points (default: http://127.0.0.1:8080,"
    " where `nextoffer serve` listens unless told otherwise).",
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
    base_url: str | None,
    as_json: bool,
) -> None:
    """Create or reuse the org, sandbox, container, API client, and mint a token."""
    settings = Settings.from_env(db_url=db_url)
    with NextOffer.open(settings) as no:
        creds = no.bootstrap(
            org=org, sandbox=sandbox, client_id=client_id, user=user, ttl=timedelta(seconds=ttl)
        )
    base = base_url or f"http://{settings.host}:{settings.port}"
    console = login_link(
        base,
        org=creds.org,
        sandbox=creds.sandbox,
        api_key=creds.api_key,
        access_token=creds.access_token,
    )
    click.echo(orjson.dumps({**creds.as_json(), "consoleUrl": console}).decode())


@admin.command()
@db_option(creates=False)
@click.option("--org", callback=tenant_name, help="Only this organisation's clients.")
def clients(db_url: str | None, org: str | None) -> None:
    """List the API clients: one JSON object per line (clientId, org, sandboxes, created)."""
    settings = Settings.from_env(db_url=existing_database(Settings.from_env(db_url=db_url).db_url))
    with NextOffer.open(settings) as no:
        found = no.clients(org=org)
    for client in found:
        click.echo(
            orjson.dumps(
                {
                    "clientId": client.client_id,
                    "org": client.org_id,
                    "sandboxes": sorted(client.sandboxes),
                    "created": client.created,
                }
            ).decode()
        )


@admin.command()
@db_option(creates=False)
@click.option("--client-id", required=True, callback=tenant_name, help="The API key to revoke.")
@click.option(
    "--sandbox",
    callback=tenant_name,
    help="Only take this sandbox from the client (default: delete the client).",
)
def revoke(db_url: str | None, client_id: str, sandbox: str | None) -> None:
    """Revoke an API client, or one sandbox of it: every server refuses its tokens within
    five seconds. A client made again under the same id (admin bootstrap --client-id)
    does not accept the tokens minted before."""
    settings = Settings.from_env(db_url=existing_database(Settings.from_env(db_url=db_url).db_url))
    with NextOffer.open(settings) as no:
        no.revoke(client_id, sandbox=sandbox)
    if sandbox is None:
        click.echo(f"revoked: API client {client_id} and every sandbox it had")
    else:
        click.echo(f"revoked: sandbox {sandbox} of API client {client_id}")


@admin.command()
@db_option(creates=False)
@click.option(
    "--redis",
    "redis_url",
    help="redis://host:port/N: the servers' Redis (default: NEXTOFFER_REDIS).",
)
@click.option(
    "--accept-loss",
    is_flag=True,
    help="Let the caps of the containers listed count again, from what Redis holds now.",
)
@click.option(
    "--into-redis",
    is_flag=True,
    help="Move the cap counters the database holds (counted before the deployment added "
    "Redis; until moved, their capped offers count as capped) into Redis, each added to "
    "what Redis holds. Stop the servers that run without Redis first: their counts in the "
    "database would not move. Safe to stop and run again: no count is added twice.",
)
@click.option(
    "--out-of-redis",
    is_flag=True,
    help="Move the cap counters Redis holds into the database, each added to the "
    "database's, for a deployment that stops using Redis. Stop every server first, then "
    "start them without Redis. Safe to stop and run again: no count is added twice.",
)
@click.option(
    "--container",
    "containers",
    multiple=True,
    help="With --accept-loss, --into-redis or --out-of-redis: only this container (repeat "
    "for more).",
)
def counters(
    db_url: str | None,
    redis_url: str | None,
    accept_loss: bool,
    into_redis: bool,
    out_of_redis: bool,
    containers: tuple[str, ...],
) -> None:
    """List the containers whose cap counters Redis has lost (a restart without its data,
    another Redis): their capped offers count as capped until Redis is restored from its
    backup, or the loss is accepted here. With --into-redis, move the counters of a
    deployment that added Redis from the database into it; with --out-of-redis, those of
    one that stops using it from Redis into the database."""
    if accept_loss + into_redis + out_of_redis > 1:
        raise click.UsageError("--accept-loss, --into-redis and --out-of-redis are one a run")
    if containers and not (accept_loss or into_redis or out_of_redis):
        raise click.UsageError(
            "--container goes with --accept-loss, --into-redis or --out-of-redis"
        )
    base = Settings.from_env(db_url=db_url, redis_url=redis_url)
    if not base.redis_url:
        raise click.UsageError(
            "the cap counters are in Redis only with --redis (or NEXTOFFER_REDIS)"
        )
    settings = Settings.from_env(db_url=existing_database(base.db_url), redis_url=base.redis_url)
    if into_redis or out_of_redis:
        move_counters(settings, containers, into=into_redis)
        return
    with NextOffer.open(settings) as no:
        if accept_loss:
            done = no.accept_counter_loss(containers or None)
            for container in done:
                click.echo(
                    f"accepted: container {container} counts its caps from Redis's counters now"
                )
            if not done and containers:
                click.echo("none of the containers named has lost its counters")
            elif not done:
                click.echo("nothing to accept: Redis holds every container's counters")
            return
        lost = no.lost_counters()
        unmoved = no.counter_moves.unmoved() if no.counter_moves is not None else {}
    for container in lost:
        click.echo(container)
    for container, n in unmoved.items():
        click.echo(
            f"container {container}: {n} cap counter{'s' if n != 1 else ''} still in the "
            "database (counted before Redis was added): move them with --into-redis",
            err=True,
        )
    if not lost and not unmoved:
        click.echo("Redis holds every container's cap counters", err=True)


def move_counters(settings: Settings, containers: tuple[str, ...], *, into: bool) -> None:
    """``admin counters --into-redis`` (``into``) or ``--out-of-redis``, under a progress
    bar of the counters moved."""
    where = "into Redis" if into else "out of Redis into the database"
    with (
        NextOffer.open(settings) as no,
        Progress(
            TextColumn(f"moving cap counters {where}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
            console=Console(stderr=True),
        ) as bar,
    ):
        task = bar.add_task("move", total=None)

        def show(n: int, total: int) -> None:
            bar.update(task, completed=n, total=total or None)

        done = no.move_counters(containers or None, into_redis=into, on_progress=show)
    for container, n in done.moved.items():
        click.echo(f"container {container}: {n} counter{'s' if n != 1 else ''} moved {where}")
    if done.lost:
        for container in done.lost:
            click.echo(
                f"container {container}: not moved: Redis lost its counters; restore Redis "
                "from its backup or accept the loss (--accept-loss), then move them",
                err=True,
            )
        raise CountersLost(done.lost)
    if not done.moved:
        named = " of the containers named" if containers else ""
        held = "the database holds no cap counters" if into else "Redis holds no cap counters"
        click.echo(f"nothing to move: {held}{named}")


@admin.command("rotate-key")
@db_option(creates=False)
def rotate_key(db_url: str | None) -> None:
    """Add a token signing key: tokens minted from now on (admin bootstrap) are signed
    with it, and the tokens of older keys stay valid until admin drop-old-keys."""
    settings = Settings.from_env(db_url=existing_database(Settings.from_env(db_url=db_url).db_url))
    with NextOffer.open(settings) as no:
        kid = no.rotate_signing_key()
    click.echo(f"new signing key: {kid}; mint tokens with admin bootstrap, then drop-old-keys")


@admin.command("drop-old-keys")
@db_option(creates=False)
def drop_old_keys(db_url: str | None) -> None:
    """Delete every token signing key but the newest: every server refuses the tokens
    they signed within five seconds, and console sessions end."""
    settings = Settings.from_env(db_url=existing_database(Settings.from_env(db_url=db_url).db_url))
    with NextOffer.open(settings) as no:
        dropped = no.drop_old_signing_keys()
    click.echo(f"dropped: {dropped} signing key{'s' if dropped != 1 else ''}")

"""``nextoffer decide``: run the decision engine in-process (a dry run) for one profile."""

from __future__ import annotations

import json
from typing import IO, Any

import click
import orjson

from nextoffer.api.decision_request import ResponseFormat
from nextoffer.api.decision_response import response
from nextoffer.engine import PropositionRequest
from nextoffer.errors import BadRequest, NotFound
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.service.decisions import DecisionCall
from nextoffer.settings import Settings


def _load(stream: IO[str], what: str) -> Any:
    try:
        return json.load(stream)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from exc


@click.command()
@click.option(
    "--db",
    "db_url",
    envvar="NEXTOFFER_DB",
    help="Database URL (default: ./.nextoffer/nextoffer.db).",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="NEXTOFFER_REDIS",
    help="redis://host:port/N: cap counters in Redis (as the server reads them).",
)
@click.option("--container", "container_id", required=True, help="Container id.")
@click.option("--activity", required=True, help="Decision @id (xcore:offer-activity:…).")
@click.option("--placement", required=True, help="Placement @id (xcore:offer-placement:…).")
@click.option(
    "--items", default=1, show_default=True, type=click.IntRange(1, 30), help="Options wanted."
)
@click.option(
    "--profile",
    "profile_file",
    required=True,
    type=click.File("r"),
    help="Profile attributes as JSON (a file, or - for stdin).",
)
@click.option(
    "--events", "events_file", type=click.File("r"), help="Experience events as a JSON array."
)
@click.option(
    "--context",
    "context_file",
    type=click.File("r"),
    help='Context data as JSON: {"<schema>": {...}}.',
)
@click.option("--explain", is_flag=True, help="Add the per-candidate trace.")
def decide(
    db_url: str | None,
    redis_url: str | None,
    container_id: str,
    activity: str,
    placement: str,
    items: int,
    profile_file: IO[str],
    events_file: IO[str] | None,
    context_file: IO[str] | None,
    explain: bool,
) -> None:
    """Decide for a profile given as a file, with the same engine as the API; nothing is recorded."""
    profile = _load(profile_file, "--profile")
    events = _load(events_file, "--events") if events_file else []
    context = _load(context_file, "--context") if context_file else {}
    if (
        not isinstance(profile, dict)
        or not isinstance(events, list)
        or not isinstance(context, dict)
    ):
        raise BadRequest("--profile and --context must hold JSON objects, --events a JSON array")
    # The same root as the server: counters in Redis when NEXTOFFER_REDIS/--redis says so.
    settings = Settings.from_env(db_url=db_url, redis_url=redis_url)
    with NextOffer.open(settings) as no:
        with no.store.session() as session:
            container = session.get_container_by_id(container_id)
        if container is None:
            raise NotFound(f"container {container_id} does not exist")
        principal = Principal(container.org_id, container.sandbox, "nextoffer-cli", "nextoffer-cli")
        call = DecisionCall(
            propositions=(PropositionRequest(activity, placement, items),),
            identities=(),
            context=context,
            dry_run=True,
            explain=explain,
        )
        outcome = no.decide(principal, container_id, call, profile=profile, events=events)
    fmt = ResponseFormat(
        include_content=True,
        metadata={
            "xdm:activity": frozenset({"name"}),
            "xdm:option": frozenset({"name", "priority"}),
            "xdm:placement": frozenset({"name"}),
        },
        explain=explain,
    )
    click.echo(
        orjson.dumps(
            response(outcome, fmt, decision_request_id=None), option=orjson.OPT_INDENT_2
        ).decode()
    )

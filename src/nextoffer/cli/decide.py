"""``nextoffer decide``: run the decision engine in-process (a dry run) for one profile."""

from __future__ import annotations

from typing import IO, Any

import click
import orjson

from nextoffer.api.decision_request import ResponseFormat
from nextoffer.api.decision_response import response
from nextoffer.cli import jsonfile
from nextoffer.cli.options import db_option, existing_database
from nextoffer.engine import PropositionRequest
from nextoffer.errors import BadRequest, NotFound, Unprocessable
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.service.decisions import DecisionCall
from nextoffer.service.identities import parse_identity_map
from nextoffer.settings import Settings

#: The members of one profile as ``nextoffer import profiles`` reads it (a profile upsert).
PROFILE_DOCUMENT_KEYS = frozenset({"identityMap", "profile"})


def read_profile(value: Any) -> tuple[dict[str, Any], list[tuple[str, str]], str]:
    """The attributes and identities ``--profile`` holds, and which form it was read as.

    The ``{identityMap, profile}`` form is an object whose members are ``identityMap``
    and/or ``profile`` and nothing else, with ``profile`` (when present) an object: its
    ``profile`` is the attributes (none without it), and its ``identityMap`` (one as
    ``import profiles`` would accept) names the person, whose per-profile caps the dry
    run then reads. Any other object is the bare attributes, for an anonymous visitor.
    """
    if not isinstance(value, dict):
        raise BadRequest("--profile must hold a JSON object")
    keys = value.keys()
    if (
        not keys
        or not keys <= PROFILE_DOCUMENT_KEYS
        or not isinstance(value.get("profile", {}), dict)
    ):
        return value, [], "bare profile attributes"
    identities: list[tuple[str, str]] = []
    if "identityMap" in value:
        try:
            identities = parse_identity_map(value["identityMap"], pointer="/identityMap")
        except Unprocessable as exc:
            raise Unprocessable(
                f"--profile {exc.pointer}: {exc.detail}", pointer=exc.pointer
            ) from exc
    attributes: dict[str, Any] = value.get("profile", {})
    return attributes, identities, "{identityMap, profile}"


@click.command()
@db_option(creates=False)
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
    type=click.File("rb"),
    help="The profile as JSON (a file, or - for stdin): either its bare attributes, or "
    'one {"identityMap": {...}, "profile": {...}} as import profiles reads it. An object '
    "whose only members are identityMap and/or profile, with profile an object, is read "
    "as the latter (its identityMap names the person whose caps are read); any other "
    "object as bare attributes. stderr says which.",
)
@click.option(
    "--events", "events_file", type=click.File("rb"), help="Experience events as a JSON array."
)
@click.option(
    "--context",
    "context_file",
    type=click.File("rb"),
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
    profile_file: IO[bytes],
    events_file: IO[bytes] | None,
    context_file: IO[bytes] | None,
    explain: bool,
) -> None:
    """Decide for a profile given as a file, with the same engine as the API; records nothing."""
    # The same root as the server: counters in Redis when NEXTOFFER_REDIS/--redis says so.
    settings = Settings.from_env(db_url=db_url, redis_url=redis_url)
    existing_database(settings.db_url)
    profile, identities, form = read_profile(jsonfile.load(profile_file, "--profile"))
    events = jsonfile.load(events_file, "--events", list) if events_file else []
    context = jsonfile.load(context_file, "--context", dict) if context_file else {}
    click.echo(f"decide: read --profile as {form}", err=True)
    with NextOffer.open(settings) as no:
        with no.store.session() as session:
            container = session.get_container_by_id(container_id)
        if container is None:
            raise NotFound(f"container {container_id} does not exist")
        principal = Principal(container.org_id, container.sandbox, "nextoffer-cli", "nextoffer-cli")
        call = DecisionCall(
            propositions=(PropositionRequest(activity, placement, items),),
            identities=tuple(identities),
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
            response(outcome, fmt, decision_request_id=None, compact=False),
            option=orjson.OPT_INDENT_2,
        ).decode()
    )

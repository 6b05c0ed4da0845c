"""``nextoffer pql check`` and ``nextoffer pql eval``: validate and try out PQL rules.

A rule that does not parse or check prints the message with a caret under the column and
exits 2 (``PQLError.exit_code``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

import click

from nextoffer import pql as pql_lang
from nextoffer.cli import jsonfile
from nextoffer.errors import BadRequest, PQLError
from nextoffer.pql.time import parse_now

_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["pql/text", "pql/json"]),
    default="pql/text",
    show_default=True,
    help="How the rule is written.",
)


_PATH = click.Path(exists=True, dir_okay=False)


def _fail(ctx: click.Context, exc: PQLError) -> None:
    click.echo(pql_lang.render_error(exc), err=True)
    ctx.exit(exc.exit_code)


def _json_file(shape: type) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A callback reading the option's file as JSON of ``shape`` (``decide``'s wording)."""

    def read(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        return jsonfile.load_path(value, param.opts[0], shape)

    return read


def _now(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--now`` checked whether or not the expression reads the time."""
    if value is not None and parse_now(value) is None:
        raise BadRequest(
            f"--now {value!r} is not a date-time: give RFC 3339, e.g. 2024-06-15T10:00:00Z"
        )
    return value


@click.group(name="pql")
def pql() -> None:
    """PQL rules and ranking formulas: check and evaluate."""


@pql.command("check")
@click.argument("file", type=click.File("rb"))
@_FORMAT
@click.option(
    "--kind",
    type=click.Choice(["rule", "formula"]),
    default="rule",
    show_default=True,
    help="Rule (≤ 15 KB) or ranking formula (≤ 8 KB).",
)
@click.pass_context
def check(ctx: click.Context, file: IO[bytes], fmt: str, kind: str) -> None:
    """Validate the rule in FILE ('-' reads standard input): prints "ok" or the error."""
    name = getattr(file, "name", "-")
    what = "standard input" if name in ("<stdin>", "-") else str(name)
    data = file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not UTF-8 text ({jsonfile.not_utf8(exc)})") from None
    try:
        pql_lang.compile(text, format=fmt, kind=kind)
    except PQLError as exc:
        _fail(ctx, exc)
    click.echo("ok")


@pql.command("eval")
@click.argument("expr")
@click.option(
    "--profile",
    "profile",
    type=_PATH,
    required=True,
    callback=_json_file(dict),
    help="JSON file with the profile (an object).",
)
@click.option(
    "--events", type=_PATH, callback=_json_file(list), help="JSON file with the xEvent array."
)
@click.option(
    "--context",
    "context_data",
    type=_PATH,
    callback=_json_file(dict),
    help="JSON file: context data keyed by schema ref (an object).",
)
@click.option(
    "--vars",
    "variables",
    type=_PATH,
    callback=_json_file(dict),
    help="JSON file: named inputs such as offer (an object).",
)
@click.option(
    "--now", callback=_now, help="Execution time, RFC 3339 (default: the current UTC time)."
)
@_FORMAT
@click.pass_context
def eval_(
    ctx: click.Context,
    expr: str,
    profile: Any,
    events: Any,
    context_data: Any,
    variables: Any,
    now: str | None,
    fmt: str,
) -> None:
    """Evaluate EXPR against a profile and print the value as JSON."""
    try:
        value = pql_lang.evaluate(
            expr,
            profile=profile,
            events=events,
            now=now,
            context=context_data,
            variables=variables,
            format=fmt,
        )
    except PQLError as exc:
        _fail(ctx, exc)
    click.echo(json.dumps(value))

"""``nextoffer import library FILE.jsonl``: an Offer Library in bulk, checked as a whole.

One instance per line, in the shape ``GET …/instances/{id}`` answers (here or at Adobe):
``{"schemas": ["https://ns.adobe.com/experience/offer-management/<type>;version=…"],
"_instance": {"@id": "xcore:<type>:<hex>", …}, …}``; a line may also carry the type as
``"schema"``. Envelope fields (``instanceId``, ``repo:*``, ``_links``) are ignored: every
instance gets a new instance id and audit stamps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nextoffer.cli import jsonfile
from nextoffer.cli.options import db_option, existing_database
from nextoffer.errors import BadRequest, NextOfferError, NotFound, Unprocessable
from nextoffer.repository.objects import ObjectType, parse_schema_ref
from nextoffer.repository.validation import LONG_INTEGER_REFUSED, long_integer_at
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.service.body_checks import ParallelChecks
from nextoffer.service.heap import bulk_heap
from nextoffer.settings import Settings


def read_lines(path: Path) -> tuple[list[tuple[ObjectType, dict[str, Any]]], list[int]]:
    """(type, ``_instance``) per non-blank line, and each one's line number; raises
    ``BadRequest`` naming every unreadable line."""
    items: list[tuple[ObjectType, dict[str, Any]]] = []
    numbers: list[int] = []
    bad: list[str] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
                if (where := long_integer_at(line)) is not None:
                    raise BadRequest(f"{LONG_INTEGER_REFUSED} (at {where or '/'})")
                if not isinstance(item, dict):
                    raise BadRequest("not a JSON object")
                schemas = item.get("schemas")
                schema = item.get("schema") or (schemas[0] if isinstance(schemas, list) else None)
                if not isinstance(schema, str):
                    raise BadRequest('no "schemas" (or "schema") naming the type')
                body = item.get("_instance")
                if not isinstance(body, dict):
                    raise BadRequest('no "_instance" object')
                items.append((parse_schema_ref(schema).type, body))
                numbers.append(number)
            except (orjson.JSONDecodeError, BadRequest) as exc:
                bad.append(
                    f"line {number}: {exc.detail}"
                    if isinstance(exc, BadRequest)
                    else jsonfile.line_problem(number, line, exc)
                )
    if bad:
        raise BadRequest(
            f"{len(bad)} unreadable line(s); nothing was imported:\n" + "\n".join(bad[:50])
        )
    return items, numbers


#: Below this many instances the checks run in this process: starting worker processes
#: (~0.5 s each) would cost more than they save.
PARALLEL_FROM = 2_000

#: Problems listed, and characters of each message shown (a schema message may quote a
#: whole 500-item list).
SHOWN, MESSAGE_CHARS = 100, 300


def describe(exc: Unprocessable, numbers: list[int]) -> str:
    """The problems of ``exc`` with the line each is on (pointers start ``/<index>``), in
    the file's order, the library's own (the guardrail totals) first."""
    problems = exc.extra.get("errors") or [{"pointer": exc.pointer, "message": exc.detail}]

    def index(problem: dict[str, Any]) -> int:
        """The problem's instance (its place in the file), -1 for the library's own."""
        head = str(problem.get("pointer") or "").lstrip("/").partition("/")[0]
        return int(head) if head.isdigit() else -1

    problems = sorted(problems, key=index)  # by line (stable: a line's in found order)
    out = []
    for problem in problems[:SHOWN]:
        pointer = str(problem.get("pointer") or "")
        head, _, rest = pointer.lstrip("/").partition("/")
        where = f"line {numbers[int(head)]}" if head.isdigit() else "library"
        message = str(problem.get("message"))
        if len(message) > MESSAGE_CHARS:
            message = message[:MESSAGE_CHARS] + "…"
        out.append(f"{where}: {'/' + rest + ': ' if rest else ''}{message}")
    if len(problems) > SHOWN:
        out.append(f"… and {len(problems) - SHOWN} more")
    return "\n".join(out)


def partly_imported(
    exc: NextOfferError, path: Path, numbers: list[int], written: int, *, keep_ids: bool
) -> NextOfferError:
    """``exc``, raised once ``written`` instances were committed, saying so: how many, up
    to which line, and how to import the rest (the chunks are written in the file's order).
    """
    total = len(numbers)
    detail = exc.for_operator()
    if "were imported" not in detail:  # a write's own 409 already says how many
        detail += f"; {written} of {total} instances were imported"
    detail += f" (the lines up to line {numbers[written - 1]} of {path})"
    if keep_ids:
        detail += (
            "; running the same file again would report them as existing: import the lines "
            f"from line {numbers[written]} on to finish "
            f"(e.g. tail -n +{numbers[written]} {path} > rest.jsonl)"
        )
    else:
        detail += (
            " with new @ids; running the same file again would import every line again, "
            "as another copy"
        )
    exc.internal = None  # said in the detail, which only the operator reads here
    return exc.reworded(detail)


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option(creates=False)
@click.option("--org", required=True, help="Organisation of the container.")
@click.option("--sandbox", required=True, help="Sandbox of the container.")
@click.option(
    "--container",
    "container_id",
    help="Container id (default: the sandbox's only container).",
)
@click.option(
    "--keep-ids/--new-ids",
    default=True,
    show_default=True,
    help="Keep each instance's @id, or give every one a new @id (references rewritten).",
)
@click.option(
    "--chunk",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Instances per transaction.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=lambda: os.cpu_count() or 1,
    show_default="the number of CPUs",
    help=f"Worker processes checking the instances (from {PARALLEL_FROM:,} instances on).",
)
def library(
    path: Path,
    db_url: str | None,
    org: str,
    sandbox: str,
    container_id: str | None,
    keep_ids: bool,
    chunk: int,
    jobs: int,
) -> None:
    """Import an Offer Library: one instance per line, as GET returns it.

    Everything is checked first — schemas, rules, references (to another line or to an
    instance already in the container), ids, the guardrail totals — and every problem is
    reported with its line; then nothing is stored. Otherwise all instances are written,
    in the file's order, in transactions of --chunk. The checks (JSON Schema, compiling
    every rule) run in --jobs worker processes.

    Should the database fail after a transaction was committed (locked, gone), the
    instances written stay: the error says how many, up to which line, and how to import
    the rest.
    """
    settings = Settings.from_env(db_url=db_url)
    existing_database(settings.db_url)
    principal = Principal(org, sandbox, "nextoffer-cli", "nextoffer-cli")
    items, numbers = read_lines(path)
    with NextOffer.open(settings) as no:
        if container_id is None:
            containers = no.repository.containers(principal)
            if len(containers) != 1:
                raise NotFound(
                    f"{len(containers)} containers in {org}/{sandbox}: name one with --container"
                )
            container_id = containers[0].container_id
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),  # stdout holds the result alone
            transient=False,
        ) as bar:
            tasks = {
                "checked": bar.add_task("checked", total=len(items)),
                "written": bar.add_task("written", total=len(items)),
            }
            written = 0

            def advance(stage: str, n: int) -> None:
                nonlocal written
                if stage == "written":
                    written += n
                bar.advance(tasks[stage], n)

            try:
                with bulk_heap():
                    mapping = no.repository.create_many(
                        principal,
                        container_id,
                        items,
                        keep_ids=keep_ids,
                        chunk_size=chunk,
                        progress=advance,
                        checks=(
                            ParallelChecks(no.catalogs.rules, jobs)
                            if jobs > 1 and len(items) >= PARALLEL_FROM
                            else None
                        ),
                    )
                bar.update(tasks["checked"], completed=len(items))
            except NextOfferError as exc:
                if written:
                    raise partly_imported(exc, path, numbers, written, keep_ids=keep_ids) from exc
                if not isinstance(exc, Unprocessable):
                    raise
                raise Unprocessable(
                    f"nothing was imported: {len(exc.extra.get('errors') or [1])} problem(s)\n"
                    + describe(exc, numbers)
                ) from None
        no.catalogs.rules.save()  # the rules compiled to check them, for the servers
    renamed = sum(1 for old, new in mapping.items() if old != new)
    click.echo(f"{len(items)} instances imported into {container_id} ({renamed} @ids new)")

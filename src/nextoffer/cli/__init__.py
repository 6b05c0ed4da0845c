"""The ``nextoffer`` command. Errors from the tree in ``nextoffer.errors`` exit with their
own exit code and a one-line message; nothing prints a traceback at the user."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from nextoffer.errors import NextOfferError, PQLError

#: Each command's module and object, imported only when that command is asked for (or
#: ``--help`` lists them): ``nextoffer serve`` starts uvicorn without importing the
#: service layer, whose imports its workers make anyway, and ``nextoffer pql`` needs the
#: PQL package alone.
COMMANDS = {
    "serve": "nextoffer.cli.serve:serve",
    "admin": "nextoffer.cli.admin:admin",
    "db": "nextoffer.cli.db:db",
    "decide": "nextoffer.cli.decide:decide",
    "import": "nextoffer.cli.importer:import_",
    "pql": "nextoffer.cli.pql:pql",
    "batch": "nextoffer.cli.batch:batch",
}


class Group(click.Group):
    """The top-level group: commands loaded by name (:data:`COMMANDS`); an error from
    ``nextoffer.errors`` ends the command with its exit code and a one-line message."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, name = target.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NextOfferError as exc:
            detail = exc.for_operator()
            if isinstance(exc, PQLError):  # with its source line and a caret
                from nextoffer.pql import render_error  # only then: a command may not load PQL

                detail = render_error(exc)
            click.echo(f"error: {detail}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group)
@click.version_option(package_name="nextoffer")
def main() -> None:
    """nextoffer: self-hosted offer decisioning."""

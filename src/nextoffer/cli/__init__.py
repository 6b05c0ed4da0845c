"""The ``nextoffer`` command. Errors from the tree in ``nextoffer.errors`` exit with their
own exit code and a one-line message; nothing prints a traceback at the user."""

from __future__ import annotations

import sys
from typing import Any

import click

from nextoffer.cli.admin import admin
from nextoffer.cli.batch import batch
from nextoffer.cli.db import db
from nextoffer.cli.decide import decide
from nextoffer.cli.importer import import_
from nextoffer.cli.library_import import library
from nextoffer.cli.pql import pql
from nextoffer.cli.serve import serve
from nextoffer.errors import NextOfferError

import_.add_command(library)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NextOfferError as exc:
            render = getattr(exc, "render", None)
            click.echo(f"error: {render() if callable(render) else exc.detail}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=Group, commands=[serve, admin, db, decide, import_, pql, batch])
@click.version_option(package_name="nextoffer")
def main() -> None:
    """nextoffer: self-hosted offer decisioning."""

"""The ``nextoffer`` group: every command is found by name, and a command imports only
what it needs (``nextoffer.cli.COMMANDS``)."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from nextoffer.cli import COMMANDS, main


def test_every_command_is_found_by_its_name():
    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command)
        assert command.name == name
    assert main.get_command(ctx, "nonsense") is None


def test_help_lists_every_command_and_an_unknown_one_is_refused():
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in listed.output
    unknown = CliRunner().invoke(main, ["nonsense"])
    assert unknown.exit_code == 2
    assert "No such command 'nonsense'" in unknown.output


# A fresh interpreter: this one has imported the whole package for other tests.
_PROBE = """
import sys
from click.testing import CliRunner
from nextoffer.cli import main
checked = CliRunner().invoke(main, ["pql", "check", "-"], input="person.birthYear > 1980")
assert checked.exit_code == 0 and checked.output.strip() == "ok", checked.output
served = CliRunner().invoke(main, ["serve", "--help"])
assert served.exit_code == 0, served.output
heavy = ("nextoffer.root", "nextoffer.service", "nextoffer.storage", "sqlalchemy")
print(sorted(name for name in sys.modules if name.startswith(heavy)))
"""


def test_pql_and_serve_start_without_the_service_layer():
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False, timeout=120
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"

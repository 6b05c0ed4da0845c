"""The ``nextoffer`` group: every command is found by name, and a command imports only
what it needs (``nextoffer.cli.COMMANDS``)."""

from __future__ import annotations

import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from nextoffer.cli import COMMANDS, main
from support.servers import free_port


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


# A plain ``pip install .`` has no PostgreSQL or Redis client: the interpreter below
# cannot import the one named (``None`` in ``sys.modules`` makes its import fail).
_WITHOUT = """
import sys
sys.modules[{module!r}] = None
from nextoffer.cli import main
sys.argv = ["nextoffer", *{argv!r}]
main()
"""


@pytest.mark.parametrize(
    ("module", "argv", "told"),
    [
        ("psycopg", ["db", "upgrade", "--db", "postgresql://127.0.0.1:1/x"], "nextoffer[postgres]"),
        ("asyncpg", ["db", "upgrade", "--db", "postgresql://127.0.0.1:1/x"], "nextoffer[postgres]"),
        ("redis", ["serve", "--port", str(free_port())], "nextoffer[redis]"),
        (
            "redis",
            ["decide", "--container", "c", "--activity", "a", "--placement", "p", "--profile", "-"],
            "nextoffer[redis]",
        ),
    ],
)
def test_a_database_whose_client_is_not_installed_is_refused_saying_what_to_install(
    tmp_path, module, argv, told
):
    env = {**os.environ, "NEXTOFFER_DB": f"sqlite:///{tmp_path}/n.db"}
    if module == "redis":  # a database to decide on, then Redis for its counters
        made = subprocess.run(
            [sys.executable, "-m", "nextoffer", "db", "upgrade"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env=env,
        )
        assert made.returncode == 0, made.stderr
        env["NEXTOFFER_REDIS"] = "redis://127.0.0.1:1/0"
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT.format(module=module, argv=argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
        cwd=tmp_path,
        input="{}",
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    assert f"pip install '{told}'" in run.stderr, run.stderr


def test_importing_the_main_module_runs_nothing_and_running_it_runs_the_command():
    # batch.md's spark-submit line finds the file through the module: importing it ran
    # the CLI (a usage error, exit 2, and nothing printed to find the file by).
    imported = subprocess.run(
        [sys.executable, "-c", "import nextoffer.__main__ as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().endswith("__main__.py")
    ran = subprocess.run(
        [sys.executable, imported.stdout.strip(), "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ran.returncode == 0 and "version" in ran.stdout, ran.stderr

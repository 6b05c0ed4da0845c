"""``--db`` as every command reads it, and ``nextoffer db``: one-line errors, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nextoffer.cli import main


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def one_line_error(result, exit_code: int) -> str:
    """The error line of a command that failed as it should: no traceback, one line."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


BOOTSTRAP = ("admin", "bootstrap", "--org", "A@AdobeOrg", "--sandbox", "prod")
#: Commands that create a database that is not there, and commands that only use one.
CREATING = [("db", "upgrade"), BOOTSTRAP]
COMMANDS = [*CREATING, ("db", "current"), ("batch", "status", "some-job")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_url_sqlalchemy_cannot_parse_is_not_a_database_url(command):
    result = invoke(*command, "--db", "postgresql://x@[::1")
    line = one_line_error(result, 2)
    assert line == "error: not a database URL: 'postgresql://x@[::1'"


@pytest.mark.parametrize("command", CREATING, ids=lambda c: " ".join(c[:2]))
def test_a_sqlite_folder_that_cannot_be_made_is_named(command, tmp_path: Path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    result = invoke(*command, "--db", f"sqlite:///{in_the_way}/x.db")
    line = one_line_error(result, 2)
    assert line.startswith(f"error: cannot create the folder {in_the_way} of the SQLite database")
    assert in_the_way.read_text() == "not a folder"
    proc = invoke(*command, "--db", "sqlite:////proc/no-such-folder/x.db")
    assert one_line_error(proc, 2) == (
        "error: cannot create the folder /proc/no-such-folder of the SQLite database: "
        "No such file or directory"
    )

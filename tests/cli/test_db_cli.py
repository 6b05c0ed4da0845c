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


def read_only_commands(tmp_path: Path) -> list[tuple[str, ...]]:
    profile = tmp_path / "profile.json"
    profile.write_text("{}")
    lines = tmp_path / "lines.jsonl"
    lines.write_text("{}\n")
    tenant = ("--org", "A@AdobeOrg", "--sandbox", "prod")
    ids = ("--activity", "xcore:offer-activity:1", "--placement", "xcore:offer-placement:1")
    return [
        ("db", "current"),
        ("db", "downgrade"),
        ("batch", "status", "some-job"),
        ("batch", "run", "--container", "c", "--segment", "s", "--dataset", "d", *ids),
        ("decide", "--container", "c", "--profile", str(profile), *ids),
        ("import", "profiles", str(lines), *tenant),
        ("import", "library", str(lines), *tenant),
    ]


def test_commands_that_only_use_a_database_refuse_a_sqlite_file_that_is_not_there(tmp_path):
    typo = tmp_path / "typo" / "x.db"
    for command in read_only_commands(tmp_path):
        result = invoke(*command, "--db", f"sqlite:///{typo}")
        line = one_line_error(result, 4)
        assert line == (
            f"error: no database at {typo}: run `nextoffer admin bootstrap` or "
            "`nextoffer db upgrade` to create one, or check --db (NEXTOFFER_DB)"
        ), command
        assert not typo.parent.exists(), command  # neither the folder nor the file made


def test_the_default_database_is_refused_too_when_it_is_not_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEXTOFFER_DB", raising=False)
    result = invoke("db", "current")
    assert "error: no database at " in one_line_error(result, 4)
    assert not (tmp_path / ".nextoffer").exists()


def test_db_upgrade_and_admin_bootstrap_create_a_sqlite_file_that_is_not_there(tmp_path):
    upgraded = tmp_path / "new" / "u.db"
    result = invoke("db", "upgrade", "--db", f"sqlite:///{upgraded}")
    assert result.exit_code == 0, result.output
    assert upgraded.is_file()
    assert "status:  up to date" in invoke("db", "current", "--db", f"sqlite:///{upgraded}").stdout
    made = tmp_path / "other" / "b.db"
    assert invoke(*BOOTSTRAP, "--db", f"sqlite:///{made}").exit_code == 0
    assert made.is_file()


def test_the_db_help_says_which_commands_create_a_missing_sqlite_file():
    def said(*command: str) -> str:
        return " ".join(invoke(*command, "--help").stdout.split())

    assert "a SQLite file that does not exist is created" in said("db", "upgrade")
    assert "a SQLite file that does not exist is created" in said("admin", "bootstrap")
    assert "a SQLite file that does not exist is created" in said("serve")
    for command in (("db", "current"), ("decide",), ("batch", "status"), ("import", "library")):
        assert "a SQLite file must exist" in said(*command), command


def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert invoke("db", "upgrade", "--db", url).exit_code == 0
    return url


def revision_of(url: str) -> str:
    return invoke("db", "current", "--db", url).stdout.splitlines()[0].split()[-1]


@pytest.mark.parametrize(
    ("action", "target", "alembic_says"),
    [
        ("upgrade", "nosuchrev", "Can't locate revision identified by 'nosuchrev'"),
        ("downgrade", "nosuchrev", "Can't locate revision identified by 'nosuchrev'"),
        ("downgrade", "+1", "Relative revision +1 didn't produce 1 migrations"),
        ("upgrade", "-1", "Relative revision -1 didn't produce 1 migrations"),
    ],
)
def test_a_revision_alembic_cannot_reach_is_refused_listing_the_revisions(
    tmp_path, action, target, alembic_says
):
    from nextoffer.storage import migrations

    url = migrated(tmp_path)
    head = revision_of(url)
    line = one_line_error(invoke("db", action, "--to", target, "--db", url), 2)
    assert line.startswith(f"error: cannot {action} to {target!r}: {alembic_says}; ")
    assert f"the database is at {head}; " in line
    assert f"the revisions, oldest first: {', '.join(migrations.revisions())}, or " in line
    assert revision_of(url) == head  # nothing moved


def test_downgrading_an_empty_database_says_there_is_no_revision(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    line = one_line_error(invoke("db", "downgrade", "--db", f"sqlite:///{empty}"), 2)
    assert line == "error: the database has no revision to downgrade from (empty)"


def test_downgrade_to_base_without_a_terminal_is_refused_unless_yes(tmp_path):
    url = migrated(tmp_path)
    head = revision_of(url)
    line = one_line_error(invoke("db", "downgrade", "--to", "base", "--db", url, input="y\n"), 2)
    assert line == (
        f"error: --to base drops every table of {url} with all its data; "
        "give --yes to do it (there is no terminal to ask on)"
    )
    assert revision_of(url) == head
    result = invoke("db", "downgrade", "--to", "base", "--yes", "--db", url)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"downgraded: {head} -> -\n"


def test_downgrade_to_base_asks_on_a_terminal_and_a_no_keeps_everything(tmp_path):
    import os
    import pty
    import subprocess
    import sys

    url = migrated(tmp_path)
    head = revision_of(url)
    exe = Path(sys.executable).with_name("nextoffer")

    def answered(answer: bytes) -> tuple[int, str]:
        main_fd, terminal = pty.openpty()
        process = subprocess.Popen(
            [str(exe), "db", "downgrade", "--to", "base", "--db", url],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
        )
        os.close(terminal)
        os.write(main_fd, answer)
        code = process.wait(timeout=60)
        seen = b""
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
        os.close(main_fd)
        return code, seen.decode()

    code, seen = answered(b"n\n")
    assert f"--to base drops every table of {url} with all its data. Go on? [y/N]" in seen
    assert code == 1 and "Aborted" in seen
    assert revision_of(url) == head
    code, seen = answered(b"y\n")
    assert code == 0, seen
    assert f"downgraded: {head} -> -" in seen


def test_db_backup_copies_a_database_while_it_is_written_and_checks_the_copy(tmp_path):
    import sqlite3
    import threading

    from nextoffer.storage.sqlite_path import SqlitePath
    from nextoffer.storage.store import Store
    from support.decision_path_contract import outcome, record

    url = f"sqlite:///{tmp_path / 'live.db'}"
    store = Store.open(url)
    path = SqlitePath(store)
    for _ in range(200):
        outcome(path, record())
    stop = threading.Event()
    written_meanwhile = []

    def keep_writing() -> None:  # a server's records, going on through the backup
        while not stop.is_set():
            outcome(path, record())
            written_meanwhile.append(1)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        result = invoke("db", "backup", "--db", url, str(tmp_path / "copy.db"))
    finally:
        stop.set()
        writer.join()
        path.close()
        store.close()
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"backed up: {tmp_path / 'live.db'} -> {tmp_path / 'copy.db'}")
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    copied = copy.execute("SELECT count(*) FROM decision_events").fetchone()[0]
    copy.close()
    assert 200 <= copied <= 200 + len(written_meanwhile)
    assert sorted(p.name for p in tmp_path.iterdir() if "copy" in p.name) == ["copy.db"]


def test_db_backup_never_overwrites_a_file_and_sends_postgresql_to_pg_dump(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    assert invoke(*BOOTSTRAP, "--db", url).exit_code == 0
    taken = tmp_path / "taken.db"
    taken.write_text("keep me")
    line = one_line_error(invoke("db", "backup", "--db", url, str(taken)), 2)
    assert line == f"error: {taken} exists: give a new file (a backup never overwrites one)"
    assert taken.read_text() == "keep me"
    line = one_line_error(
        invoke("db", "backup", "--db", "postgresql://u@127.0.0.1:1/x", str(tmp_path / "b")), 2
    )
    assert line == (
        "error: db backup copies a SQLite database; back PostgreSQL up with pg_dump "
        '(docs/deploy.md, "Backups")'
    )


def _small_database(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    assert invoke(*BOOTSTRAP, "--db", url).exit_code == 0
    return tmp_path / "live.db"


def test_db_backup_never_overwrites_a_file_made_while_it_copies(tmp_path):
    """Two backups to one name at once (a cron job and a hand's): the one that ends second
    is refused, not renamed over the first's copy (it was checked only before the copy)."""
    from nextoffer.errors import BadRequest
    from nextoffer.storage.backup import backup_sqlite

    source, dest = _small_database(tmp_path), tmp_path / "copy.db"

    def another_backup_ends(done: int, total: int) -> None:
        if not dest.exists():
            dest.write_text("the other backup's copy")

    with pytest.raises(BadRequest, match="exists: give a new file"):
        backup_sqlite(source, dest, on_progress=another_backup_ends)
    assert dest.read_text() == "the other backup's copy"
    assert sorted(p.name for p in tmp_path.iterdir() if "copy" in p.name) == ["copy.db"]


def test_db_backups_to_one_file_at_once_leave_one_whole_copy(tmp_path):
    """Each backup writes a partial file of its own: with one shared name, the first to end
    renamed it, the second checked an empty database in its place (quick_check: ok) and
    renamed that over the copy, a 0-byte backup reported as checked."""
    import sqlite3

    from nextoffer.storage.backup import backup_sqlite

    source, dest = _small_database(tmp_path), tmp_path / "copy.db"
    other = tmp_path / "copy.db.partial"  # another backup's copy, under way
    other.write_bytes(b"another backup writes here")
    assert backup_sqlite(source, dest) == source.stat().st_size
    assert other.read_bytes() == b"another backup writes here"
    copy = sqlite3.connect(dest)
    assert copy.execute("SELECT count(*) FROM signing_keys").fetchone()[0] == 1
    copy.close()


def test_db_backup_into_a_folder_it_cannot_write_names_the_folder(tmp_path):
    """/proc refuses new files even to root: the error named the source database
    ("the backup of live.db failed: unable to open database file")."""
    source = _small_database(tmp_path)
    url = f"sqlite:///{source}"
    line = one_line_error(invoke("db", "backup", "--db", url, "/proc/nextoffer-copy.db"), 2)
    assert line.startswith("error: cannot write the backup in /proc: "), line
    assert str(source) not in line


def test_db_prune_says_which_events_it_keeps_for_ever(tmp_path, monkeypatch):
    # 0 days reads as "keep none" and means for ever: the command says so, and its help.
    monkeypatch.delenv("NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS", raising=False)
    monkeypatch.setenv("NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS", "30")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert invoke("db", "upgrade", "--db", url).exit_code == 0
    result = invoke("db", "prune", "--db", url, "--decision-events-days", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("deleted: 0 decision events")
    assert result.stderr.strip().splitlines()[-1] == (
        "note: decision events are kept for ever (no retention given or set; 0 days is for ever)"
    )
    monkeypatch.setenv("NEXTOFFER_RETAIN_DECISION_EVENTS_DAYS", "90")
    both = invoke("db", "prune", "--db", url, "--experience-events-days", "0")
    assert "note: experience events are kept for ever" in both.stderr
    assert "decision events are kept" not in both.stderr
    assert "days, 0: for ever" in " ".join(invoke("db", "prune", "--help").stdout.split())

"""``nextoffer db copy``: a SQLite deployment moved to PostgreSQL (and back) keeps every
row, and the service goes on where it stood: tokens accepted, caps at their counts, the
search index built, new events numbered after the copied ones."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, insert, inspect, make_url, select, text, update
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.cli import main
from nextoffer.settings import Settings
from nextoffer.storage import copy as copying
from nextoffer.storage import migrations
from nextoffer.storage import tables as t
from nextoffer.storage.database import open_engine
from support import schema
from support.api import Tenant, capped_library, make_tenant
from support.api import first_option as decide
from support.backends import fresh_database

OFFER = schema("personalized-offer")


def found_by_name(tenant: Tenant, words: str) -> list[str]:
    """The names of the offers a full-text search (``q``) finds: answered from the search
    index."""
    response = tenant.client.get(
        f"/data/core/xcore/{tenant.container}/queries/core/search",
        params={"schema": OFFER, "q": words},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    return sorted(r["_instance"]["xdm:name"] for r in response.json()["_embedded"]["results"])


def every_row(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Each copied table's rows, in one order whatever the database."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
                for table in copying.copied_tables()
            }
    finally:
        engine.dispose()


def with_a_tenant(url: str) -> None:
    """The database at ``url`` made by the app, with one tenant bootstrapped."""
    with TestClient(create_app(Settings(db_url=url, freeze_heap=False))) as client:
        make_tenant(client, url, "ACME@AdobeOrg", "prod")


def writing_during_copies(
    monkeypatch: pytest.MonkeyPatch, writes: Callable[[Engine], None]
) -> None:
    """``db copy`` from now on, with ``writes`` made to its source once the copy has
    begun (its snapshot taken), as a server or a batch job would."""
    real = copying.copy_database

    def beside(src: Engine, dst: Engine, **hooks: Any) -> copying.Copied:
        shown = hooks.pop("on_table")

        def on_table(name: str) -> None:
            shown(name)
            if name == "batch_jobs":
                writes(src)

        return real(src, dst, on_table=on_table, **hooks)

    monkeypatch.setattr("nextoffer.cli.db.copy_database", beside)


def copy(source: str, target: str) -> Any:
    return CliRunner().invoke(main, ["db", "copy", "--db", source, "--to", target])


@pytest.fixture
def postgres() -> Iterator[str]:
    with fresh_database(migrated=False) as url:
        yield url


def test_a_sqlite_deployment_moves_to_postgresql_and_back(tmp_path: Path, postgres: str) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with TestClient(create_app(Settings(db_url=source, freeze_heap=False))) as client:
        tenant = make_tenant(client, source, "ACME@AdobeOrg", "prod")
        ids = capped_library(
            lambda type_name, body: str(tenant.create(type_name, body)["@id"]),
            {"xdm:globalCap": 2},
        )
        assert [decide(tenant, ids, n) for n in range(3)] == [
            ids["capped"],
            ids["capped"],
            ids["other"],
        ]
        assert found_by_name(tenant, "capped") == ["capped"]
    before = every_row(source)
    assert len(before["decision_events"]) == 3 and before["cap_counters"]

    moved = copy(source, postgres)
    assert moved.exit_code == 0, moved.output
    assert f"{sum(map(len, before.values())):,} rows" in moved.stdout
    assert every_row(postgres) == before  # every row, every value

    # The service on PostgreSQL: the same credentials, the cap still reached (not counted
    # from zero), the search index built, and a new decision event numbered after the
    # copied ones (the identity's sequence moved past them).
    with TestClient(create_app(Settings(db_url=postgres, freeze_heap=False))) as client:
        tenant.client = client
        assert found_by_name(tenant, "capped") == ["capped"]
        assert [decide(tenant, ids, n) for n in range(3, 5)] == [ids["other"]] * 2
    after = every_row(postgres)
    assert len(after["decision_events"]) == 5

    # And back into a new SQLite file: the same rows again.
    back = f"sqlite:///{tmp_path / 'back.db'}"
    returned = copy(postgres, back)
    assert returned.exit_code == 0, returned.output
    assert every_row(back) == after


def test_a_failed_copy_leaves_the_target_empty_and_names_the_table(
    tmp_path: Path, postgres: str
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with_a_tenant(source)
    # A value SQLite keeps and PostgreSQL refuses (a NUL in text), in a table copied after
    # others were written.
    engine = open_engine(source)
    try:
        with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
            kept = conn.execute(select(t.sandboxes.c.created)).scalar_one()
            conn.execute(update(t.sandboxes).values(created=kept + "\x00"))
        result = copy(source, postgres)
        assert result.exit_code == 2, result.output
        assert "copying sandboxes: a value the database cannot hold" in result.output
        rows = every_row(postgres)
        assert not any(rows[name] for name in rows if name not in copying.SEEDED)

        with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
            conn.execute(update(t.sandboxes).values(created=kept))
    finally:
        engine.dispose()
    again = copy(source, postgres)  # still empty: the copy can be made again
    assert again.exit_code == 0, again.output
    assert every_row(postgres) == every_row(source)


def test_what_the_source_writes_during_a_copy_is_not_in_it_and_is_named(
    tmp_path: Path, db_url: str
) -> None:
    with_a_tenant(db_url)
    source = open_engine(db_url)
    target = open_engine(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        migrations.upgrade(target)

        def server_writes(name: str) -> None:
            if name == "batch_jobs":  # the copy has begun: its snapshot is taken
                write(source, "BETA@AdobeOrg")

        copied = copying.copy_database(source, target, on_table=server_writes)
        assert copied.rows["orgs"] == 1
        with target.connect() as conn:
            assert conn.execute(select(t.orgs.c.org_id)).scalars().all() == ["ACME@AdobeOrg"]
        assert copying.changed_since(source, copied) == {"orgs": (1, 2)}
    finally:
        source.dispose()
        target.dispose()


def write(engine: Engine, org: str) -> None:
    with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
        conn.execute(insert(t.orgs).values(org_id=org, created="2026-12-07T00:00:00.000Z"))


def test_refusals(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    held = f"sqlite:///{tmp_path / 'held.db'}"
    for url in (source, held):
        with_a_tenant(url)
    kept = every_row(held)

    not_empty = copy(source, held)
    assert not_empty.exit_code != 0
    assert "the target database is not empty (rows in " in not_empty.output
    assert every_row(held) == kept

    onto_itself = copy(source, source.replace("source.db", "./source.db"))
    assert onto_itself.exit_code != 0
    assert "the source and the target are one database" in onto_itself.output

    missing = copy(f"sqlite:///{tmp_path / 'nothing.db'}", held)
    assert missing.exit_code != 0 and "no database at" in missing.output

    older = f"sqlite:///{tmp_path / 'older.db'}"
    assert CliRunner().invoke(main, ["db", "upgrade", "--db", older, "--to", "+1"]).exit_code == 0
    behind = copy(older, f"sqlite:///{tmp_path / 'new.db'}")
    assert behind.exit_code != 0
    assert "run `nextoffer db upgrade` on it first" in behind.output
    into_older = copy(source, older)
    assert into_older.exit_code != 0
    assert "the target database is at revision" in into_older.output


def test_the_command_names_what_the_source_wrote_during_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with_a_tenant(source)
    writing_during_copies(monkeypatch, lambda source: write(source, "BETA@AdobeOrg"))
    result = copy(source, f"sqlite:///{tmp_path / 'target.db'}")
    assert result.exit_code == 5, result.output  # `db copy && start the nodes` stops
    assert "copied: " in result.stdout
    assert "warning: the source changed while it was copied (orgs 1 -> 2 rows)" in result.stderr
    assert "warning" not in result.stdout


def test_the_remedies_name_the_target_not_the_default_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run without --db, `downgrade --to base` drops the default database: the copy's
    # source, when the source is the default. Followed as written, the refusal's remedy
    # empties the target and keeps the source.
    source = f"sqlite:///{tmp_path / 'source.db'}"
    held = f"sqlite:///{tmp_path / 'held.db'}"
    for url in (source, held):
        with_a_tenant(url)
    kept = every_row(source)
    refused = copy(source, held)
    assert refused.exit_code == 5, refused.output
    remedy = re.search(r"`nextoffer (db downgrade [^`]*)`", refused.stderr)
    assert remedy is not None and remedy.group(1) == f"db downgrade --to base --db '{held}'"
    emptied = CliRunner().invoke(main, [*shlex.split(remedy.group(1)), "--yes"])
    assert emptied.exit_code == 0, emptied.output
    assert every_row(source) == kept
    again = copy(source, held)
    assert again.exit_code == 0, again.output
    assert every_row(held) == kept

    # The warning after a copy the source changed during names the target too, and a
    # password only as stars.
    writing_during_copies(monkeypatch, lambda source: write(source, "BETA@AdobeOrg"))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    warned = copy(source, target)
    assert f"empty the target (`nextoffer db downgrade --to base --db '{target}'`)" in (
        warned.stderr
    )
    assert copying.emptying("postgresql://ops:secret@db.internal/nextoffer") == (
        "`nextoffer db downgrade --to base --db 'postgresql://ops:***@db.internal/nextoffer'`"
        " (its password in place of ***)"
    )


def test_a_target_holding_another_applications_tables_is_refused(
    tmp_path: Path, postgres: str
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with_a_tenant(source)
    engine = open_engine(postgres)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("CREATE TABLE invoices (id integer PRIMARY KEY)"))
        result = copy(source, postgres)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == (
            "error: the target database holds tables that are not nextoffer's (invoices): copy"
            ' into a new database (docs/deploy.md, "Running it", creates one)'
        )
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == ["invoices"]  # none of ours added
    finally:
        engine.dispose()


def test_a_database_that_cannot_be_opened_is_named_by_its_option(
    tmp_path: Path, postgres: str
) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with_a_tenant(source)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, " * 100)
    into_notes = copy(source, f"sqlite:///{notes}")
    assert into_notes.exit_code == 6, into_notes.output
    assert into_notes.stderr.strip() == (
        f"error: --to sqlite:///{notes}: the database is unavailable: file is not a database"
    )
    from_notes = copy(f"sqlite:///{notes}", f"sqlite:///{tmp_path / 'new.db'}")
    assert from_notes.stderr.strip() == (
        f"error: --db sqlite:///{notes}: the database is unavailable: file is not a database"
    )
    missing = make_url(postgres).set(database="no_such_database")
    nowhere = copy(source, missing.render_as_string(hide_password=False))
    assert nowhere.exit_code == 3, nowhere.output  # refused: trying again will not help
    line = nowhere.stderr.strip()
    assert line.startswith(
        f"error: --to {missing.render_as_string(hide_password=True)}: "
        "the database refused the connection ("
    )
    assert 'database "no_such_database" does not exist' in line


def bump_counters(engine: Engine) -> None:
    """What a batch job writes while it runs: counts of counters that exist (no new row)."""
    with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
        conn.execute(update(t.cap_counters).values(count=t.cap_counters.c.count + 5))


def add_counter(engine: Engine, offer: str = "o", count: int = 3) -> None:
    """A cap counter of the tenant's container, as a decision that counts writes it."""
    with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
        container = conn.execute(select(t.containers.c.container_id)).scalars().first()
        conn.execute(
            insert(t.cap_counters).values(
                counter_key=f"{container}|{offer}|globalCap||0|",
                container_id=container,
                count=count,
            )
        )


def counts_of_counters(url: str) -> dict[str, int]:
    return {row[0].split("|")[1]: row[2] for row in every_row(url)["cap_counters"]}


@pytest.fixture
def source_with_a_counter(postgres: str) -> str:
    """A PostgreSQL deployment's database: a tenant, and one cap counter at 3."""
    with_a_tenant(postgres)
    engine = open_engine(postgres)
    try:
        add_counter(engine)
    finally:
        engine.dispose()
    return postgres


def test_a_write_that_keeps_every_row_count_is_named_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch job running during the copy counts its propositions in counters that exist:
    # no table's row count moves, and the copy lacks its counts (caps then exceeded on
    # the target). SQLite's data_version sees any commit of another connection.
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with_a_tenant(source)
    engine = open_engine(source)
    try:
        add_counter(engine)
        quiet = open_engine(f"sqlite:///{tmp_path / 'quiet.db'}")
        migrations.upgrade(quiet)
        assert copying.copy_database(engine, quiet).written is False  # its own reads: none
        quiet.dispose()

        def batch_job(name: str) -> None:
            if name == "batch_jobs":  # the copy has begun: its snapshot is taken
                bump_counters(engine)

        target = open_engine(f"sqlite:///{tmp_path / 'target.db'}")
        migrations.upgrade(target)
        copied = copying.copy_database(engine, target, on_table=batch_job)
        target.dispose()
        assert copied.written is True
        assert copying.changed_since(engine, copied) == {}  # the row counts alone: unseen
    finally:
        engine.dispose()

    writing_during_copies(monkeypatch, bump_counters)
    result = copy(source, f"sqlite:///{tmp_path / 'by-the-command.db'}")
    assert result.exit_code == 5, result.output
    assert (
        "warning: the source changed while it was copied (rows changed in place, e.g. cap"
        " counters a batch job counted): those writes are not in the copy." in result.stderr
    )


def test_a_counter_counted_during_a_copy_from_postgresql_is_named(
    tmp_path: Path, source_with_a_counter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch job of the SQLite test above, on a PostgreSQL source: no row count moves,
    # and the table it wrote is named.
    writing_during_copies(monkeypatch, bump_counters)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = copy(source_with_a_counter, target)
    assert result.exit_code == 5, result.output
    assert (
        "warning: the source changed while it was copied (cap_counters changed in place):"
        " those writes are not in the copy." in result.stderr
    )
    assert counts_of_counters(target) == {"o": 3}  # the count as the copy began
    assert counts_of_counters(source_with_a_counter) == {"o": 8}


def test_only_what_a_postgresql_source_commits_during_a_copy_is_named(
    tmp_path: Path, source_with_a_counter: str
) -> None:
    # What writes no row version leaves the source unchanged: a write rolled back, a row
    # locked (its xmax set), every row frozen by VACUUM (flags set, xmin kept). A
    # committed update is named even when it writes the values the row had.
    engine = open_engine(source_with_a_counter)

    def copied_while(during: Callable[[], None]) -> copying.Copied:
        target = open_engine(f"sqlite:///{tmp_path / f'{len(list(tmp_path.iterdir()))}.db'}")
        try:
            migrations.upgrade(target)
            return copying.copy_database(
                engine, target, on_table=lambda name: during() if name == "batch_jobs" else None
            )
        finally:
            target.dispose()

    def no_commit() -> None:
        with engine.connect().execution_options(nextoffer_write=True) as conn:
            with conn.begin() as rolled_back:
                conn.execute(update(t.cap_counters).values(count=t.cap_counters.c.count + 5))
                rolled_back.rollback()
            with conn.begin():
                conn.execute(select(t.cap_counters).with_for_update()).all()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (FREEZE)"))

    def same_values() -> None:
        with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
            conn.execute(update(t.cap_counters).values(count=t.cap_counters.c.count))

    try:
        assert copying.changed_since(engine, copied_while(no_commit)) == {}
        assert copying.changed_since(engine, copied_while(same_values)) == {"cap_counters": (1, 1)}
    finally:
        engine.dispose()
    passes = copy(source_with_a_counter, f"sqlite:///{tmp_path / 'by-the-command.db'}")
    assert passes.exit_code == 0, passes.output
    assert "warning" not in passes.stderr


def test_a_counter_replaced_during_a_copy_from_postgresql_is_named(
    tmp_path: Path, source_with_a_counter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One counter deleted and another inserted: every row count as it was.
    def replace(engine: Engine) -> None:
        with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
            conn.execute(delete(t.cap_counters))
        add_counter(engine, offer="p", count=1)

    writing_during_copies(monkeypatch, replace)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = copy(source_with_a_counter, target)
    assert result.exit_code == 5, result.output
    assert "(cap_counters changed in place)" in result.stderr
    assert counts_of_counters(target) == {"o": 3}
    assert counts_of_counters(source_with_a_counter) == {"p": 1}


def test_a_write_begun_before_a_copy_from_postgresql_and_committed_during_it_is_named(
    tmp_path: Path, source_with_a_counter: str
) -> None:
    # A transaction open when the copy's snapshot is taken, its update made under a
    # savepoint (a subtransaction, which a snapshot does not list; a later transaction
    # committed before the snapshot, so its xid is below the snapshot's xmax), committed
    # meanwhile.
    engine = open_engine(source_with_a_counter)
    target = open_engine(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        migrations.upgrade(target)
        with engine.connect().execution_options(nextoffer_write=True) as open_before:
            open_before.begin()
            with open_before.begin_nested():
                open_before.execute(update(t.cap_counters).values(count=t.cap_counters.c.count + 5))
            write(engine, "BETA@AdobeOrg")

            def commits(name: str) -> None:
                if name == "batch_jobs":
                    open_before.commit()

            copied = copying.copy_database(engine, target, on_table=commits)
        assert copied.rows["cap_counters"] == 1
        assert copying.changed_since(engine, copied) == {"cap_counters": (1, 1)}
    finally:
        engine.dispose()
        target.dispose()

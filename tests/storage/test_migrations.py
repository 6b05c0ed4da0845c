"""Migrations on both dialects: from empty, from the previous revision, one step down,
and what ``Store.open`` does with a database that is newer, older or made before them."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from nextoffer.cli import main
from nextoffer.errors import DatabaseRefused, Unavailable
from nextoffer.repository.query import parse_query
from nextoffer.storage import migrations, search, search_index
from nextoffer.storage import tables as t
from nextoffer.storage.database import open_engine
from nextoffer.storage.search_postgres import dialect_for
from nextoffer.storage.store import Store
from support.backends import fresh_database, postgres_url, tables_metadata
from support.store_contract import TAG, container, instance

PREVIOUS, HEAD = migrations.revisions()[-2:]
#: The revision that reshaped the search index, and the one before it.
SEARCH_RESHAPED, BEFORE_SEARCH_RESHAPED = "0007", "0006"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    with fresh_database(migrated=False) as url:
        yield url


@pytest.fixture
def engine(empty_url: str) -> Iterator[Engine]:
    opened = open_engine(empty_url)
    yield opened
    opened.dispose()


#: Indexes on expressions: reflection cannot read them back (SQLAlchemy warns and skips),
#: so they are checked by name (:func:`_index_names`) instead of compared.
EXPRESSION_INDEXES = frozenset({"ix_instances_created_ms", "ix_instances_modified_ms"})


#: PostgreSQL's only (an expression: checked by name there, as the ones above).
POSTGRES_EXPRESSION_INDEXES = frozenset(
    {"ix_search_values_text_prefix", "ix_instances_name_prefix"}
)

#: Indexes one dialect has (``ddl_if``): the metadata lists them for every dialect.
POSTGRES_ONLY_INDEXES = frozenset({"ix_search_values_words", "ix_search_docs_words"})
SQLITE_ONLY_INDEXES = frozenset({"ix_search_values_text", "ix_instances_name"})


def _filter(dialect: str) -> Callable[..., bool]:
    def ours(_obj: object, name: str | None, type_: str, reflected: bool, _o: object) -> bool:
        if type_ == "index" and name in EXPRESSION_INDEXES | POSTGRES_EXPRESSION_INDEXES:
            return False
        if type_ == "index" and dialect != "postgresql" and name in POSTGRES_ONLY_INDEXES:
            return False
        if type_ == "index" and dialect == "postgresql" and name in SQLITE_ONLY_INDEXES:
            return False
        # SQLite's full-text table and its shadow tables are made by raw DDL, not metadata.
        return not (type_ == "table" and reflected and (name or "").startswith("search_fts"))

    return ours


def _schema_differences(engine: Engine) -> list[object]:
    """What ``tables.py`` says the schema is, against what the migrations made."""
    with engine.connect() as conn, warnings.catch_warnings():
        # SQLAlchemy and Alembic both say they cannot compare these (on SQLite): we know.
        warnings.filterwarnings("ignore", ".*expression-based index")
        options = {"include_object": _filter(engine.dialect.name)}
        context = MigrationContext.configure(conn, opts=options)
        return list(compare_metadata(context, tables_metadata()))


def _index_names(engine: Engine) -> set[str]:
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if engine.dialect.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
    )
    with engine.connect() as conn:
        return set(conn.execute(text(query)).scalars())


def test_an_empty_database_is_upgraded_to_the_schema_tables_py_describes(engine: Engine) -> None:
    assert migrations.read_state(engine).empty
    migrations.upgrade(engine)
    assert migrations.read_state(engine).current == HEAD
    assert _schema_differences(engine) == []
    names = _index_names(engine)
    assert names >= EXPRESSION_INDEXES
    if engine.dialect.name == "postgresql":
        assert names >= POSTGRES_EXPRESSION_INDEXES and not names & SQLITE_ONLY_INDEXES
    else:
        assert names >= SQLITE_ONLY_INDEXES and not names & POSTGRES_EXPRESSION_INDEXES


def test_upgrade_from_the_previous_revision_keeps_the_data(empty_url: str, engine: Engine) -> None:
    migrations.upgrade(engine, PREVIOUS)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO orgs (org_id, created) VALUES ('O@AdobeOrg', 't')"))
    migrations.upgrade(engine)
    assert migrations.read_state(engine).current == HEAD
    assert _schema_differences(engine) == []
    store = Store.open(empty_url)
    try:
        container(store)  # the org row survived: ensure_org leaves it, the container needs it
        with store.session(write=True) as session:
            session.insert_instance(instance("c-1", 1), [])
        with store.session() as session:
            assert session.count_instances("c-1", TAG) == 1
            assert session.conn.execute(text("SELECT count(*) FROM orgs")).scalar() == 1
    finally:
        store.close()


def test_downgrade_one_step_and_back(engine: Engine) -> None:
    migrations.upgrade(engine)
    migrations.downgrade(engine, "-1")
    assert migrations.read_state(engine).current == PREVIOUS
    migrations.upgrade(engine)
    assert migrations.read_state(engine).current == HEAD


def test_each_revision_downgrades_what_it_made(engine: Engine) -> None:
    migrations.upgrade(engine)
    migrations.downgrade(engine, "0005")
    assert "batch_jobs" not in inspect(engine).get_table_names()
    migrations.downgrade(engine, "0004")
    assert "datastreams" not in inspect(engine).get_table_names()
    migrations.downgrade(engine, "0003")
    assert "instance_revisions" not in inspect(engine).get_table_names()
    migrations.downgrade(engine, "0002")
    assert not {"ranking_state", "ranking_stats", "ranking_daily"} & set(
        inspect(engine).get_table_names()
    )
    migrations.downgrade(engine, "0001")
    assert "vwords" not in {c["name"] for c in inspect(engine).get_columns("search_values")}
    migrations.upgrade(engine)
    assert "datastreams" in inspect(engine).get_table_names()
    assert migrations.read_state(engine).current == HEAD


def test_downgrade_to_base_leaves_no_table_of_ours(engine: Engine) -> None:
    migrations.upgrade(engine)
    migrations.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}


def test_the_head_a_start_compares_with_is_alembics_head() -> None:
    # A new revision must bump migrations.HEAD, or every start would load Alembic.
    assert migrations.HEAD == migrations.head() == HEAD


def test_a_start_at_head_loads_no_alembic_and_an_older_one_is_still_upgraded(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'head.db'}"
    engine = open_engine(url)
    try:
        migrations.upgrade(engine, PREVIOUS)
    finally:
        engine.dispose()
    # Each in a fresh interpreter: whether Alembic was imported is a process's state.
    opened = """
import sys
from nextoffer.storage.store import Store
Store.open(sys.argv[1]).close()
print(sorted(m for m in sys.modules if m.split(".")[0] == "alembic")[:1])
"""
    first = subprocess.run([sys.executable, "-c", opened, url], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "['alembic']"  # older: upgraded, with Alembic
    again = subprocess.run([sys.executable, "-c", opened, url], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "[]"  # at head: one query, no Alembic


def test_a_schema_newer_than_the_code_is_refused(empty_url: str, engine: Engine) -> None:
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(Unavailable, match=r"9999.*upgrade nextoffer"):
        Store.open(empty_url)


def test_an_older_schema_is_upgraded_on_sqlite_and_refused_on_postgresql(
    empty_url: str, engine: Engine
) -> None:
    migrations.upgrade(engine, PREVIOUS)
    if engine.dialect.name == "sqlite":
        Store.open(empty_url).close()
        assert migrations.read_state(engine).current == HEAD
    else:
        with pytest.raises(Unavailable, match="nextoffer db upgrade"):
            Store.open(empty_url)
        assert migrations.read_state(engine).current == PREVIOUS


def test_the_db_commands_upgrade_report_and_downgrade(empty_url: str) -> None:
    if empty_url.startswith("sqlite:///"):  # an empty file: `db current` refuses a missing one
        Path(empty_url.removeprefix("sqlite:///")).touch()
    runner = CliRunner()
    result = runner.invoke(main, ["db", "current", "--db", empty_url])
    assert result.exit_code == 0 and "status:  empty" in result.output, result.output
    result = runner.invoke(main, ["db", "upgrade", "--db", empty_url])
    assert result.exit_code == 0 and f"-> {HEAD}" in result.output, result.output
    result = runner.invoke(main, ["db", "current", "--db", empty_url])
    assert f"current: {HEAD}" in result.output and "up to date" in result.output
    result = runner.invoke(main, ["db", "downgrade", "--db", empty_url])
    assert result.exit_code == 0 and f"{HEAD} -> {PREVIOUS}" in result.output, result.output
    result = runner.invoke(main, ["db", "current", "--db", empty_url])
    assert "behind" in result.output


def test_db_commands_on_an_unreachable_database_exit_with_unavailable() -> None:
    result = CliRunner().invoke(
        main, ["db", "current", "--db", "postgresql://nobody@127.0.0.1:1/none"]
    )
    assert result.exit_code == Unavailable.exit_code
    assert "unavailable" in result.output


def test_db_commands_on_a_database_that_does_not_exist_exit_refused() -> None:
    missing = make_url(postgres_url()).set(database="no_such_database")
    url = missing.render_as_string(hide_password=False)
    result = CliRunner().invoke(main, ["db", "current", "--db", url])
    assert result.exit_code == DatabaseRefused.exit_code == 3, result.output
    assert result.output.startswith("error: the database refused the connection (")
    assert 'database "no_such_database" does not exist' in result.output
    assert "Traceback" not in result.output


def test_a_sqlite_file_made_before_migrations_is_adopted(tmp_path: Path) -> None:
    # What nextoffer 0.1's Store.migrate left: create_all of the 0.1 tables and
    # schema_info = 1, no alembic_version. The 0.1 tables are revision 0001's.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = open_engine(url)
    try:
        migrations.upgrade(engine, migrations.revisions()[0])
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))
            conn.execute(text("INSERT INTO orgs (org_id, created) VALUES ('O@AdobeOrg', 't')"))
        assert migrations.read_state(engine).legacy
        Store.open(url).close()
        assert migrations.read_state(engine).current == HEAD
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM schema_info")).scalar() == 2
            assert conn.execute(text("SELECT count(*) FROM orgs")).scalar() == 1
    finally:
        engine.dispose()


def _search(engine: Engine, cid: str, q: str) -> list[str]:
    search.install(engine)
    search_index.ensure_current(engine)
    with engine.connect() as conn:
        page = search.find(
            conn, cid, parse_query([("schema", TAG), ("q", q)]), dialect=dialect_for(conn)
        )
    return [record.instance_id for record in page.records]


def _filtered(engine: Engine, cid: str, prop: str) -> list[str]:
    search_index.ensure_current(engine)
    with engine.connect() as conn:
        query = parse_query([("schema", TAG), ("property", prop)])
        page = search.find(conn, cid, query, dialect=dialect_for(conn))
    return [record.instance_id for record in page.records]


def test_the_text_prefix_revision_fills_the_prefix_of_strings_indexed_before_it(
    engine: Engine,
) -> None:
    # 0018: PostgreSQL compares strings through vkey. A database upgraded with strings
    # already indexed must find them as a new one does, without a reindex (SQLite leaves
    # vkey empty and compares the strings whole).
    migrations.upgrade(engine)
    store = Store(engine)
    container(store)
    short, long = "Golden tag", "G" * 250 + " and more"
    with store.session(write=True) as session:
        for n, name in ((1, short), (2, long)):
            body = {"xdm:name": name, "@id": f"xcore:tag:{n}"}
            session.insert_instance(instance("c-1", n, body=body), [])
    assert _filtered(engine, "c-1", f"_instance.xdm:name=={long}") == ["i-2"]  # indexed
    migrations.downgrade(engine, "0017_event_seq_key")
    migrations.upgrade(engine)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version FROM search_state")).scalar()
        unfilled = conn.execute(
            text("SELECT count(*) FROM search_values WHERE vtext IS NOT NULL AND vkey IS NULL")
        ).scalar()
    if engine.dialect.name == "postgresql":
        assert unfilled == 0
    assert _filtered(engine, "c-1", f"_instance.xdm:name=={short}") == ["i-1"]
    assert _filtered(engine, "c-1", f"_instance.xdm:name=={long}") == ["i-2"]
    assert _filtered(engine, "c-1", f"_instance.xdm:name>{long}") == ["i-1"]  # "Go" > "GG"
    with engine.connect() as conn:  # found from the rows the revision filled, not a reindex
        assert conn.execute(text("SELECT version FROM search_state")).scalar() == version


def _tag_stored_at_previous(engine: Engine) -> None:
    """A database at the revision before 0007 holding one tag."""
    migrations.upgrade(engine, BEFORE_SEARCH_RESHAPED)
    store = Store(engine)
    container(store)
    record = instance("c-1", 7, body={"xdm:name": "Golden tag", "@id": "xcore:tag:7"})
    with engine.begin() as conn:
        conn.execute(
            t.instances.insert().values(
                instance_id=record.instance_id,
                container_id="c-1",
                schema_id=TAG,
                at_id=record.at_id,
                name="Golden tag",
                etag=1,
                created=record.audit.created,
                modified=record.audit.modified,
                created_us=1,
                modified_us=1,
                created_by="u",
                modified_by="u",
                created_client="c",
                modified_client="c",
                body='{"xdm:name": "Golden tag", "@id": "xcore:tag:7"}',
            )
        )


def test_the_search_revision_reindexes_what_the_previous_one_stored(engine: Engine) -> None:
    # 0007_search renumbers the index's rows: upgrading a database with instances empties
    # the index and the first search rebuilds it; downgrading does the same the other way.
    _tag_stored_at_previous(engine)
    migrations.upgrade(engine, SEARCH_RESHAPED)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM search_state")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM search_values")).scalar() == 0
    migrations.upgrade(engine)  # the code below writes the index as the newest schema has it
    assert _search(engine, "c-1", "golden") == ["i-7"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM search_state")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM search_docs")).scalar() == 1
    migrations.downgrade(engine, "0006")
    assert "search_docs" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM search_state")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM search_values")).scalar() == 0


def test_db_upgrade_reindexes_the_library_before_it_returns(empty_url: str, engine: Engine) -> None:
    # The operator's step pays for a reshaped index, not the first search a node serves.
    _tag_stored_at_previous(engine)
    result = CliRunner().invoke(main, ["db", "upgrade", "--db", empty_url])
    assert result.exit_code == 0 and f"-> {HEAD}" in result.output, result.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM search_state")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM search_docs")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM search_values")).scalar() > 0


def _triggers(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        return {row.name for row in rows}


def test_fts_writes_revision_drops_the_triggers_and_keeps_the_fts_rows(tmp_path: Path) -> None:
    # 0008_fts_writes: search_index.py writes the FTS5 rows itself (one statement per
    # batch); the triggers that wrote them one row at a time go, the rows they wrote stay
    # and are forgotten correctly when their instance changes.
    engine = open_engine(f"sqlite:///{tmp_path / 'fts.db'}")
    try:
        _tag_stored_at_previous(engine)
        migrations.upgrade(engine, SEARCH_RESHAPED)
        assert _triggers(engine) == {"search_values_fts_insert", "search_values_fts_delete"}
        with engine.begin() as conn:  # indexed as the code of 0007 did: FTS5 by trigger
            conn.execute(text("INSERT INTO search_scopes VALUES (1, 'c-1', :s)"), {"s": TAG})
            conn.execute(text("INSERT INTO search_docs VALUES (1, 1, 'i-7', NULL)"))
            conn.execute(
                text(
                    "INSERT INTO search_values (id, scope, instance_id, path, vtype, vtext) "
                    "VALUES (:id, 1, 'i-7', 'xdm:name', 's', 'Golden tag'), "
                    "(:id + 1, 1, 'i-7', '@id', 's', 'xcore:tag:7')"
                ),
                {"id": 1 << search_index.ROW_BITS},
            )
            conn.execute(text("UPDATE search_state SET version = :v"), {"v": 2})
        assert _search(engine, "c-1", "golden") == ["i-7"]
        migrations.upgrade(engine, "0008_fts_writes")
        assert _triggers(engine) == set()
        assert _search(engine, "c-1", "golden") == ["i-7"]
        migrations.upgrade(engine, "head")  # the code below writes what later revisions add
        store = Store(engine)
        renamed = instance("c-1", 7, body={"xdm:name": "Silver tag", "@id": "xcore:tag:7"}, etag=2)
        with store.session(write=True) as session:
            current = session.get_instance("c-1", "i-7")
            assert current is not None
            assert session.update_instance(renamed, [], expected_etag=current.etag)
        assert _search(engine, "c-1", "golden") == []
        assert _search(engine, "c-1", "silver") == ["i-7"]
        with engine.connect() as conn:  # one FTS5 row per string row: the old ones forgotten
            fts = conn.execute(text("SELECT count(*) FROM search_fts_docsize")).scalar()
            strings = "SELECT count(*) FROM search_values WHERE vtype IN ('s', 'd')"
            assert fts == conn.execute(text(strings)).scalar() == 2
        migrations.downgrade(engine, SEARCH_RESHAPED)
        assert _triggers(engine) == {"search_values_fts_insert", "search_values_fts_delete"}
        assert _search(engine, "c-1", "silver") == ["i-7"]
    finally:
        engine.dispose()


def test_db_upgrade_backfills_the_change_sequence(empty_url: str, engine: Engine) -> None:
    # 0009_change_seq: revisions written before it carry their container's version, so a
    # refresh reading the writes after that version reads none of them, and later writes.
    _tag_stored_at_previous(engine)
    migrations.upgrade(engine, "0007")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO instance_revisions (container_id, instance_id, revision, action,"
                " schema_id, at_id, modified, modified_us, modified_by, modified_client, body)"
                " SELECT container_id, instance_id, etag, 'create', schema_id, at_id, modified,"
                " modified_us, modified_by, modified_client, body FROM instances"
            )
        )
        conn.execute(text("UPDATE containers SET library_version = 5"))
    result = CliRunner().invoke(main, ["db", "upgrade", "--db", empty_url])
    assert result.exit_code == 0 and f"-> {HEAD}" in result.output, result.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT change_seq FROM instance_revisions")).scalar() == 5
    store = Store(engine)
    with store.session() as session:
        assert session.changes_since("c-1", 5) == (5, [])
        assert [row[0] for row in session.changes_since("c-1", 4)[1]] == ["xcore:tag:7"]
        record = session.get_instance("c-1", "i-7")
    assert record is not None
    with store.session(write=True) as session:
        assert session.update_instance(replace(record, etag=2), [], expected_etag=1)
    with store.session() as session:
        assert session.changes_since("c-1", 5) == (
            6,
            [("xcore:tag:7", TAG, "i-7", 2, record.body)],
        )


def _event(conn: Connection, proposition_id: str, created: str) -> None:
    conn.execute(
        text(
            "INSERT INTO decision_events"
            " (proposition_id, container_id, created, created_us, profile_key, body)"
            " VALUES (:p, 'c-1', :c, 1, 'k', '{}')"
        ),
        {"p": proposition_id, "c": created},
    )


def _report(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT day, offer_id, propositions FROM offer_daily")).all()
    return {(day, offer): n for day, offer, n in rows}


def test_the_report_fold_revision_starts_past_the_events_already_counted(engine: Engine) -> None:
    # 0010_report_fold: events stored before it were counted in the report as they were
    # written, so its watermark starts at the last of them; a downgrade counts the events
    # folded by nobody yet (the older code would never count them).
    migrations.upgrade(engine, "0007")
    with engine.begin() as conn:
        _event(conn, "old-1", "2026-03-04T10:00:00Z")
        _event(conn, "old-2", "2026-03-04T11:00:00Z")
        conn.execute(text("INSERT INTO offer_daily VALUES ('c-1', '2026-03-04', 'o-1', 2, 0, 0)"))
    migrations.upgrade(engine)
    with engine.connect() as conn:
        places = conn.execute(text("SELECT seq FROM decision_events ORDER BY seq")).scalars()
        assert list(places) == [1, 2]
        position = conn.execute(text("SELECT position FROM report_folds")).scalar()
        assert position == 2
    with engine.begin() as conn:  # recorded by the new code, not folded yet
        conn.execute(
            text(
                "INSERT INTO decision_events (proposition_id, container_id, created,"
                " created_us, profile_key, body, offers, seq)"
                " VALUES ('new-1', 'c-1', '2026-03-04T12:00:00Z', 1, 'k', '{}',"
                ' \'["o-1", "o-2"]\', 3)'
            )
        )
    migrations.downgrade(engine, "0007")
    assert _report(engine) == {("2026-03-04", "o-1"): 3, ("2026-03-04", "o-2"): 1}
    assert "report_folds" not in inspect(engine).get_table_names()
    assert "seq" not in {c["name"] for c in inspect(engine).get_columns("decision_events")}


#: The tables 0016_clustered_profiles keeps in their key's b-tree on SQLite.
CLUSTERED = ("profiles", "profile_identities")


def _without_rowid(engine: Engine) -> set[str]:
    """The tables of :data:`CLUSTERED` SQLite stores ``WITHOUT ROWID`` (none elsewhere)."""
    if engine.dialect.name != "sqlite":
        return set()
    with engine.connect() as conn:
        made = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all()
    return {
        name for name, sql in made if name in CLUSTERED and sql.rstrip().endswith("WITHOUT ROWID")
    }


def _clustered_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return [
            *conn.execute(text("SELECT * FROM profiles ORDER BY profile_id")).all(),
            *conn.execute(text("SELECT * FROM profile_identities ORDER BY identity")).all(),
        ]


def test_the_clustered_profiles_revision_rebuilds_the_tables_rows_kept(engine: Engine) -> None:
    # 0016_clustered_profiles: on SQLite the two tables become WITHOUT ROWID tables with the
    # same rows and indexes; a downgrade makes them rowid tables again, rows kept.
    migrations.upgrade(engine, "0011_profile_seq")
    with engine.begin() as conn:
        for n in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO profiles VALUES"
                    f" ('p-{n}', 'O@AdobeOrg', 'prod', '{{\"n\": {n}}}', 't', 't')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO profile_identities VALUES"
                    f" ('O@AdobeOrg', 'prod', 'Email', 'u{n}@example.com', 'p-{n}')"
                )
            )
    before = _clustered_rows(engine)
    assert len(before) == 4
    migrations.upgrade(engine, "0016_clustered_profiles")
    assert _clustered_rows(engine) == before
    sqlite = engine.dialect.name == "sqlite"
    assert _without_rowid(engine) == (set(CLUSTERED) if sqlite else set())
    assert {"ix_profiles_tenant", "ix_profile_identities_profile"} <= _index_names(engine)
    migrations.downgrade(engine, "0011_profile_seq")
    assert _clustered_rows(engine) == before
    assert _without_rowid(engine) == set()
    assert {"ix_profiles_tenant", "ix_profile_identities_profile"} <= _index_names(engine)
    migrations.upgrade(engine)
    assert _clustered_rows(engine) == before


def _events(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT seq, proposition_id, offers FROM decision_events ORDER BY seq")
            )
        )


def test_the_event_seq_key_revision_keeps_each_event_in_its_place(engine: Engine) -> None:
    # 0017_event_seq_key: seq becomes the key (on SQLite the rowid itself: the next event
    # is placed after the last one, and seq has no index beside it); the proposition id
    # stays unique. Places and rows survive the upgrade and the downgrade.
    migrations.upgrade(engine, "0016_clustered_profiles")
    with engine.begin() as conn:
        _event(conn, "e-1", "2026-03-04T10:00:00Z")
        _event(conn, "e-2", "2026-03-04T11:00:00Z")
        if engine.dialect.name == "sqlite":  # the writer numbered them itself then
            conn.execute(text("UPDATE decision_events SET seq = 7 WHERE proposition_id = 'e-1'"))
            conn.execute(text("UPDATE decision_events SET seq = 9 WHERE proposition_id = 'e-2'"))
    before = _events(engine)
    migrations.upgrade(engine, "0017_event_seq_key")
    assert _events(engine) == before
    assert "ix_decision_events_seq" not in _index_names(engine)
    with engine.begin() as conn:
        _event(conn, "e-3", "2026-03-04T12:00:00Z")  # no seq given: the next place
    after = _events(engine)
    assert [row[1] for row in after] == ["e-1", "e-2", "e-3"]
    assert after[2][0] > after[1][0]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _event(conn, "e-3", "2026-03-04T13:00:00Z")
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.execute(
                text("SELECT rowid FROM decision_events ORDER BY seq")
            ).scalars().all() == [row[0] for row in after]
    migrations.downgrade(engine, "0016_clustered_profiles")
    assert _events(engine) == after
    assert "ix_decision_events_seq" in _index_names(engine)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _event(conn, "e-3", "2026-03-04T13:00:00Z")
    migrations.upgrade(engine)
    assert _events(engine) == after


def test_the_dangling_identities_revision_removes_identities_of_deleted_profiles(
    engine: Engine,
) -> None:
    # 0019: a race on PostgreSQL could leave an identity naming a deleted profile; every
    # later upsert of it failed. The revision deletes those rows and keeps the others.
    migrations.upgrade(engine, "0018_search_text_prefix")
    store = Store(engine)
    with store.session(write=True) as session:
        session.runtime.insert_profile("O@AdobeOrg", "prod", "kept", {}, now="t")
        session.runtime.add_identities("O@AdobeOrg", "prod", "kept", [("Email", "a@x")])
        session.runtime.add_identities("O@AdobeOrg", "prod", "gone", [("Phone", "555")])
    migrations.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT namespace, profile_id FROM profile_identities")).all()
    assert [tuple(row) for row in rows] == [("Email", "kept")]


def test_the_experience_event_time_revision_indexes_events_by_their_timestamp(
    engine: Engine,
) -> None:
    # 0020: retention deletes the oldest experience events first, through this index.
    migrations.upgrade(engine, "0019_dangling_identities")
    assert "ix_experience_events_time" not in _indexes(engine, "experience_events")
    migrations.upgrade(engine)
    assert "ix_experience_events_time" in _indexes(engine, "experience_events")
    migrations.downgrade(engine, "0019_dangling_identities")
    assert "ix_experience_events_time" not in _indexes(engine, "experience_events")


def test_the_ranking_trials_revision_adds_the_table_of_counted_trials(engine: Engine) -> None:
    # 0021: a strategy counts one display and one success per proposition and offer; the
    # table remembers those counted, keyed uniquely, and is pruned by the decision's time.
    migrations.upgrade(engine, "0020_experience_event_time")
    assert "ranking_trials" not in inspect(engine).get_table_names()
    migrations.upgrade(engine)
    assert "ix_ranking_trials_decided" in _indexes(engine, "ranking_trials")
    row = {"c": "c1", "p": "p1", "o": "o1"}
    insert = text(
        "INSERT INTO ranking_trials (container_id, proposition_id, position, offer_id, kind,"
        " decided_us) VALUES (:c, :p, 0, :o, 0, 1)"
    )
    with engine.begin() as conn:
        conn.execute(insert, row)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, row)
    migrations.downgrade(engine, "0020_experience_event_time")
    assert "ranking_trials" not in inspect(engine).get_table_names()


def test_the_redis_counter_markers_revision_lists_containers_once(engine: Engine) -> None:
    # 0022: the containers whose cap counters Redis holds, one row each (a marker placed
    # twice by two processes is one row).
    migrations.upgrade(engine, "0021_ranking_trials")
    assert "redis_counter_markers" not in inspect(engine).get_table_names()
    migrations.upgrade(engine)
    insert = text("INSERT INTO redis_counter_markers (container_id, placed) VALUES ('c1', 't')")
    with engine.begin() as conn:
        conn.execute(insert)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert)
    migrations.downgrade(engine, "0021_ranking_trials")
    assert "redis_counter_markers" not in inspect(engine).get_table_names()


def test_the_profile_erasures_revision_queues_a_key_once_per_tenant(engine: Engine) -> None:
    # 0023: a deleted profile's decision events to delete, by key, org and sandbox, walked
    # from the least cursor.
    migrations.upgrade(engine, "0022_redis_counter_markers")
    assert "profile_erasures" not in inspect(engine).get_table_names()
    migrations.upgrade(engine)
    assert "ix_profile_erasures_cursor" in _indexes(engine, "profile_erasures")
    insert = text(
        "INSERT INTO profile_erasures (profile_key, org_id, sandbox, until_seq, cursor_seq,"
        " requested) VALUES ('p-1', :org, 'prod', 9, 0, 't')"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"org": "A@AdobeOrg"})
        conn.execute(insert, {"org": "B@AdobeOrg"})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"org": "A@AdobeOrg"})
    migrations.downgrade(engine, "0022_redis_counter_markers")
    assert "profile_erasures" not in inspect(engine).get_table_names()


def _indexes(engine: Engine, table: str) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes(table)}


def test_the_counter_erasures_revision_queues_the_erasures_still_queued(engine: Engine) -> None:
    # 0024: a deleted profile's cap counters are erased too; the profiles whose decision
    # events are still queued for erasure get their counters queued as well.
    migrations.upgrade(engine, "0023_profile_erasures")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO profile_erasures (profile_key, org_id, sandbox, until_seq,"
                " cursor_seq, requested) VALUES ('identity:Email:a@x', 'O', 'prod', 5, 0, 't')"
            )
        )
    migrations.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM counter_erasures")).all()
    assert [tuple(row) for row in rows] == [("identity:Email:a@x", "O", "prod", "t")]
    migrations.downgrade(engine, "0023_profile_erasures")
    assert "counter_erasures" not in inspect(engine).get_table_names()

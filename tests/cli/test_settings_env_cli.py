"""``NEXTOFFER_*`` variables as every command reads them (``Settings.from_env``): a bad
one is named, with what it must be, before anything is opened."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from nextoffer.cli import main


@pytest.mark.parametrize(
    ("variable", "value", "must"),
    [
        ("NEXTOFFER_DB_POOL_SIZE", "abc", "must be an integer >= 1 (a number of connections)"),
        ("NEXTOFFER_DB_POOL_SIZE", "0", "must be an integer >= 1 (a number of connections)"),
        ("NEXTOFFER_BATCH_CHUNK", "0", "must be an integer >= 1 (a number of profiles per chunk)"),
        ("NEXTOFFER_BATCH_WORKERS", "-1", "must be an integer >= 0 (processes; 0: one per core)"),
        (
            "NEXTOFFER_BATCH_STALL_SECONDS",
            "-1",
            "must be a number >= 0 (a number of seconds; 0: never)",
        ),
        ("NEXTOFFER_MAX_BODY_BYTES", "1.5", "must be an integer >= 1 (a number of bytes)"),
        ("NEXTOFFER_MAX_JSON_DEPTH", "0", "must be an integer >= 1 (a nesting depth)"),
        ("NEXTOFFER_SHUTDOWN_TIMEOUT", "nan", "must be a number >= 0 (a number of seconds)"),
        ("NEXTOFFER_SNAPSHOT_WAIT_SECONDS", "-2", "must be a number >= 0 (a number of seconds)"),
        ("NEXTOFFER_PROFILE_CACHE_MB", "inf", "must be a number >= 0 (megabytes; 0: no cache)"),
        ("NEXTOFFER_PROFILE_CACHE_SECONDS", "0", "must be a number >= 0.001 (a number of seconds)"),
        ("NEXTOFFER_METRICS", "maybe", "must be one of 1, true, yes, on, 0, false, no, off"),
        # SQLite took "FUL" silently as NORMAL: no power-cut safety, and nothing said.
        ("NEXTOFFER_SQLITE_SYNCHRONOUS", "FUL", "must be one of OFF, NORMAL, FULL, EXTRA"),
        (
            "NEXTOFFER_DATASET_REMOTE_PREFIXES",
            "s3://lake, /data/lake",
            "must be remote folders, comma-separated (s3://, s3a://, gs:// or hdfs://, a bucket"
            " or host, no credentials); '/data/lake' is not one",
        ),
    ],
)
def test_a_bad_settings_variable_is_named_with_what_it_must_be(variable, value, must, tmp_path):
    db = tmp_path / "n.db"
    result = CliRunner().invoke(
        main, ["db", "upgrade", "--db", f"sqlite:///{db}"], env={variable: value}
    )
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr == f"error: {variable}={value!r}: {must}\n"
    assert not db.exists()  # refused before anything was opened


def test_good_settings_variables_are_read(tmp_path):
    from nextoffer.settings import Settings

    settings = Settings.from_env(
        {
            "NEXTOFFER_BATCH_CHUNK": " 5 ",
            "NEXTOFFER_BATCH_WORKERS": "0",
            "NEXTOFFER_PROFILE_CACHE_MB": "0",
            "NEXTOFFER_METRICS": "Off",
            "NEXTOFFER_ACCESS_LOG": "yes",
            "NEXTOFFER_BATCH_STALL_SECONDS": "90",
            "NEXTOFFER_DATASET_REMOTE_PREFIXES": " s3://lake/offers , gs://bucket ",
        }
    )
    assert settings.dataset_remote_prefixes == ("s3://lake/offers", "gs://bucket")
    assert settings.batch_chunk == 5 and settings.batch_workers == 0
    assert settings.batch_stall_seconds == 90.0
    from nextoffer.root import NextOffer

    db = f"sqlite:///{tmp_path / 'n.db'}"
    with NextOffer.open(Settings(db_url=db, batch_stall_seconds=90.0, warm_catalogs=False)) as no:
        assert no.batch._stall == 90.0  # the root hands the runner its bound
    assert settings.profile_cache_mb == 0
    assert settings.metrics is False and settings.access_log is True


def test_the_sqlite_synchronous_level_asked_for_is_the_one_every_connection_uses(
    tmp_path, monkeypatch
):
    from nextoffer.root import NextOffer
    from nextoffer.settings import Settings

    monkeypatch.setenv("NEXTOFFER_SQLITE_SYNCHRONOUS", "full")
    with NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}")) as no:
        with no.store.session() as session:
            assert session.conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        # the decision path's own connections too
        reader = no.path._thread_conn()  # type: ignore[attr-defined]
        assert reader.execute("PRAGMA synchronous").fetchone()[0] == 2

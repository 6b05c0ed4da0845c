"""A worker that starts while its database cannot be reached waits for it (``api/app.py``,
``_open``), instead of failing its start: uvicorn stops every worker of a node when one
fails to start, those still serving decisions from their snapshots included."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from nextoffer.api import app as app_module
from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.backends import fresh_database
from support.servers import Forwarder, free_port


def test_a_worker_started_while_the_database_is_away_waits_for_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app_module, "OPEN_RETRY_SECONDS", 0.2, raising=False)
    with fresh_database() as url:
        real = make_url(url)
        port = free_port()
        away = real.set(port=port).render_as_string(hide_password=False)
        with (
            Forwarder((real.host or "127.0.0.1", real.port or 5432), port, after=1.5),
            caplog.at_level(logging.ERROR, logger="nextoffer.api"),
        ):
            started = time.monotonic()
            with TestClient(create_app(Settings(db_url=away, warm_catalogs=False))) as client:
                waited = time.monotonic() - started
                assert client.get("/healthz").status_code == 200
    assert waited >= 1.5
    warned = [r.getMessage() for r in caplog.records if "waits for the database" in r.getMessage()]
    assert len(warned) == 1, warned  # once every ten seconds, not at every try

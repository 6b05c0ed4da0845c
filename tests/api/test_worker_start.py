"""A worker that starts while its database cannot be reached waits for it (``api/app.py``,
``_open``), instead of failing its start: uvicorn stops every worker of a node when one
fails to start, those still serving decisions from their snapshots included. A worker
that stops closes what its event loop opened."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from nextoffer.api import app as app_module
from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.api import capped_library, first_option, make_tenant
from support.backends import fresh_database, redis_url
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


def test_a_stopping_worker_closes_the_connections_its_loop_opened(db_url: str) -> None:
    # The lifespan closed the root from the loop without awaiting what the loop had
    # opened: its Redis connections were left open to the collector (and asyncpg's, on
    # PostgreSQL). Redis names the clients still connected.
    name = f"worker-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        db_url=db_url, redis_url=f"{redis_url()}?client_name={name}", freeze_heap=False
    )
    watcher = redis.Redis.from_url(redis_url())
    try:
        with TestClient(create_app(settings)) as client:
            tenant = make_tenant(client, db_url, "ACME@AdobeOrg", "prod")
            ids = capped_library(
                lambda type_name, body: str(tenant.create(type_name, body)["@id"]),
                {"xdm:globalCap": 1},
            )
            assert [first_option(tenant, ids, n) for n in range(2)] == [
                ids["capped"],
                ids["other"],
            ]
            assert connected(watcher, name)  # the worker's own, while it serves
        assert connected(watcher, name) == 0
    finally:
        watcher.close()


def connected(watcher: redis.Redis, name: str) -> int:
    return sum(1 for c in watcher.client_list() if c.get("name") == name)

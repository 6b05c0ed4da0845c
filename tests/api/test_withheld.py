"""An answer about a store that failed says which store, never the driver's words: those
name hosts, ports, roles and files (and the Edge Network answers anyone). They go to the
server's log for the operator."""

from __future__ import annotations

import logging

import orjson
import pytest
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from nextoffer import logs
from nextoffer.api import edge_response
from nextoffer.api.app import create_app
from nextoffer.errors import Unavailable
from nextoffer.settings import Settings
from support import schema
from support.api import make_tenant
from support.backends import fresh_database
from support.servers import Forwarder, free_port

PLACEMENTS = {"schema": schema("offer-placement", None)}


@pytest.fixture
def withheld_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> pytest.LogCaptureFixture:
    """The lines :func:`nextoffer.logs.withheld` writes in the test (a throttle of its
    own: another test's line in the last ten seconds does not hold this one back)."""
    monkeypatch.setattr(logs, "_WITHHELD", logs.Throttled(logging.getLogger("nextoffer.api")))
    caplog.set_level(logging.ERROR, logger="nextoffer.api")
    return caplog


def test_a_database_gone_away_is_a_503_naming_no_host_or_port(withheld_lines) -> None:
    with fresh_database() as url:
        real = make_url(url)
        target = (real.host or "127.0.0.1", real.port or 5432)
        port = free_port()
        via = real.set(port=port).render_as_string(hide_password=False)
        with Forwarder(target, port) as forwarder:
            settings = Settings(db_url=via, warm_catalogs=False, freeze_heap=False)
            with TestClient(create_app(settings)) as client:
                tenant = make_tenant(client, via, "Org@AdobeOrg", "prod")
                listed = client.get(tenant.url(), params=PLACEMENTS, headers=tenant.headers)
                forwarder.stop()  # the database away: its connections cut, no new ones
                away = client.get(tenant.url(), params=PLACEMENTS, headers=tenant.headers)
    assert listed.status_code == 200, listed.text
    assert away.status_code == 503, away.text
    assert away.json()["detail"] == "the database is unavailable"
    assert str(port) not in away.text and "127.0.0.1" not in away.text
    assert any(str(port) in line for line in withheld_lines.messages), withheld_lines.text


def test_an_edge_failure_answers_the_detail_and_logs_the_drivers_words(withheld_lines) -> None:
    away = Unavailable("the database is unavailable", internal="db.internal:5432 refused")
    response = edge_response.failure(away, "r1", {})
    body = orjson.loads(response.body)
    assert response.status_code == 503
    assert body["detail"] == "the database is unavailable"
    assert b"db.internal" not in response.body
    assert withheld_lines.messages == ["the database is unavailable: db.internal:5432 refused"]

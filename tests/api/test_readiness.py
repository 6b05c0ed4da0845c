"""``GET /readyz``: whether the stores a decision needs answer, for a balancer's probe
(``/healthz`` says only that the process answers)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.api.routes import system
from nextoffer.settings import Settings
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.store import Store
from support.backends import fresh_database, redis_url
from support.servers import Forwarder, free_port


def test_a_process_whose_database_answers_is_ready_without_credentials(tmp_path: Path) -> None:
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", freeze_heap=False)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok"}}


def test_probes_within_a_second_share_one_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No credentials needed: whoever asks, the database sees one query a second.
    pinged: list[int] = []
    real = Store.ping
    monkeypatch.setattr(Store, "ping", lambda self: (pinged.append(1), real(self))[1])
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", freeze_heap=False)
    with TestClient(create_app(settings)) as client:
        answers = [client.get("/readyz").status_code for _ in range(20)]
    assert answers == [200] * 20
    assert len(pinged) == 1


def test_an_unreachable_redis_makes_the_process_not_ready(tmp_path: Path) -> None:
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'n.db'}",
        redis_url="redis://127.0.0.1:1/0",
        freeze_heap=False,
        warm_catalogs=False,
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "counters": "unavailable"},
    }


def test_a_database_gone_away_makes_it_not_ready_until_it_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(system, "READY_REUSE_SECONDS", 0.0)
    with fresh_database() as url:
        real = make_url(url)
        target = (real.host or "127.0.0.1", real.port or 5432)
        port = free_port()
        via = real.set(port=port).render_as_string(hide_password=False)
        with Forwarder(target, port) as forwarder:
            settings = Settings(db_url=via, warm_catalogs=False, freeze_heap=False)
            with TestClient(create_app(settings)) as client:
                assert client.get("/readyz").status_code == 200
                forwarder.stop()  # the database away: its connections cut, no new ones
                away = client.get("/readyz")
                with Forwarder(target, port):
                    back = client.get("/readyz")
    assert away.status_code == 503
    assert away.json() == {"status": "unavailable", "checks": {"database": "unavailable"}}
    assert str(port) not in away.text  # nothing of the stores for whoever asks
    assert back.status_code == 200


def test_a_hung_check_is_not_started_again_while_it_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A blackholed store holds a pool thread per check past the probe's timeout: probes
    # wait on the one check in flight instead of parking another thread on it each time.
    monkeypatch.setattr(system, "READY_REUSE_SECONDS", 0.0)
    monkeypatch.setattr(system, "READY_TIMEOUT_SECONDS", 0.2)
    hung = threading.Event()
    pinged: list[int] = []

    def ping(_store: Store) -> None:
        pinged.append(1)
        hung.wait(10)

    monkeypatch.setattr(Store, "ping", ping)
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", freeze_heap=False)
    with TestClient(create_app(settings)) as client:
        answers = [client.get("/readyz") for _ in range(5)]
        hung.set()
        time.sleep(0.1)
        back = client.get("/readyz")
    assert [a.status_code for a in answers] == [503] * 5
    assert answers[0].json() == {"status": "unavailable", "checks": {"database": "timeout"}}
    assert len(pinged) == 2  # the hung one, then one after it returned
    assert back.status_code == 200


def test_a_hung_redis_is_the_check_named_in_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database answered; the counters' store is the one the check still waits for.
    monkeypatch.setattr(system, "READY_TIMEOUT_SECONDS", 0.2)
    hung = threading.Event()
    monkeypatch.setattr(RedisCounters, "ping", lambda _self: hung.wait(10))
    settings = Settings(
        db_url=f"sqlite:///{tmp_path / 'n.db'}",
        redis_url=redis_url(),
        freeze_heap=False,
        warm_catalogs=False,
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        hung.set()
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "counters": "timeout"},
    }

"""Caps through a Redis that lost its counters: the capped offer is not proposed again
from zero; the operator hears of it (``serve``, ``admin counters``) and decides."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.cli import main
from nextoffer.cli.serve import check_stores
from nextoffer.settings import Settings
from nextoffer.storage.counters import CounterKey, SqlCounters
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.store import Store
from support.api import Tenant, capped_library, make_tenant
from support.api import first_option as decide
from support.backends import redis_url


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        db_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url=redis_url(), freeze_heap=False
    )


@pytest.fixture
def tenant(settings: Settings) -> Iterator[Tenant]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")


def library(tenant: Tenant) -> dict[str, str]:
    return capped_library(
        lambda type_name, body: str(tenant.create(type_name, body)["@id"]),
        {"xdm:globalCap": 2},
    )


def test_a_cap_stays_reached_when_redis_loses_its_counters(
    tenant: Tenant, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = library(tenant)
    chosen = [decide(tenant, ids, n) for n in range(3)]
    assert chosen == [ids["capped"], ids["capped"], ids["other"]]

    # Redis restarted without its data: this container's keys are gone.
    raw = redis.Redis.from_url(redis_url())
    try:
        names = list(raw.scan_iter(match=f"nextoffer:cap:{{{tenant.container}}}:*"))
        assert names
        raw.delete(*names)
    finally:
        raw.close()

    # Served on, the capped offer as capped: not proposed again from a count of zero.
    assert [decide(tenant, ids, n) for n in range(3, 6)] == [ids["other"]] * 3

    # The operator hears of it at a server's start, and from admin counters.
    check_stores(settings)
    said = capsys.readouterr().err
    assert f"Redis lost the cap counters of container {tenant.container}" in said
    env = {"NEXTOFFER_DB": settings.db_url, "NEXTOFFER_REDIS": settings.redis_url}
    listed = CliRunner().invoke(main, ["admin", "counters"], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.split() == [tenant.container]

    # Naming another container accepts nothing, and says so.
    other = ["admin", "counters", "--accept-loss", "--container", "not-lost"]
    refused = CliRunner().invoke(main, other, env=env)
    assert refused.stdout.strip() == "none of the containers named has lost its counters"
    # Accepted: the caps count again, from what Redis holds now (nothing).
    accepted = CliRunner().invoke(main, ["admin", "counters", "--accept-loss"], env=env)
    assert accepted.exit_code == 0, accepted.output
    assert tenant.container in accepted.stdout
    assert CliRunner().invoke(main, ["admin", "counters"], env=env).stdout == ""
    assert [decide(tenant, ids, n) for n in range(6, 9)] == [
        ids["capped"],
        ids["capped"],
        ids["other"],
    ]


def test_admin_counters_without_redis_says_what_it_needs(tmp_path: Path) -> None:
    env = {"NEXTOFFER_DB": f"sqlite:///{tmp_path / 'n.db'}", "NEXTOFFER_REDIS": ""}
    result = CliRunner().invoke(main, ["admin", "counters"], env=env)
    assert result.exit_code == 2
    assert "--redis" in result.output


def test_caps_counted_in_the_database_hold_when_redis_is_added(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A deployment that counted its caps in the database adds Redis: until the counts
    # are moved there, capped offers count as capped (not from zero); after, exactly.
    # (Both databases: tests/storage/test_redis_markers.py.)
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    alone = Settings(db_url=db_url, freeze_heap=False)
    with TestClient(create_app(alone), raise_server_exceptions=False) as client:
        tenant = make_tenant(client, db_url, "ACME@AdobeOrg", "prod")
        ids = capped_library(
            lambda type_name, body: str(tenant.create(type_name, body)["@id"]),
            {"xdm:globalCap": 3},
        )
        assert [decide(tenant, ids, n) for n in range(2)] == [ids["capped"]] * 2

    shared = Settings(db_url=db_url, redis_url=redis_url(), freeze_heap=False)
    with TestClient(create_app(shared), raise_server_exceptions=False) as client:
        tenant.client = client
        assert [decide(tenant, ids, n) for n in range(2, 4)] == [ids["other"]] * 2
        # The operator hears of it at a server's start, and from admin counters.
        check_stores(shared)
        said = capsys.readouterr().err
        assert f"the cap counters of container {tenant.container} are still in the" in said
        assert "nextoffer admin counters --into-redis" in said
        env = {"NEXTOFFER_DB": db_url, "NEXTOFFER_REDIS": shared.redis_url}
        listed = CliRunner().invoke(main, ["admin", "counters"], env=env)
        assert listed.exit_code == 0, listed.output
        assert listed.stdout == ""  # nothing lost
        assert f"container {tenant.container}: 1 cap counter still in the database" in (
            listed.stderr
        )
        moved = CliRunner().invoke(main, ["admin", "counters", "--into-redis"], env=env)
        assert moved.exit_code == 0, moved.output
        assert moved.stdout == f"container {tenant.container}: 1 counter moved into Redis\n"
        assert [decide(tenant, ids, n) for n in range(4, 6)] == [ids["capped"], ids["other"]]
        again = CliRunner().invoke(main, ["admin", "counters", "--into-redis"], env=env)
        assert again.exit_code == 0, again.output
        assert again.stdout == "nothing to move: the database holds no cap counters\n"
    check_stores(shared)
    assert "still in the database" not in capsys.readouterr().err


def test_caps_counted_in_redis_hold_when_the_deployment_stops_using_it(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    shared = Settings(db_url=db_url, redis_url=redis_url(), freeze_heap=False)
    with TestClient(create_app(shared), raise_server_exceptions=False) as client:
        tenant = make_tenant(client, db_url, "ACME@AdobeOrg", "prod")
        ids = capped_library(
            lambda type_name, body: str(tenant.create(type_name, body)["@id"]),
            {"xdm:globalCap": 3},
        )
        assert [decide(tenant, ids, n) for n in range(2)] == [ids["capped"]] * 2
    env = {"NEXTOFFER_DB": db_url, "NEXTOFFER_REDIS": shared.redis_url}
    moved = CliRunner().invoke(main, ["admin", "counters", "--out-of-redis"], env=env)
    assert moved.exit_code == 0, moved.output
    assert f"container {tenant.container}: 1 counter moved out of Redis" in moved.stdout
    alone = Settings(db_url=db_url, freeze_heap=False)
    with TestClient(create_app(alone), raise_server_exceptions=False) as client:
        tenant.client = client
        assert [decide(tenant, ids, n) for n in range(2, 4)] == [ids["capped"], ids["other"]]


def test_serve_names_a_container_redis_counts_whose_old_counters_the_database_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Redis took the container's first count before caps failed closed (an upgrade from
    # a release without the check): its caps count from Redis's alone until moved.
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url=redis_url())
    store = Store.open(settings.db_url)
    counters = RedisCounters.from_url(redis_url(), store=store)
    try:
        key = CounterKey(f"c-{uuid.uuid4().hex}", "xcore:offer:1", "globalCap")
        counters.add([key])
        SqlCounters(store).add([key], 2)
        check_stores(settings)
        said = capsys.readouterr().err
        assert f"the cap counters of container {key.container_id} counted before Redis" in said
        assert "its caps count from Redis's alone" in said
        assert counters.moves.move_in().moved == {key.container_id: 1}
        check_stores(settings)
        assert "still in the database" not in capsys.readouterr().err
        assert counters.read([key]) == {key: 3}
    finally:
        counters.close()
        store.close()

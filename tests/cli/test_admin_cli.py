"""``nextoffer admin bootstrap``: the JSON other tools rely on, and reuse on a second run."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from click.testing import CliRunner
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.cli import main
from nextoffer.service import auth, tokens
from nextoffer.settings import Settings
from nextoffer.storage.counters import CounterKey, SqlCounters
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.redis_markers import marker_key
from nextoffer.storage.store import Store
from support.backends import redis_url


def bootstrap(db_url: str, *extra: str) -> dict[str, str]:
    result = CliRunner().invoke(
        main,
        [
            "admin",
            "bootstrap",
            "--db",
            db_url,
            "--org",
            "ACME@AdobeOrg",
            "--sandbox",
            "prod",
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_bootstrap_prints_the_keys_a_console_link_and_reuses_on_rerun(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    first = bootstrap(db_url)
    assert set(first) == {
        "org",
        "sandbox",
        "containerId",
        "apiKey",
        "accessToken",
        "datastreamId",
        "consoleUrl",
    }
    link = urlsplit(first["consoleUrl"])
    assert link.path == "/console/login"
    assert parse_qs(link.fragment)["accessToken"] == [first["accessToken"]]
    assert parse_qs(link.fragment)["apiKey"] == [first["apiKey"]]
    second = bootstrap(db_url)
    assert second["containerId"] == first["containerId"] and second["apiKey"] == first["apiKey"]
    assert second["datastreamId"] == first["datastreamId"]


def test_the_console_link_points_where_the_server_is_said_to_be(tmp_path):
    # It pointed at 127.0.0.1:8080 whatever port or host the server was given.
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    made = bootstrap(db_url, "--url", "https://offers.example.com:8443/")
    link = urlsplit(made["consoleUrl"])
    assert (link.scheme, link.netloc, link.path) == (
        "https",
        "offers.example.com:8443",
        "/console/login",
    )
    refused = CliRunner().invoke(
        main,
        [
            *("admin", "bootstrap", "--db", db_url, "--org", "O@AdobeOrg", "--sandbox", "prod"),
            *("--url", "offers.example.com", "--json"),
        ],
    )
    assert refused.exit_code == 2 and "--url 'offers.example.com' must be" in refused.stderr


def test_token_minted_by_bootstrap_is_accepted_by_the_service(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    creds = bootstrap(db_url, "--client-id", "my-app", "--user", "alice@example.com")
    headers = {
        "Authorization": f"Bearer {creds['accessToken']}",
        "x-api-key": creds["apiKey"],
        "x-gw-ims-org-id": creds["org"],
        "x-sandbox-name": creds["sandbox"],
    }
    with TestClient(create_app(Settings(db_url=db_url))) as client:
        response = client.post(
            f"/data/core/xcore/{creds['containerId']}/instances",
            content=b'{"xdm:name": "t"}',
            headers={
                **headers,
                "Content-Type": 'application/schema-instance+json; version=1;  schema="https://ns.adobe.com/experience/offer-management/tag;version=0.1"',
            },
        )
    assert response.status_code == 201
    assert response.json()["repo:createdBy"] == "alice@example.com"
    assert response.json()["repo:createdByClientId"] == "my-app"


def test_bad_database_url_exits_with_a_message(tmp_path):
    result = CliRunner().invoke(
        main,
        ["admin", "bootstrap", "--db", "mysql://nope/x", "--org", "A", "--sandbox", "p", "--json"],
    )
    assert result.exit_code == 2
    assert "unsupported database" in result.output


def refused(db: Path, *args: str):
    result = CliRunner().invoke(main, ["admin", "bootstrap", "--db", f"sqlite:///{db}", *args])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert not db.exists()  # refused before a database was made
    return result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "", "--sandbox", "prod"], "error: --org must not be empty"),
        (["--org", "A@AdobeOrg", "--sandbox", ""], "error: --sandbox must not be empty"),
        (
            ["--org", "A" * 100_000, "--sandbox", "prod"],
            "error: --org is 100,000 characters long; at most 255",
        ),
        (
            ["--org", "A@AdobeOrg", "--sandbox", "s" * 256],
            "error: --sandbox is 256 characters long; at most 255",
        ),
        (
            ["--org", "A@AdobeOrg", "--sandbox", " prod"],
            "error: --sandbox ' prod' must be printable ASCII without a space at either end "
            "(as the API's headers carry it)",
        ),
        (
            ["--org", "A@AdobeOrg", "--sandbox", "prod", "--client-id", ""],
            "error: --client-id must not be empty",
        ),
    ],
)
def test_bootstrap_refuses_names_the_api_cannot_be_called_with(tmp_path, args, message):
    result = refused(tmp_path / "n.db", *args)
    assert result.stderr == message + "\n"


def test_bootstrap_takes_the_longest_names_the_api_accepts(tmp_path):
    creds = bootstrap(f"sqlite:///{tmp_path / 'n.db'}", "--client-id", "c" * 255)
    assert creds["apiKey"] == "c" * 255


def test_bootstrap_refuses_a_ttl_past_ten_years(tmp_path):
    result = refused(
        tmp_path / "n.db", "--org", "A@AdobeOrg", "--sandbox", "prod", "--ttl", "99999999999999"
    )
    assert "Invalid value for '--ttl': 99999999999999 is not in the range 60<=x<=315360000" in (
        result.output
    )
    assert bootstrap(f"sqlite:///{tmp_path / 'n.db'}", "--ttl", "315360000")["accessToken"]


def admin(*args: str) -> str:
    result = CliRunner().invoke(main, ["admin", *args])
    assert result.exit_code == 0, result.output
    return result.output


def headers_of(creds: dict[str, str], sandbox: str | None = None) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {creds['accessToken']}",
        "x-api-key": creds["apiKey"],
        "x-gw-ims-org-id": creds["org"],
        "x-sandbox-name": sandbox or creds["sandbox"],
    }


def test_clients_lists_each_api_client_with_its_sandboxes(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    bootstrap(db_url, "--client-id", "shop")
    bootstrap(db_url, "--client-id", "shop", "--sandbox", "dev")  # a second sandbox
    bootstrap(db_url, "--client-id", "other", "--org", "OTHER@AdobeOrg")
    listed = [json.loads(line) for line in admin("clients", "--db", db_url).splitlines()]
    assert [(c["clientId"], c["org"], c["sandboxes"]) for c in listed] == [
        ("other", "OTHER@AdobeOrg", ["prod"]),
        ("shop", "ACME@AdobeOrg", ["dev", "prod"]),
    ]
    assert all(c["created"].endswith("Z") for c in listed)
    only = admin("clients", "--db", db_url, "--org", "OTHER@AdobeOrg").splitlines()
    assert [json.loads(line)["clientId"] for line in only] == ["other"]


def test_a_revoked_sandbox_or_client_is_refused_by_a_running_server(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "CLIENT_CACHE_SECONDS", 0.2)  # a server re-reads grants
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    creds = bootstrap(db_url, "--client-id", "shop")
    bootstrap(db_url, "--client-id", "shop", "--sandbox", "dev")
    with TestClient(create_app(Settings(db_url=db_url))) as client:

        def status(sandbox: str, used: dict[str, str] = creds) -> int:
            return client.get("/data/core/xcore/", headers=headers_of(used, sandbox)).status_code

        assert (status("prod"), status("dev")) == (200, 200)
        assert admin("revoke", "--db", db_url, "--client-id", "shop", "--sandbox", "dev") == (
            "revoked: sandbox dev of API client shop\n"
        )
        time.sleep(0.3)
        assert (status("prod"), status("dev")) == (200, 403)
        admin("revoke", "--db", db_url, "--client-id", "shop")
        time.sleep(0.3)
        refused = client.get("/data/core/xcore/", headers=headers_of(creds))
        assert refused.status_code == 401, refused.text
        assert refused.json()["error_code"] == "401013"
        # Made again under the same id, within the same second: new tokens work, the
        # ones minted before do not (a token names when its client was made).
        again = bootstrap(db_url, "--client-id", "shop")
        assert (status("prod", again), status("prod")) == (200, 401)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--client-id", "nobody"), "error: no API client 'nobody'"),
        (
            ("--client-id", "shop", "--sandbox", "staging"),
            "error: API client 'shop' has no grant of sandbox 'staging'",
        ),
    ],
)
def test_revoking_what_is_not_there_is_a_one_line_error(tmp_path, args, message):
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    bootstrap(db_url, "--client-id", "shop")
    result = CliRunner().invoke(main, ["admin", "revoke", "--db", db_url, *args])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert result.stderr.strip() == message


def test_a_new_signing_key_signs_new_tokens_and_dropping_the_old_refuses_theirs(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(auth, "KEY_CACHE_SECONDS", 0.2)  # a server re-reads the keys
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    old = bootstrap(db_url, "--client-id", "shop")
    with TestClient(create_app(Settings(db_url=db_url))) as client:

        def status(creds: dict[str, str]) -> int:
            return client.get("/data/core/xcore/", headers=headers_of(creds)).status_code

        assert status(old) == 200
        printed = admin("rotate-key", "--db", db_url)
        kid = printed.split()[3].rstrip(";")
        new = bootstrap(db_url, "--client-id", "shop")
        assert tokens.kid_of(new["accessToken"]) == kid != tokens.kid_of(old["accessToken"])
        time.sleep(0.3)
        assert (status(old), status(new)) == (200, 200)  # both keys stand until dropped
        assert admin("drop-old-keys", "--db", db_url) == "dropped: 1 signing key\n"
        time.sleep(0.3)
        assert (status(old), status(new)) == (401, 200)
        assert admin("drop-old-keys", "--db", db_url) == "dropped: 0 signing keys\n"


# admin counters --into-redis: the counters of a deployment that added Redis.


def counters_cli(db_url: str, *args: str, redis: str | None = None):
    env = {"NEXTOFFER_DB": db_url, "NEXTOFFER_REDIS": redis_url() if redis is None else redis}
    return CliRunner().invoke(main, ["admin", "counters", *args], env=env)


def test_into_redis_moves_the_database_s_counters_and_says_what_it_moved(db_url):
    store = Store.open(db_url)
    try:
        one, two, done = (f"c-{uuid.uuid4().hex}" for _ in range(3))
        sql = SqlCounters(store)
        sql.add([CounterKey(one, "xcore:offer:1", "globalCap")], 3)
        sql.add([CounterKey(one, "xcore:offer:2", "globalCap")], 1)
        sql.add([CounterKey(two, "xcore:offer:1", "globalCap")], 5)
        in_redis = CounterKey(done, "xcore:offer:1", "globalCap")
        redis_counters = RedisCounters.from_url(redis_url(), store=store)
        try:
            redis_counters.add([in_redis], 4)  # all its counters in Redis already

            moved = counters_cli(db_url, "--into-redis", "--container", one, "--container", done)
            assert moved.exit_code == 0, moved.output
            assert moved.stdout == f"container {one}: 2 counters moved into Redis\n"
            assert redis_counters.moves.unmoved() == {two: 1}
            rest = counters_cli(db_url, "--into-redis")
            assert rest.exit_code == 0, rest.output
            assert rest.stdout == f"container {two}: 1 counter moved into Redis\n"
            again = counters_cli(db_url, "--into-redis")
            assert again.exit_code == 0, again.output
            assert again.stdout == "nothing to move: the database holds no cap counters\n"
            named = counters_cli(db_url, "--into-redis", "--container", "c-none")
            assert named.stdout == (
                "nothing to move: the database holds no cap counters of the containers named\n"
            )
            assert redis_counters.read([in_redis]) == {in_redis: 4}
            assert redis_counters.read([CounterKey(two, "xcore:offer:1", "globalCap")]) != {}
        finally:
            redis_counters.close()
    finally:
        store.close()


def test_into_redis_leaves_a_container_whose_redis_counters_were_lost(db_url):
    store = Store.open(db_url)
    key = CounterKey(f"c-{uuid.uuid4().hex}", "xcore:offer:1", "globalCap")
    redis_counters = RedisCounters.from_url(redis_url(), store=store)
    try:
        redis_counters.add([key])
        raw = redis.Redis.from_url(redis_url())
        try:
            raw.delete(marker_key(key.container_id))  # Redis lost it
        finally:
            raw.close()
        SqlCounters(store).add([key], 2)
        result = counters_cli(db_url, "--into-redis")
        assert result.exit_code == 6, result.output
        assert result.stdout == ""
        assert f"container {key.container_id}: not moved: Redis lost its counters" in (
            result.stderr
        )
        assert "--accept-loss" in result.stderr
        assert redis_counters.moves.unmoved() == {key.container_id: 1}
    finally:
        redis_counters.close()
        store.close()


@pytest.mark.parametrize(
    ("args", "redis_at", "message"),
    [
        (["--into-redis"], "", "the cap counters are in Redis only with --redis"),
        (
            ["--into-redis", "--accept-loss"],
            None,
            "--accept-loss, --into-redis and --out-of-redis are one a run",
        ),
        (
            ["--container", "c-1"],
            None,
            "--container goes with --accept-loss, --into-redis or --out-of-redis",
        ),
    ],
)
def test_into_redis_refuses_what_it_cannot_do(tmp_path, args, redis_at, message):
    result = counters_cli(f"sqlite:///{tmp_path / 'n.db'}", *args, redis=redis_at)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_out_of_redis_moves_redis_s_counters_into_the_database_and_says_so(db_url):
    store = Store.open(db_url)
    one, two = (f"c-{uuid.uuid4().hex}" for _ in range(2))
    keys = [CounterKey(one, "xcore:offer:1", "globalCap"), CounterKey(two, "xcore:offer:1", "x")]
    redis_counters = RedisCounters.from_url(redis_url(), store=store)
    try:
        redis_counters.add(keys, 2)
        moved = counters_cli(db_url, "--out-of-redis", "--container", one)
        assert moved.exit_code == 0, moved.output
        assert moved.stdout == f"container {one}: 1 counter moved out of Redis into the database\n"
        assert SqlCounters(store).read(keys) == {keys[0]: 2}
        rest = counters_cli(db_url, "--out-of-redis")
        assert rest.stdout == f"container {two}: 1 counter moved out of Redis into the database\n"
        again = counters_cli(db_url, "--out-of-redis")
        assert again.exit_code == 0, again.output
        assert again.stdout == "nothing to move: Redis holds no cap counters\n"
        assert SqlCounters(store).read(keys) == {keys[0]: 2, keys[1]: 2}
    finally:
        redis_counters.close()
        store.close()

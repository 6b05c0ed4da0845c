"""``nextoffer admin bootstrap``: the JSON other tools rely on, and reuse on a second run."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from click.testing import CliRunner
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.cli import main
from nextoffer.settings import Settings


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

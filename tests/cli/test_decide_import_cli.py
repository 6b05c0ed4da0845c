"""``nextoffer decide`` (in-process dry run) and ``nextoffer import profiles``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nextoffer.cli import main
from nextoffer.cli.demo import DEMO_CLIENT, DEMO_ORG, DEMO_SANDBOX, DEMO_USER, seed_library
from nextoffer.root import NextOffer
from nextoffer.settings import Settings
from nextoffer.storage.store import Store


@pytest.fixture
def demo(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'n.db'}"
    with NextOffer.open(Settings(db_url=db_url)) as no:
        creds = no.bootstrap(
            org=DEMO_ORG, sandbox=DEMO_SANDBOX, client_id=DEMO_CLIENT, user=DEMO_USER
        )
        ids = seed_library(no.repository, creds.principal, creds.container_id)
    return db_url, creds.container_id, ids


def decide(demo, tmp_path, profile, *extra):
    db_url, container, ids = demo
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    return CliRunner().invoke(
        main,
        [
            "decide",
            "--db",
            db_url,
            "--container",
            container,
            "--activity",
            ids["decision"],
            "--placement",
            ids["placement"],
            "--profile",
            str(path),
            *extra,
        ],
    )


def test_decide_picks_by_profile_and_explains(demo, tmp_path):
    _, _, ids = demo
    gold = decide(demo, tmp_path, {"loyalty": {"tier": "gold"}})
    assert gold.exit_code == 0, gold.output
    assert (
        json.loads(gold.output)["xdm:propositions"][0]["xdm:options"][0]["xdm:id"]
        == ids["gold_offer"]
    )
    other = decide(demo, tmp_path, {"loyalty": {"tier": "bronze"}}, "--explain")
    body = json.loads(other.output)["xdm:propositions"][0]
    assert body["xdm:options"][0]["xdm:id"] == ids["holiday_offer"]
    reasons = {c["offerId"]: c["reason"] for c in body["nextoffer:explain"]["candidates"]}
    assert reasons[ids["gold_offer"]] == "ruleFalse"


def test_decide_reports_unknown_ids_with_an_exit_code(demo, tmp_path):
    db_url, container, ids = demo
    result = decide(
        (db_url, container, {**ids, "decision": "xcore:offer-activity:0000000000000001"}),
        tmp_path,
        {},
    )
    assert result.exit_code == 4 and "error:" in result.output
    missing = decide((db_url, "no-such-container", ids), tmp_path, {})
    assert missing.exit_code == 4


def test_import_profiles_loads_good_lines_and_reports_bad_ones(demo, tmp_path):
    db_url, _, _ = demo
    lines = [
        json.dumps(
            {"identityMap": {"Email": [{"id": "a@x"}]}, "profile": {"loyalty": {"tier": "gold"}}}
        ),
        "{not json",
        json.dumps({"identityMap": {}, "profile": {}}),
        "",
        json.dumps({"identityMap": {"Email": [{"id": "b@x"}]}, "profile": {}}),
    ]
    path = tmp_path / "profiles.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main,
        [
            "import",
            "profiles",
            str(path),
            "--db",
            db_url,
            "--org",
            DEMO_ORG,
            "--sandbox",
            DEMO_SANDBOX,
        ],
    )
    assert result.exit_code == 1
    assert "2 profiles loaded, 2 lines rejected" in result.output
    assert "line 2:" in result.output and "line 3:" in result.output
    store = Store.open(db_url)
    with store.session() as session:
        assert session.runtime.find_profile_id(DEMO_ORG, DEMO_SANDBOX, "Email", "a@x") is not None
        assert session.runtime.find_profile_id(DEMO_ORG, DEMO_SANDBOX, "Email", "b@x") is not None
    store.close()


def test_import_into_a_missing_sandbox_is_refused(demo, tmp_path):
    db_url, _, _ = demo
    path = tmp_path / "p.jsonl"
    path.write_text("{}\n")
    result = CliRunner().invoke(
        main, ["import", "profiles", str(path), "--db", db_url, "--org", "NOPE", "--sandbox", "x"]
    )
    assert result.exit_code == 4

"""``nextoffer decide`` (in-process dry run) and ``nextoffer import profiles``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nextoffer.cli import main
from nextoffer.cli.demo import DEMO_CLIENT, DEMO_ORG, DEMO_SANDBOX, DEMO_USER, seed_library
from nextoffer.engine import PropositionRequest
from nextoffer.root import NextOffer
from nextoffer.service.decisions import DecisionCall
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


def import_profiles(db_url, path, *, org=DEMO_ORG, sandbox=DEMO_SANDBOX):
    return CliRunner().invoke(
        main, ["import", "profiles", str(path), "--db", db_url, "--org", org, "--sandbox", sandbox]
    )


def first_option(result):
    """The first proposed option's id (stdout holds only the response; stderr the notes)."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["xdm:propositions"][0]["xdm:options"][0]["xdm:id"]


def test_decide_picks_by_profile_and_explains(demo, tmp_path):
    _, _, ids = demo
    gold = decide(demo, tmp_path, {"loyalty": {"tier": "gold"}})
    assert first_option(gold) == ids["gold_offer"]
    assert "decide: read --profile as bare profile attributes" in gold.stderr
    other = decide(demo, tmp_path, {"loyalty": {"tier": "bronze"}}, "--explain")
    body = json.loads(other.stdout)["xdm:propositions"][0]
    assert body["xdm:options"][0]["xdm:id"] == ids["holiday_offer"]
    reasons = {c["offerId"]: c["reason"] for c in body["nextoffer:explain"]["candidates"]}
    assert reasons[ids["gold_offer"]] == "ruleFalse"


def test_decide_reads_the_form_import_profiles_reads(demo, tmp_path):
    db_url, _, ids = demo
    document = {
        "identityMap": {"Email": [{"id": "gold@x"}]},
        "profile": {"loyalty": {"tier": "gold"}},
    }
    # The gold offer's rule reads loyalty.tier: it is found only inside "profile".
    result = decide(demo, tmp_path, document)
    assert first_option(result) == ids["gold_offer"]
    assert "decide: read --profile as {identityMap, profile}" in result.stderr
    assert "bare" not in result.stderr
    # The very same object is a line `import profiles` loads.
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(document) + "\n")
    loaded = import_profiles(db_url, path)
    assert loaded.exit_code == 0, loaded.output
    assert "1 profiles loaded, 0 lines rejected" in loaded.stdout
    # Either member alone is still that form: no identityMap, or no attributes.
    only_profile = decide(demo, tmp_path, {"profile": {"loyalty": {"tier": "gold"}}})
    assert first_option(only_profile) == ids["gold_offer"]
    assert "as {identityMap, profile}" in only_profile.stderr
    only_identities = decide(demo, tmp_path, {"identityMap": {"Email": [{"id": "gold@x"}]}})
    assert first_option(only_identities) == ids["holiday_offer"]
    assert "as {identityMap, profile}" in only_identities.stderr


def test_decide_reads_the_caps_of_the_person_the_identity_map_names(demo, tmp_path):
    db_url, container, ids = demo
    gold = {"Email": [{"id": "gold@x"}]}
    with NextOffer.open(Settings(db_url=db_url)) as no:
        creds = no.bootstrap(
            org=DEMO_ORG, sandbox=DEMO_SANDBOX, client_id=DEMO_CLIENT, user=DEMO_USER
        )
        no.profiles.upsert(
            creds.principal, {"identityMap": gold, "profile": {"loyalty": {"tier": "gold"}}}
        )
        call = DecisionCall(
            propositions=(PropositionRequest(ids["decision"], ids["placement"]),),
            identities=(("Email", "gold@x"),),
        )
        # The gold offer's profileCap is 3: three recorded decisions use it up for gold@x.
        for _ in range(3):
            outcome = no.decide(creds.principal, container, call)
            assert outcome.result.propositions[0].options[0].offer_id == ids["gold_offer"]
    attributes = {"loyalty": {"tier": "gold"}}
    person = decide(demo, tmp_path, {"identityMap": gold, "profile": attributes})
    assert first_option(person) == ids["holiday_offer"]
    # Bare attributes are an anonymous visitor, whose cap is untouched.
    anonymous = decide(demo, tmp_path, attributes)
    assert first_option(anonymous) == ids["gold_offer"]


@pytest.mark.parametrize(
    "profile",
    [
        # XDM profiles carry an identityMap among their attributes: another member makes
        # the object bare attributes, read whole.
        {"identityMap": {"Email": [{"id": "gold@x"}]}, "loyalty": {"tier": "gold"}},
        # "profile" that is not an object is an attribute like any other.
        {"profile": "gold", "loyalty": {"tier": "gold"}},
        {"profile": ["x"]},
        {},
    ],
)
def test_decide_reads_any_other_object_as_bare_attributes(demo, tmp_path, profile):
    _, _, ids = demo
    result = decide(demo, tmp_path, profile)
    expected = ids["gold_offer"] if "loyalty" in profile else ids["holiday_offer"]
    assert first_option(result) == expected
    assert "decide: read --profile as bare profile attributes" in result.stderr


def test_decide_refuses_a_bad_identity_map_and_a_profile_that_is_no_object(demo, tmp_path):
    bad = decide(demo, tmp_path, {"identityMap": {"Email": []}, "profile": {}})
    assert bad.exit_code == 2
    assert "error: --profile /identityMap/Email: " in bad.stderr
    assert bad.stdout == ""
    array = decide(demo, tmp_path, [{"loyalty": {"tier": "gold"}}])
    assert array.exit_code == 2
    assert "error: --profile must hold a JSON object" in array.stderr


def test_decide_help_states_how_the_profile_forms_are_told_apart():
    text = " ".join(CliRunner().invoke(main, ["decide", "--help"]).stdout.split())
    assert "only members are identityMap and/or profile, with profile an object" in text
    assert "any other object as bare attributes" in text


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
        # read as a float, its digits lost, if it were kept
        json.dumps({"identityMap": {"Email": [{"id": "c@x"}]}, "profile": {"n": 2**70}}),
    ]
    path = tmp_path / "profiles.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = import_profiles(db_url, path)
    assert result.exit_code == 1
    assert "2 profiles loaded, 3 lines rejected" in result.output
    assert "line 2, column 2: " in result.output and "line 3:" in result.output
    assert "line 6: an integer past 64 bits" in result.output and "(at /profile/n)" in result.output
    store = Store.open(db_url)
    with store.session() as session:
        assert session.runtime.find_profile_id(DEMO_ORG, DEMO_SANDBOX, "Email", "a@x") is not None
        assert session.runtime.find_profile_id(DEMO_ORG, DEMO_SANDBOX, "Email", "b@x") is not None
    store.close()


def test_import_into_a_missing_sandbox_is_refused(demo, tmp_path):
    db_url, _, _ = demo
    path = tmp_path / "p.jsonl"
    path.write_text("{}\n")
    result = import_profiles(db_url, path, org="NOPE", sandbox="x")
    assert result.exit_code == 4


def profile_line(identity: str) -> str:
    return json.dumps({"identityMap": {"Email": [{"id": identity}]}, "profile": {"a": 1}})


def found(db_url: str, identity: str) -> bool:
    store = Store.open(db_url)
    try:
        with store.session() as session:
            return (
                session.runtime.find_profile_id(DEMO_ORG, DEMO_SANDBOX, "Email", identity)
                is not None
            )
    finally:
        store.close()


def test_import_profiles_rejects_only_the_line_postgresql_cannot_hold(monkeypatch, tmp_path):
    """PostgreSQL refuses a NUL in text: the batch holding it is written line by line."""
    from nextoffer.cli import importer
    from support.backends import fresh_database

    monkeypatch.setattr(importer, "BATCH", 2)
    with fresh_database() as db_url:
        with NextOffer.open(Settings(db_url=db_url)) as no:
            no.bootstrap(org=DEMO_ORG, sandbox=DEMO_SANDBOX, client_id=DEMO_CLIENT)
        ids = ["a@x", "b\u0000@x", "c@x", "d@x", "e@x"]
        path = tmp_path / "nul.jsonl"
        path.write_text("".join(profile_line(i) + "\n" for i in ids))
        result = import_profiles(db_url, path)
        assert result.exit_code == 1, result.output
        assert "line 2: a value the database cannot hold" in result.stderr
        assert "line 1:" not in result.stderr
        assert result.stdout.strip() == "4 profiles loaded, 1 lines rejected"
        assert [found(db_url, i) for i in ids if "\u0000" not in i] == [True] * 4


def test_import_profiles_rejects_only_the_line_the_database_refuses(demo, tmp_path, monkeypatch):
    """The same on SQLite, whose refusal is made here: a value it cannot hold."""
    import sqlite3

    from nextoffer.cli import importer
    from nextoffer.service.profiles import Profiles

    db_url, _, _ = demo
    monkeypatch.setattr(importer, "BATCH", 3)
    upsert_many = Profiles.upsert_many

    def refusing(self, principal, bodies):
        if any(b["identityMap"]["Email"][0]["id"] == "poison@x" for b in bodies):
            with self._store.session(write=True):
                raise sqlite3.DataError("string or blob too big")
        return upsert_many(self, principal, bodies)

    monkeypatch.setattr(Profiles, "upsert_many", refusing)
    ids = ["a@x", "b@x", "c@x", "d@x", "poison@x", "f@x", "g@x"]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(profile_line(i) + "\n" for i in ids))
    result = import_profiles(db_url, path)
    assert result.exit_code == 1, result.output
    assert "line 5: a value the database cannot hold: string or blob too big" in result.stderr
    assert result.stdout.strip() == "6 profiles loaded, 1 lines rejected"
    assert [found(db_url, i) for i in ids] == [True, True, True, True, False, True, True]


def test_import_profiles_stopped_by_an_outage_says_where_and_how_many_were_loaded(
    demo, tmp_path, monkeypatch
):
    import sqlite3

    from nextoffer.cli import importer
    from nextoffer.service.profiles import Profiles

    db_url, _, _ = demo
    monkeypatch.setattr(importer, "BATCH", 2)
    upsert_many = Profiles.upsert_many
    calls: list[int] = []

    def locked_on_the_third(self, principal, bodies):
        calls.append(1)
        if len(calls) == 3:
            with self._store.session(write=True):
                raise sqlite3.OperationalError("database is locked")
        return upsert_many(self, principal, bodies)

    monkeypatch.setattr(Profiles, "upsert_many", locked_on_the_third)
    lines = [profile_line("a@x"), "{oops", profile_line("b@x"), profile_line("c@x")]
    lines += [profile_line("d@x"), profile_line("e@x"), profile_line("f@x")]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = import_profiles(db_url, path)
    assert result.exit_code == 6, result.output
    assert result.stderr.strip().endswith(
        "error: the database is unavailable: database is locked; stopped at line 6 of "
        f"{path}: 4 profiles were loaded before it, 1 lines rejected. Profiles are upserted: "
        "running the same file again is safe"
    )
    assert result.stdout == ""
    assert [found(db_url, i) for i in ("a@x", "b@x", "c@x", "d@x", "e@x")] == [True] * 4 + [False]


def refused(result, exit_code: int = 2) -> str:
    """The one ``error:`` line of a refused command (no traceback, nothing on stdout)."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def test_decide_refuses_input_that_is_not_utf8_naming_the_option_file_and_byte(demo, tmp_path):
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"name": "Zoë"}'.encode("latin-1"))
    as_profile = decide(demo, tmp_path, {}, "--profile", str(latin1))
    assert refused(as_profile) == (
        f"error: --profile {latin1} is not UTF-8 text (byte 0xeb at offset 12)"
    )
    events = tmp_path / "events.json"
    events.write_bytes(b'[{"x": "\xff"}]')
    as_events = decide(demo, tmp_path, {}, "--events", str(events))
    assert refused(as_events) == (
        f"error: --events {events} is not UTF-8 text (byte 0xff at offset 8)"
    )


def test_decide_refuses_a_profile_nested_too_deeply(demo, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": ' * 100_000 + "1" + "}" * 100_000)
    result = decide(demo, tmp_path, {}, "--profile", str(deep))
    assert refused(result) == f"error: --profile {deep} is nested too deeply to be read"


def test_decide_names_the_option_and_file_of_the_wrong_shape(demo, tmp_path):
    an_object = tmp_path / "object.json"
    an_object.write_text('{"a": 1}')
    an_array = tmp_path / "array.json"
    an_array.write_text("[1]")
    events = decide(demo, tmp_path, {}, "--events", str(an_object))
    assert refused(events) == f"error: --events {an_object} must hold a JSON array"
    context = decide(demo, tmp_path, {}, "--context", str(an_array))
    assert refused(context) == f"error: --context {an_array} must hold a JSON object"
    both_right = decide(demo, tmp_path, {}, "--events", str(an_array), "--context", str(an_object))
    assert both_right.exit_code == 0, both_right.output


def test_import_profiles_names_the_column_of_bad_json_and_text_that_is_not_utf8(demo, tmp_path):
    db_url, _, _ = demo
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        profile_line("a@x").encode()
        + b'\n{"a": 1\n{"profile": {"name": "\xff"}}\n{"a" 1}\n'
        + profile_line("b@x").encode()
        + b"\n"
    )
    result = import_profiles(db_url, path)
    assert result.exit_code == 1, result.output
    problems = [line for line in result.stderr.splitlines() if line.startswith("line ")]
    assert problems == [
        "line 2, column 8: unexpected end of data",
        "line 3: not UTF-8 text (byte 0xff at offset 22)",
        "line 4, column 6: unexpected character, expected ':' after key",
    ]
    assert result.stdout.strip() == "2 profiles loaded, 3 lines rejected"

"""``nextoffer pql check`` / ``eval`` through click's runner on the ``pql`` group."""

from __future__ import annotations

import json

from click.testing import CliRunner

from nextoffer.cli.pql import pql


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(pql, list(args), input=stdin)


def test_check_valid_rule_prints_ok_and_exits_zero(tmp_path):
    rule = tmp_path / "rule.pql"
    rule.write_text('homeAddress.countryISO = "CA" and person.birthYear > 1980\n')
    result = run("check", str(rule))
    assert result.exit_code == 0
    assert result.output.strip() == "ok"


def test_check_invalid_rule_exits_2_with_caret_under_the_column():
    result = run("check", "-", stdin="person.name.fake()")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert "unsupported function 'fake'" in lines[0]
    assert lines[1].strip() == "person.name.fake()"
    # the caret sits under the "f" of "fake" (column 13)
    assert lines[2].index("^") - lines[1].index("p") == 12


def test_check_formula_kind_enforces_the_8_kb_limit():
    big = "[" + ", ".join(str(i) for i in range(2000)) + "].count()"  # about 10 KB
    assert 8_000 < len(big) < 15_000
    assert run("check", "-", "--kind", "rule", stdin=big).exit_code == 0
    result = run("check", "-", "--kind", "formula", stdin=big)
    assert result.exit_code == 2
    assert "limit is 8000 bytes" in result.output


def test_check_json_format():
    doc = {
        "nodeType": "fnApply",
        "fnName": "=",
        "params": [
            {"nodeType": "fieldLookup", "fieldName": "city"},
            {"nodeType": "literal", "value": "DDN"},
        ],
    }
    result = run("check", "-", "--format", "pql/json", stdin=json.dumps(doc))
    assert result.exit_code == 0, result.output


def test_eval_prints_the_value_as_json(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"person": {"birthYear": 1985}}))
    offer = tmp_path / "vars.json"
    offer.write_text(json.dumps({"offer": {"rank": {"priority": 10}}}))
    result = run(
        "eval",
        "--profile",
        str(profile),
        "--vars",
        str(offer),
        "if(person.birthYear > 1980, offer.rank.priority * 2, 0)",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == 20


def test_eval_with_events_and_now(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text("{}")
    events = tmp_path / "e.json"
    events.write_text(json.dumps([{"timestamp": "2024-06-14T10:00:00Z"}]))
    result = run(
        "eval",
        "--profile",
        str(profile),
        "--events",
        str(events),
        "--now",
        "2024-06-15T10:00:00Z",
        "select X from xEvent where X.timestamp occurs yesterday",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) is True


def test_eval_bad_rule_exits_2(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text("{}")
    result = run("eval", "--profile", str(profile), "a = ")
    assert result.exit_code == 2
    assert "^" in result.output


def test_eval_rejects_a_profile_that_is_not_json(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text("{not json")
    result = run("eval", "--profile", str(profile), "true")
    assert result.exit_code == 2
    assert "not valid JSON" in result.output

"""``nextoffer pql check`` / ``eval`` through click's runner (the ``nextoffer`` group,
whose errors are one ``error:`` line)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nextoffer.cli import main


def run(*args: str, stdin: str | bytes | None = None):
    return CliRunner().invoke(main, ["pql", *args], input=stdin)


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


def error_line(result) -> str:
    """The one ``error:`` line of a command refused with exit code 2 (no traceback)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_check_refuses_input_that_is_not_utf8_naming_the_byte(tmp_path):
    piped = run("check", "-", stdin=b'a = "\xff"')
    assert error_line(piped) == "error: standard input is not UTF-8 text (byte 0xff at offset 5)"
    rule = tmp_path / "latin1.pql"
    rule.write_bytes('name = "Zoë"'.encode("latin-1"))
    assert error_line(run("check", str(rule))) == (
        f"error: {rule} is not UTF-8 text (byte 0xeb at offset 10)"
    )


def test_eval_refuses_a_profile_that_is_not_utf8_or_nested_too_deeply(tmp_path):
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"name": "Zoë"}'.encode("latin-1"))
    result = run("eval", "--profile", str(latin1), "true")
    assert error_line(result) == (
        f"error: --profile {latin1} is not UTF-8 text (byte 0xeb at offset 12)"
    )
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = run("eval", "--profile", str(deep), "true")
    assert error_line(result) == f"error: --profile {deep} is nested too deeply to be read"


@pytest.mark.parametrize(
    ("option", "value", "must"),
    [
        ("--profile", [{"age": 3}], "a JSON object"),
        ("--profile", "age", "a JSON object"),
        ("--events", {"timestamp": "2024-06-14T10:00:00Z"}, "a JSON array"),
        ("--context", [1], "a JSON object"),
        ("--vars", [1], "a JSON object"),
    ],
)
def test_eval_refuses_json_of_the_wrong_shape_as_decide_does(tmp_path, option, value, must):
    profile = tmp_path / "p.json"
    profile.write_text("{}")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(value))
    args = ["--profile", str(profile)] if option != "--profile" else []
    result = run("eval", *args, option, str(wrong), "true")
    assert error_line(result) == f"error: {option} {wrong} must hold {must}"


@pytest.mark.parametrize("now", ["yesterday", "2024-13-45T00:00:00Z", "99999-01-02T00:00:00Z"])
def test_eval_refuses_a_now_that_is_no_date_time_even_when_the_rule_reads_no_time(tmp_path, now):
    profile = tmp_path / "p.json"
    profile.write_text('{"age": 30}')
    result = run("eval", "--profile", str(profile), "--now", now, "age > 1")
    assert error_line(result) == (
        f"error: --now {now!r} is not a date-time: give RFC 3339, e.g. 2024-06-15T10:00:00Z"
    )

"""``nextoffer import library``: a library exported as GET answers it, imported elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from nextoffer.cli import main
from nextoffer.cli.demo import DEMO_CLIENT, DEMO_ORG, DEMO_SANDBOX, DEMO_USER, seed_library
from nextoffer.repository import hal
from nextoffer.root import NextOffer
from nextoffer.settings import Settings

OFFERS_FIRST = ("offer-placement", "eligibility-rule", "personalized-offer", "fallback-offer")


def open_demo(db_url: str) -> tuple[NextOffer, str]:
    no = NextOffer.open(Settings(db_url=db_url))
    creds = no.bootstrap(org=DEMO_ORG, sandbox=DEMO_SANDBOX, client_id=DEMO_CLIENT, user=DEMO_USER)
    return no, creds.container_id


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, dict[str, str], list[dict]]:
    """The demo library as JSON lines of GET resources, its @ids, and the lines."""
    no, container = open_demo(f"sqlite:///{tmp_path / 'source.db'}")
    with no:
        ids = seed_library(
            no.repository, no.bootstrap(org=DEMO_ORG, sandbox=DEMO_SANDBOX).principal, container
        )
        with no.store.session() as session:
            records = session.all_instances(container)
    lines = [hal.resource(r, sandbox=DEMO_SANDBOX) for r in records]
    lines.reverse()  # any order: references may point forward
    path = tmp_path / "library.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path, ids, lines


def bootstrapped(tmp_path: Path) -> str:
    """A new database with the demo tenant (``nextoffer admin bootstrap``) and no library."""
    db_url = f"sqlite:///{tmp_path / 'target.db'}"
    open_demo(db_url)[0].close()
    return db_url


def run(db_url: str, path: Path, *extra: str):
    return CliRunner().invoke(
        main,
        [
            "import",
            "library",
            str(path),
            "--db",
            db_url,
            "--org",
            DEMO_ORG,
            "--sandbox",
            DEMO_SANDBOX,
            *extra,
        ],
    )


def instances(db_url: str) -> dict[str, dict]:
    no, container = open_demo(db_url)
    with no, no.store.session() as session:
        return {r.at_id: r.body for r in session.all_instances(container)}


def decide_gold(db_url: str, ids: dict[str, str], tmp_path: Path) -> str:
    profile = tmp_path / "gold.json"
    profile.write_text(json.dumps({"loyalty": {"tier": "gold"}}))
    no, container = open_demo(db_url)
    no.close()
    result = CliRunner().invoke(
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
            str(profile),
        ],
    )
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["xdm:propositions"][0]["xdm:options"][0]["xdm:id"])


def test_ids_kept_the_imported_library_decides_like_the_original(exported, tmp_path):
    path, ids, lines = exported
    source = f"sqlite:///{tmp_path / 'source.db'}"
    target = bootstrapped(tmp_path)
    result = run(target, path)
    assert result.exit_code == 0, result.output
    assert f"{len(lines)} instances imported" in result.output
    assert instances(target) == instances(source)
    assert (
        decide_gold(target, ids, tmp_path)
        == decide_gold(source, ids, tmp_path)
        == ids["gold_offer"]
    )


def test_new_ids_rewrite_every_reference_and_may_import_the_library_twice(exported, tmp_path):
    path, ids, lines = exported
    source = f"sqlite:///{tmp_path / 'source.db'}"
    assert run(source, path).exit_code == 2  # the same @ids already exist there
    result = run(source, path, "--new-ids")
    assert result.exit_code == 0, result.output
    stored = instances(source)
    assert len(stored) == 2 * len(lines)
    copies = {at_id: body for at_id, body in stored.items() if at_id not in set(ids.values())}
    originals = set(instances(source)) - set(copies)
    decision = next(b for a, b in copies.items() if a.startswith("xcore:offer-activity:"))
    referenced = json.dumps(decision)
    assert not any(original in referenced for original in originals)
    filters = [c["xdm:optionSelection"]["xdm:filter"] for c in decision["xdm:criteria"]]
    assert filters and all(f in copies for f in filters)


def test_a_missing_reference_is_reported_with_its_line_and_nothing_is_stored(exported, tmp_path):
    _, _, lines = exported
    kept = [line for line in lines if "eligibility-rule" not in line["schemas"][0]]
    assert len(kept) < len(lines)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in kept))
    target = bootstrapped(tmp_path)
    result = run(target, broken)
    assert result.exit_code == 2, result.output
    assert "nothing was imported" in result.output
    assert "does not exist in this container" in result.output
    offer_line = next(
        n
        for n, line in enumerate(kept, start=1)
        if "xdm:eligibilityRule"
        in json.dumps(line.get("_instance", {}).get("xdm:selectionConstraint", {}))
    )
    assert f"line {offer_line}: /xdm:selectionConstraint/xdm:eligibilityRule" in result.output
    assert instances(target) == {}


def test_an_unreadable_line_is_reported_and_nothing_is_stored(exported, tmp_path):
    path, _, lines = exported
    bad = tmp_path / "bad.jsonl"
    long_integer = b'{"schemas": ["x"], "_instance": {"n": 123456789012345678901234567890}}'
    bad.write_bytes(
        path.read_bytes() + b'{"schemas": ["nope"], "_instance": {}}\n{oops\n' + long_integer
    )
    target = bootstrapped(tmp_path)
    result = run(target, bad)
    assert result.exit_code == 2, result.output
    assert f"line {len(lines) + 1}: schema: unknown schema 'nope'" in result.output
    assert f"line {len(lines) + 2}, column 2: " in result.output
    assert f"line {len(lines) + 3}: an integer past 64 bits" in result.output
    assert instances(target) == {}


def test_checked_in_worker_processes_the_import_stores_the_same_library(
    exported, tmp_path, monkeypatch
):
    from nextoffer.cli import library_import
    from nextoffer.service.compiled_rules import CompiledRules

    monkeypatch.setattr(library_import, "PARALLEL_FROM", 1)  # the demo library is small
    checked: list[int] = []

    class Spied(library_import.ParallelChecks):
        def __call__(self, bodies, progress):
            checked.append(len(bodies))
            return super().__call__(bodies, progress)

    monkeypatch.setattr(library_import, "ParallelChecks", Spied)
    path, ids, lines = exported
    source = f"sqlite:///{tmp_path / 'source.db'}"
    target = bootstrapped(tmp_path)
    result = run(target, path, "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert checked == [len(lines)]  # every body went through the worker processes
    assert instances(target) == instances(source)
    assert decide_gold(target, ids, tmp_path) == ids["gold_offer"]
    # The workers' compiled rules were adopted and saved for the servers.
    rules = [
        line["_instance"]["xdm:condition"]["xdm:value"]
        for line in lines
        if "eligibility-rule" in line["schemas"][0]
    ]
    assert rules
    cache = CompiledRules(tmp_path / "compiled-rules")
    assert all(cache.known(rule) for rule in rules)

    # Imported again (as a copy), every rule is known: nothing is sent to a worker.
    def no_workers(*args, **kwargs):
        raise AssertionError("a worker pool was started for rules already compiled")

    monkeypatch.setattr("nextoffer.service.body_checks.ProcessPoolExecutor", no_workers)
    again = run(target, path, "--jobs", "2", "--new-ids")
    assert again.exit_code == 0, again.output
    assert len(instances(target)) == 2 * len(lines)


def test_problems_found_by_worker_processes_name_their_lines_and_nothing_is_stored(
    exported, tmp_path, monkeypatch
):
    from nextoffer.cli import library_import

    monkeypatch.setattr(library_import, "PARALLEL_FROM", 1)
    monkeypatch.setattr("nextoffer.service.body_checks.SLICE", 2)  # several slices
    _, _, lines = exported
    broken = [json.loads(json.dumps(line)) for line in lines]
    rule_lines = [n for n, line in enumerate(broken) if "eligibility-rule" in line["schemas"][0]]
    last = rule_lines[-1]
    broken[last]["_instance"]["xdm:condition"]["xdm:value"] = "age >"  # not PQL
    # and a line without a rule before it (checked by the importing process itself)
    first = next(n for n in range(last) if n not in rule_lines)
    broken[first]["_instance"]["xdm:name"] = 5
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in broken))
    target = bootstrapped(tmp_path)
    result = run(target, path, "--jobs", "2")
    assert result.exit_code == 2, result.output
    assert "nothing was imported" in result.output
    assert f"line {last + 1}: /xdm:condition/xdm:value" in result.output
    assert f"line {first + 1}: /xdm:name" in result.output
    # in the file's order, wherever each was found
    assert result.output.index(f"line {first + 1}:") < result.output.index(f"line {last + 1}:")
    assert instances(target) == {}


@pytest.mark.parametrize("chunk", ["0", "-5"])
def test_a_chunk_below_one_is_refused_before_anything_is_read(exported, tmp_path, chunk):
    path, _, _ = exported
    target = bootstrapped(tmp_path)
    result = run(target, path, "--chunk", chunk)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--chunk'" in result.output
    assert f"{chunk} is not in the range x>=1" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert instances(target) == {}


def test_a_database_failing_after_a_chunk_says_how_many_were_imported_and_how_to_finish(
    exported, tmp_path, monkeypatch
):
    import sqlite3

    from nextoffer.service.repository import Repository

    path, _, lines = exported
    source = f"sqlite:///{tmp_path / 'source.db'}"
    target = bootstrapped(tmp_path)
    write_chunk = Repository._write_chunk
    calls: list[int] = []

    def locked_on_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first chunk is committed; the database is locked now
            with self._store.session(write=True):
                raise sqlite3.OperationalError("database is locked")
        return write_chunk(self, *args, **kwargs)

    monkeypatch.setattr(Repository, "_write_chunk", locked_on_the_second)
    result = run(target, path, "--chunk", "3")
    assert result.exit_code == 6, result.output  # Unavailable's exit code
    message = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert message.startswith("error: the database is unavailable: database is locked; ")
    assert f"3 of {len(lines)} instances were imported (the lines up to line 3 of {path})" in (
        message
    )
    assert f"import the lines from line 4 on to finish (e.g. tail -n +4 {path}" in message
    assert len(instances(target)) == 3
    # Doing what it says finishes the import: the library is the original's.
    monkeypatch.setattr(Repository, "_write_chunk", write_chunk)
    rest = tmp_path / "rest.jsonl"
    rest.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[3:]))
    finished = run(target, rest)
    assert finished.exit_code == 0, finished.output
    assert instances(target) == instances(source)


def test_a_conflict_after_a_chunk_with_new_ids_says_a_rerun_imports_a_copy(
    exported, tmp_path, monkeypatch
):
    from nextoffer.errors import Conflict
    from nextoffer.service.repository import Repository

    path, _, lines = exported
    target = bootstrapped(tmp_path)
    write_chunk = Repository._write_chunk
    calls: list[int] = []

    def gone_on_the_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Conflict(f"x was deleted while it ran; 4 of {len(lines)} instances were imported")
        return write_chunk(self, *args, **kwargs)

    monkeypatch.setattr(Repository, "_write_chunk", gone_on_the_third)
    result = run(target, path, "--chunk", "2", "--new-ids")
    assert result.exit_code == 5, result.output
    message = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert message.count("were imported") == 1  # the write's own count, not said twice
    assert f"(the lines up to line 4 of {path}) with new @ids" in message
    assert "would import every line again, as another copy" in message
    assert len(instances(target)) == 4


def test_progress_goes_to_stderr_and_stdout_holds_only_the_result(exported, tmp_path):
    path, _, lines = exported
    target = bootstrapped(tmp_path)
    result = run(target, path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{len(lines)} instances imported into ")
    assert result.stdout.count("\n") == 1
    assert "written" in result.stderr and "checked" in result.stderr


def test_problems_are_listed_in_the_order_of_their_lines(exported, tmp_path):
    _, _, lines = exported
    broken = [json.loads(json.dumps(line)) for line in lines]
    # Found first: line 6's @id is line 1's (the ids are checked before the bodies) ...
    broken[5]["_instance"]["@id"] = broken[0]["_instance"]["@id"]
    broken[5]["schemas"] = broken[0]["schemas"]
    # ... found next: line 2's name is no string.
    broken[1]["_instance"]["xdm:name"] = 5
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in broken))
    result = run(bootstrapped(tmp_path), path)
    assert result.exit_code == 2, result.output
    listed = [line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("line")]
    assert listed[0] == "line 2" and "line 6" in listed, result.stderr
    assert listed == sorted(listed, key=lambda where: int(where.split()[1]))


def test_an_unreadable_line_names_its_column_or_that_it_is_not_utf8(exported, tmp_path):
    path, _, lines = exported
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(path.read_bytes() + b'{"schemas": ["x"]\n{"schema": "\xe9"}\n')
    result = run(bootstrapped(tmp_path), bad)
    assert result.exit_code == 2, result.output
    assert f"line {len(lines) + 1}, column 18: unexpected end of data" in result.stderr
    assert f"line {len(lines) + 2}: not UTF-8 text (byte 0xe9 at offset 12)" in result.stderr

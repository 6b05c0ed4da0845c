"""The user docs (README.md and docs/*.md) stay true to the code: every ``nextoffer``
command and flag they name exists, every ``NEXTOFFER_*`` variable they name is a setting
(and deploy.md's table gives its real default), every message the PQL compiler can raise
is listed in docs/pql.md, the PQL they show compiles or fails as they say, and the JSON
excerpts of docs/api.md are what the API answers or accepts.

docs/benchmarks.md is left out: it records past runs, with the flags and variables of
their day. CHANGES.md is history too."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from starlette.testclient import TestClient

from nextoffer import pql
from nextoffer.api.app import create_app
from nextoffer.cli import main
from nextoffer.cli.demo import seed_demo
from nextoffer.engine.diagnostics import CatalogErrorKind
from nextoffer.engine.explain import Reason
from nextoffer.errors import BadRequest, NextOfferError, PQLError
from nextoffer.pql import messages
from nextoffer.service.profile_cache import DEFAULT_PROFILE_CACHE_MB
from nextoffer.settings import Settings
from support.api import make_tenant

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").glob("*.md") if path.name != "benchmarks.md"),
]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def shell(text: str) -> list[str]:
    """The command lines a Markdown text may show: each line of its shell (or unlabelled)
    blocks, and each inline span (one that wraps across lines read as one line) that is not
    a Python import."""
    found = [
        line
        for block in _FENCE.finditer(text)
        if block.group(1) in ("", "sh")
        for line in block.group(2).splitlines()
    ]
    prose = _FENCE.sub("", text)
    spans = [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    return found + [span for span in spans if not span.startswith(("from ", "import "))]


def fenced(path: Path, language: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(path.read_text()) if m.group(1) == language]


def fenced_starting(doc: str, starting: str) -> str:
    """The one JSON block of docs/<doc> that starts with ``starting``."""
    blocks = [b for b in fenced(ROOT / "docs" / doc, "json") if b.startswith(starting)]
    assert len(blocks) == 1, starting
    return blocks[0]


# -- references to a doc's sections ---------------------------------------------------------

#: `docs/deploy.md, "Retention"`, `(docs/api.md, "Guardrails")`, `design.md "…"`.
_SECTION_REFERENCE = re.compile(r'(?<![\w/.-])(docs/)?([A-Za-z]+)\.md\)?,? (?:section )?"([^"]+)"')


def _plain(title: str) -> str:
    return re.sub(r"\W+", " ", title).strip().lower()


def sections(doc: Path) -> set[str]:
    """A doc's headings and the bold or italic words that open its paragraphs."""
    text = doc.read_text()
    found = re.findall(r"^#+ (.+)$", text, re.M)
    found += re.findall(r"\*\*([^*]+)\*\*", text)
    found += re.findall(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])", text)
    return {_plain(title) for title in found}


def section_references(path: Path) -> Iterator[tuple[Path, str]]:
    """(the doc, the section) of each reference in ``path`` to a section of a doc of ours."""
    for match in _SECTION_REFERENCE.finditer(" ".join(path.read_text().split())):
        prefix, name, section = match.groups()
        doc = ROOT / ("docs" if prefix or name.islower() else "") / f"{name}.md"
        if doc.exists():
            yield doc, section


def names_a_section(doc: Path, section: str) -> bool:
    """Whether ``section`` is a heading or lead-in of ``doc``, whole or shortened."""
    wanted = _plain(section)
    return any(
        title and (title.startswith(wanted) or wanted.startswith(title)) for title in sections(doc)
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_section_a_doc_refers_to_is_there(doc: Path) -> None:
    wrong = [(d.name, s) for d, s in section_references(doc) if not names_a_section(d, s)]
    assert wrong == []


def test_every_section_the_code_refers_to_is_there() -> None:
    named = [
        (path.relative_to(ROOT), doc, section)
        for path in sorted((ROOT / "src").rglob("*.py"))
        for doc, section in section_references(path)
    ]
    assert len(named) > 10
    assert [(p, d.name, s) for p, d, s in named if not names_a_section(d, s)] == []


# -- commands and flags ----------------------------------------------------------------

#: ``nextoffer`` and what follows it, or a command line written without it
#: (`admin bootstrap --json`), up to the next ``nextoffer``.
_NAMES = "|".join(main.list_commands(click.Context(main)))
_COMMAND = re.compile(rf"nextoffer ((?:(?!nextoffer ).)*)|^((?:{_NAMES}) .*)")


def commands_named(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(the command line as written, its words) for each command line the doc shows."""
    for snippet in shell(path.read_text()):
        for match in _COMMAND.finditer(snippet.strip()):
            written = match.group(1) or match.group(2)
            yield written, written.split()


def check_command(words: list[str]) -> list[str]:
    """What is wrong with ``nextoffer <words>``: an unknown command or flag."""
    ctx = click.Context(main)
    command: click.Command = main
    rest = list(words)
    while isinstance(command, click.Group) and rest:
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            break
        command, rest = sub, rest[1:]
    if command is main:
        return []  # "nextoffer" followed by prose, not a command
    problems = []
    if isinstance(command, click.Group) and rest and re.fullmatch(r"[a-z][a-z-]+", rest[0]):
        problems.append(f"no command {rest[0]!r} in `{command.name}`")
    flags = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", " ".join(rest)):
        if flag not in flags | {"--help"}:
            problems.append(f"no flag {flag} on `{command.name}`")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_and_flag_the_docs_name_exists(doc: Path) -> None:
    wrong = {
        written: problems
        for written, words in commands_named(doc)
        if (problems := check_command(words))
    }
    assert not wrong, wrong


def test_the_command_check_finds_a_wrong_flag_and_a_wrong_command() -> None:
    assert check_command(["serve", "--demo", "--port", "8081"]) == []
    assert check_command(["db", "downgrade", "--to", "base", "--yes"]) == []
    assert check_command(["serve", "--nonsense"]) == ["no flag --nonsense on `serve`"]
    assert check_command(["admin", "bootstap"]) == ["no command 'bootstap' in `admin`"]


# -- endpoints ---------------------------------------------------------------------------

_OPENAPI = json.loads((ROOT / "src/nextoffer/api/openapi.json").read_text())
_ROUTES = [
    (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), {m.upper() for m in methods})
    for path, methods in _OPENAPI["paths"].items()
]
_VERBS = "GET|POST|PUT|PATCH|DELETE|OPTIONS"


def endpoints_named(path: Path) -> Iterator[tuple[list[str], str]]:
    """(methods, path) for each `METHOD /path` the doc writes (`GET`, `PATCH`, `DELETE
    /p/{id}` too); a path's query and optional parts (`[/{id}]`) are read both ways."""
    for match in re.finditer(rf"`((?:(?:{_VERBS})`?,? `?)+)(/[^`\s]*)`", path.read_text()):
        methods = re.findall(_VERBS, match.group(1))
        written = re.split(r"\[?\?", match.group(2))[0]
        for variant in {re.sub(r"\[[^\]]*\]", "", written), re.sub(r"[\[\]]", "", written)}:
            yield methods, variant


def served(methods: list[str], path: str) -> bool:
    concrete = re.sub(r"\{[^}]*\}", "x1", path)
    offered = {m for pattern, verbs in _ROUTES if pattern.match(concrete) for m in verbs}
    return set(methods) <= offered


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_endpoint_the_docs_name_is_served_with_that_method(doc: Path) -> None:
    named = list(endpoints_named(doc))
    assert [(m, p) for m, p in named if not served(m, p)] == []


def test_the_endpoint_check_knows_a_route_from_a_made_up_one() -> None:
    assert served(["GET", "DELETE"], "/data/core/xcore/{C}/instances/{I}")
    assert not served(["PUT"], "/data/core/ods/decisions")
    assert not served(["GET"], "/data/core/xcore/{C}/nonsense")
    assert len(list(endpoints_named(ROOT / "docs" / "api.md"))) > 40


def error_classes(base: type[NextOfferError] = NextOfferError) -> Iterator[type[NextOfferError]]:
    yield base
    for sub in base.__subclasses__():
        yield from error_classes(sub)


def test_deploy_md_gives_every_exit_code_a_command_can_end_with() -> None:
    text = " ".join((ROOT / "docs" / "deploy.md").read_text().split())
    paragraph = text.split("**When a command fails**", 1)[1].split("**", 1)[0]
    documented = {int(n) for n in re.findall(r"(?<![\w.])(\d) (?:for|when)", paragraph)}
    assert documented == {cls.exit_code for cls in error_classes()} | {2}  # 2: click's usage


# -- environment variables ---------------------------------------------------------------

#: Values to try on a variable: one of them changes the settings it is read into, or is
#: refused naming it.
_TRIES = ("1", "0", "off", "7", "FULL", "s3://bucket/folder", "nonsense")


def is_a_setting(variable: str) -> bool:
    """Whether ``Settings.from_env`` reads ``variable``."""
    plain = Settings.from_env({})
    for value in _TRIES:
        try:
            if Settings.from_env({variable: value}) != plain:
                return True
        except BadRequest as refused:
            if variable in str(refused):
                return True
    return False


def variables_named(path: Path) -> set[str]:
    # a name ending in "_" is a family (`NEXTOFFER_S3_*`), named for its members
    return {
        name
        for name in re.findall(r"NEXTOFFER_[A-Z0-9_]+", path.read_text())
        if not name.endswith("_")
    }


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_variable_the_docs_name_is_a_setting(doc: Path) -> None:
    assert not {name for name in variables_named(doc) if not is_a_setting(name)}


def test_the_variable_check_tells_a_setting_from_a_made_up_name() -> None:
    assert is_a_setting("NEXTOFFER_SQLITE_SYNCHRONOUS")  # read beside Settings, refused there
    assert is_a_setting("NEXTOFFER_S3_REGION")
    assert not is_a_setting("NEXTOFFER_PORT")


def settings_table() -> list[dict[str, str]]:
    text = (ROOT / "docs" / "deploy.md").read_text().split("## Settings", 1)[1]
    rows = [line for line in text.strip().split("\n\n", 1)[0].splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    return [
        dict(
            zip(
                header,
                (cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip("|"))),
                strict=True,
            )
        )
        for row in rows[2:]
    ]


def documented_default(cell: str) -> Any:
    """The default as deploy.md writes it: on/off, or its leading number (``0 (for ever)``);
    anything else is not compared here."""
    if cell in ("on", "off") or cell.startswith("on,"):
        return cell.startswith("on")
    number = re.match(r"[\d.]+(?=\s|$)", cell)
    return float(number.group()) if number else None


def test_deploy_md_settings_table_gives_each_variable_its_real_default_and_flags() -> None:
    plain = Settings()
    serve = main.get_command(click.Context(main), "serve")
    assert serve is not None
    serve_flags = {o for param in serve.params for o in (*param.opts, *param.secondary_opts)}
    compared = 0
    for row in settings_table():
        for flag in re.findall(r"--[a-z][a-z-]*", row["flag"]):
            assert flag in serve_flags, row
        variable = row["variable"].strip("`")
        expected = documented_default(row["default"])
        if not variable or expected is None:
            continue
        assert is_a_setting(variable), row
        changed = {name for value in _TRIES for name in _changed_fields(variable, value, plain)}
        for name in changed:
            actual = getattr(plain, name)
            if name == "profile_cache_mb" and actual is None:
                actual = DEFAULT_PROFILE_CACHE_MB
            assert actual == expected, (row, name, actual)
            compared += 1
    assert compared >= 12


def _changed_fields(variable: str, value: str, plain: Settings) -> list[str]:
    try:
        read = Settings.from_env({variable: value})
    except BadRequest:
        return []
    return [
        name
        for name in Settings.__dataclass_fields__
        if getattr(read, name) != getattr(plain, name)
    ]


# -- PQL ---------------------------------------------------------------------------------


def listed_pql_messages() -> set[str]:
    section = (ROOT / "docs" / "pql.md").read_text().split("## Error messages", 1)[1]
    return set(re.findall(r"`([^`]+)`", section.split("\n## ", 1)[0]))


def test_docs_pql_md_lists_every_message_the_compiler_raises() -> None:
    templates = {
        name: value.replace("{{", "{").replace("}}", "}")
        for name, value in vars(messages).items()
        if name.isupper() and isinstance(value, str)
    }
    listed = listed_pql_messages()
    assert {name for name, text in templates.items() if text not in listed} == set()


#: PQL the docs show: (doc, what it writes in backticks, the rule it stands for, its kind,
#: ``None`` when it compiles, else the start of the error the doc says it raises). A doc
#: that stops showing one fails the test: update the list with it.
PQL_EXAMPLES = [
    ("pql.md", "42 = 11", "42 = 11", "formula", None),
    ("pql.md", "homeAddress.countryISO", "homeAddress.countryISO", "rule", None),
    ("pql.md", "orders.sum(order.price)", "orders.sum(order.price)", "formula", None),
    ("pql.md", "a != 1", "a != 1", "rule", None),
    ("pql.md", "not (a = 1)", "not (a = 1)", "rule", None),
    ("pql.md", "1000 = 1000.0", "1000 = 1000.0", "rule", None),
    ("pql.md", "luma.annualIncome", "luma.annualIncome", "rule", None),
    ("pql.md", "person.name occurs before today", "person.name occurs before today", "rule", None),
    ("pql.md", '"x" occurs today', '"x" occurs today', "rule", "the subject of 'occurs' must"),
    ("pql.md", "5 occurs today", "5 occurs today", "rule", "the subject of 'occurs' must"),
    ("pql.md", '“CA"', 'x = “CA"', "rule", "unexpected character '“'"),
    ("pql.md", ".matches(STRING_2})", "x.matches(STRING_2})", "rule", "expected ')', found '}'"),
    ("pql.md", "dayOf", "dayOf(now)", "rule", "unsupported function 'dayOf'"),
    ("pql.md", "inPeriod", "inPeriod(now)", "rule", "unsupported function 'inPeriod'"),
    ("pql.md", "(a+)+", 'x matches "(a+)+"', "rule", "regular expression with nested"),
    ("pql.md", "(a|aa)*", 'x matches "(a|aa)*"', "rule", "regular expression with nested"),
    ("pql.md", "(.*a){9}", 'x matches "(.*a){9}"', "rule", "regular expression with nested"),
    ("pql.md", "(?i)gold", 'x matches "(?i)gold"', "rule", None),
    ("pql.md", ".*!", 'x matches ".*!"', "rule", None),
    (
        "reliability.md",
        'name matches ".*.*.*.*.*.*.*.*.*.*!"',
        'name matches ".*.*.*.*.*.*.*.*.*.*!"',
        "rule",
        "regular expression with more than 4 repeated parts",
    ),
    (
        "reliability.md",
        SLOWEST := "select X from xEvent where X.timestampmestamp occurs before today, I"
        ' from X.productListItems where I.SKU = "PS"',
        SLOWEST,
        "rule",
        None,
    ),
    ("api.md", 'eventType = "commerce.checkout"', 'eventType = "commerce.checkout"', "rule", None),
    ("api.md", 'loyalty.tier = \\"gold\\"', 'loyalty.tier = "gold"', "rule", None),
]


@pytest.mark.parametrize(("doc", "shown", "source", "kind", "error"), PQL_EXAMPLES)
def test_the_pql_the_docs_show_compiles_or_fails_as_they_say(
    doc: str, shown: str, source: str, kind: str, error: str | None
) -> None:
    text = " ".join((ROOT / "docs" / doc).read_text().split())  # a span may wrap
    assert shown in text, f"docs/{doc} no longer shows {shown!r}: update PQL_EXAMPLES"
    if error is None:
        pql.compile(source, kind=kind)
        return
    with pytest.raises(PQLError) as caught:
        pql.compile(source, kind=kind)
    assert caught.value.message.startswith(error), caught.value.message


# -- the engine's words ------------------------------------------------------------------


def test_every_explain_reason_and_catalog_error_kind_is_documented() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    decisioning = (ROOT / "docs" / "decisioning.md").read_text()
    assert [r.value for r in Reason if f"`{r.value}`" not in api] == []
    assert [k.value for k in CatalogErrorKind if f"`{k.value}`" not in decisioning] == []


# -- docs/api.md's JSON excerpts -----------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_url=f"sqlite:///{tmp_path / 'docs.db'}", freeze_heap=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def api_json(starting: str) -> Any:
    """The JSON block of docs/api.md that starts with ``starting``."""
    return json.loads(fenced_starting("api.md", starting))


def test_the_error_example_is_what_the_api_answers(client: TestClient, settings: Settings) -> None:
    shown = api_json('{"type": "https://nextoffer.dev/problems/unprocessable"')
    tenant = make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")
    offer = {"xdm:name": "Gold", "xdm:status": "draft", "xdm:rank": {"xdm:priority": -1}}
    answer = tenant.create("personalized-offer", offer, expect=422)
    assert answer == shown


def test_the_explain_example_has_the_members_of_a_real_trace(
    client: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = api_json('{"candidates"')
    creds = seed_demo(settings)  # a gold-tier offer behind its rule, and a holiday offer
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("Seeded library: "))
    ids = dict(pair.split("=", 1) for pair in line.removeprefix("Seeded library: ").split(", "))
    body = {
        "xdm:propositionRequests": [
            {"xdm:placementId": ids["placement"], "xdm:activityId": ids["decision"]}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "someone@example.com"}]}}],
        "xdm:responseFormat": {"nextoffer:explain": True},
    }
    headers = {
        "Authorization": f"Bearer {creds.access_token}",
        "x-api-key": creds.api_key,
        "x-gw-ims-org-id": creds.org,
        "x-sandbox-name": creds.sandbox,
    }
    answer = client.post(
        f"/data/core/ode/{creds.container_id}/decisions", json=body, headers=headers
    )
    assert answer.status_code == 200, answer.text
    traced = answer.json()["xdm:propositions"][0]["nextoffer:explain"]
    assert set(traced) == set(shown)
    real = {candidate["reason"]: set(candidate) for candidate in traced["candidates"]}
    assert set(real) == {candidate["reason"] for candidate in shown["candidates"]}
    for candidate in shown["candidates"]:
        assert set(candidate) == real[candidate["reason"]], candidate


def test_api_md_ranking_strategy_and_frequency_caps_are_accepted(
    client: TestClient, settings: Settings
) -> None:
    tenant = make_tenant(client, settings.db_url, "ACME@AdobeOrg", "prod")
    strategy = api_json('{"xdm:name": "Home page by tier"')
    created = client.post(
        tenant.url(),
        content=json.dumps(strategy),
        headers={
            **tenant.headers,
            "Content-Type": "application/schema-instance+json;"
            ' schema="https://ns.nextoffer.dev/offer-management/ranking-strategy"',
        },
    )
    assert created.status_code == 201, created.text
    caps = json.loads("{" + fenced_starting("api.md", '"xdm:frequencyCappingConstraints"') + "}")
    offer = {"xdm:name": "Capped", "xdm:status": "draft", **caps}
    tenant.create("personalized-offer", offer)

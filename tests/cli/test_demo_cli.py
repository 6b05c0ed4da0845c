"""``serve --demo``'s printout: on a new database and on one seeded by an earlier start, the
curls it prints carry the library's real ids, and they work when sent to the app."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.cli.demo import DEMO_CLIENT, DEMO_ORG, DEMO_SANDBOX, DEMO_USER, seed_demo
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.settings import Settings

Curl = tuple[str, dict[str, str], str]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_url=f"sqlite:///{tmp_path / 'demo.db'}", freeze_heap=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def start(settings: Settings, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``serve --demo`` prints before the server starts."""
    seed_demo(settings)
    return capsys.readouterr().out


def curls(printout: str) -> list[Curl]:
    """Each printed curl as (path, headers, body), parsed as a shell would."""
    found = []
    for part in printout.split("curl ")[1:]:
        args = shlex.split(part.split("\n\n")[0].replace("\\\n", " "))
        headers = dict(
            a.split(": ", 1) for a, prev in zip(args[1:], args, strict=False) if prev == "-H"
        )
        url = next(a for a in args if a.startswith("http://"))
        found.append((urlsplit(url).path, headers, args[args.index("-d") + 1]))
    return found


def listed_ids(printout: str, label: str) -> dict[str, str]:
    line = next(line for line in printout.splitlines() if line.startswith(label))
    return dict(pair.split("=", 1) for pair in line.removeprefix(label).split(", "))


def send(client: TestClient, curl: Curl) -> tuple[int, Any]:
    path, headers, body = curl
    response = client.post(path, content=body, headers=headers)
    return response.status_code, response.json()


def test_a_second_start_prints_the_same_working_curls(
    settings: Settings, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    first = start(settings, capsys)
    second = start(settings, capsys)
    seeded = listed_ids(first, "Seeded library: ")
    assert listed_ids(second, "Library already seeded (an earlier start); using ") == {
        "placement": seeded["placement"],
        "decision": seeded["decision"],
    }
    assert "<" not in second  # no placeholder id
    for printout in (first, second):
        create, decide = curls(printout)
        assert seeded["placement"] in create[2]
        assert seeded["placement"] in decide[2] and seeded["decision"] in decide[2]
        status, receipt = send(client, create)
        assert status == 201, receipt
        assert re.fullmatch(r"xcore:fallback-offer:[0-9a-f]{16}", receipt["@id"])
        status, decision = send(client, decide)
        assert status == 200, decision
        proposition = decision["xdm:propositions"][0]
        assert proposition["xdm:activity"]["xdm:id"] == seeded["decision"]
        assert proposition["xdm:placement"]["xdm:id"] == seeded["placement"]
        assert proposition["xdm:options"][0]["xdm:name"] == "Holiday sale: 10% off"


def test_a_start_after_the_demo_decision_was_deleted_says_so_and_still_creates(
    settings: Settings, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    seeded = listed_ids(start(settings, capsys), "Seeded library: ")
    with NextOffer.open(settings) as no:
        with no.store.session() as session:
            creds_container = session.list_containers(org_id=DEMO_ORG, sandbox=DEMO_SANDBOX)[0]
            record = session.instances_by_at_id(creds_container.container_id, [seeded["decision"]])
        principal = Principal(DEMO_ORG, DEMO_SANDBOX, DEMO_CLIENT, DEMO_USER)
        no.repository.delete(
            principal,
            creds_container.container_id,
            record[seeded["decision"]].instance_id,
            if_match=None,
        )
    printout = start(settings, capsys)
    assert listed_ids(printout, "Library already seeded (an earlier start); using ") == {
        "placement": seeded["placement"]
    }
    assert "no live decision covering a placement" in printout
    assert "<" not in printout
    [create] = curls(printout)
    status, receipt = send(client, create)
    assert status == 201, receipt


def test_the_printed_console_link_signs_in(
    settings: Settings, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    printout = start(settings, capsys)
    line = next(line for line in printout.splitlines() if line.startswith("Console"))
    link = urlsplit(line.split(": ", 1)[1])
    assert (link.netloc, link.path) == ("127.0.0.1:8080", "/console/login")
    values = {key: value[0] for key, value in parse_qs(link.fragment).items()}
    page = client.get("/console/login")
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/console/login", data={"csrf_token": token.group(1), **values}, follow_redirects=True
    )
    assert response.status_code == 200
    assert "Holiday sale: 10% off" in response.text  # the seeded offers, listed


def test_the_printed_datastream_serves_the_edge_endpoint(
    settings: Settings, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.edge import scope

    printout = start(settings, capsys)
    line = next(line for line in printout.splitlines() if line.startswith("Datastream"))
    datastream = line.rsplit(": ", 1)[1]
    seeded = listed_ids(printout, "Seeded library: ")
    wanted = scope(seeded["decision"], seeded["placement"])
    body = {"events": [{"xdm": {}, "query": {"personalization": {"decisionScopes": [wanted]}}}]}
    response = client.post("/ee/v1/interact", params={"configId": datastream}, json=body)
    assert response.status_code == 200, response.text
    [decisions] = [h for h in response.json()["handle"] if h["type"] == "personalization:decisions"]
    assert decisions["payload"][0]["scope"] == wanted
    assert decisions["payload"][0]["items"], decisions

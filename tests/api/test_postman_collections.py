"""Adobe's Postman collections, request by request, as their users send them.

``tests/data/postman/collections.json`` holds every request of the three collections
(XDM Core Object Repository API, Offer Decisioning API, Offer Decision Service API):
method, path, query parameters and headers as the collections have them, and a session of
steps filling them in as a user fills Adobe's environment. Each step must get the status
Adobe documents. The session runs as two clients (Postman with the collections'
pre-request script, which drops what is empty, and a client that sends everything, empty
values included), each with ``SANDBOX_NAME`` filled and left empty.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.api import HTML, WEB

DATA = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "postman" / "collections.json").read_text()
)
_VARIABLE = re.compile(r"\{\{([^{}]+)\}\}")


def fill(text: str, variables: dict[str, str]) -> str:
    """``{{name}}`` replaced by its value; a value may itself name variables."""
    for _ in range(3):
        text = _VARIABLE.sub(lambda m: variables[m.group(1)], text)
    return text


def only_variable(template: str) -> str | None:
    """The variable a value consists of (what the pre-request script looks at)."""
    match = _VARIABLE.fullmatch(template)
    return match.group(1) if match else None


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def pointer_get(document: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        document = document[int(key)] if isinstance(document, list) else document[key]
    return document


def library(tenant) -> dict[str, str]:
    """What the user set up before opening the collections: a live decision (2020 form)
    and a live 2019 activity, over one approved offer for one placement."""
    placement = tenant.create(
        "offer-placement", {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]
    representation = {
        "xdm:placement": placement,
        "xdm:channel": WEB,
        "xdm:components": [{"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>hi</p>"}],
    }
    offer = tenant.create(
        "personalized-offer",
        {
            "xdm:name": "Postman offer",
            "xdm:status": "approved",
            "xdm:representations": [representation],
        },
    )["@id"]
    fallback = tenant.create(
        "fallback-offer",
        {"xdm:name": "Welcome", "xdm:status": "approved", "xdm:representations": [representation]},
    )["@id"]
    collection = tenant.create(
        "offer-filter", {"xdm:name": "All", "xdm:filterType": "offers", "xdm:ids": [offer]}
    )["@id"]
    decision = tenant.create(
        "offer-activity",
        {
            "xdm:name": "Home page",
            "xdm:status": "live",
            "xdm:criteria": [
                {"xdm:placements": [placement], "xdm:optionSelection": {"xdm:filter": collection}}
            ],
            "xdm:fallback": fallback,
        },
    )["@id"]
    activity_2019 = tenant.create(
        "offer-activity",
        {
            "xdm:name": "IVR",
            "xdm:status": "live",
            "xdm:placement": placement,
            "xdm:filter": collection,
            "xdm:fallback": fallback,
        },
    )["@id"]
    return {
        "placementId": placement,
        "offerId": offer,
        "decisionId": decision,
        "activity2019Id": activity_2019,
    }


def send(client, request: dict[str, Any], variables: dict[str, str], *, drops_empty: bool):
    def sent(pairs: list[list[str]]) -> list[tuple[str, str]]:
        out = []
        for name, template in pairs:
            for placeholder, edit in DATA["userEdits"]["replace"].items():
                template = template.replace(placeholder, edit)
            variable = only_variable(template)
            if drops_empty and variable is not None and not variables[variable]:
                continue  # the collections' pre-request script
            out.append((name, fill(template, variables)))
        return out

    path = request["path"]
    for name, template in request["pathVariables"].items():
        path = path.replace(f":{name}", fill(template, variables))
    body = request["body"]
    return client.request(
        request["method"],
        path,
        params=sent(request["query"]),
        headers=sent(request["headers"]),
        content=fill(body, variables).encode() if body is not None else None,
    )


@pytest.mark.parametrize("sandbox", ["prod", ""], ids=["SANDBOX_NAME=prod", "SANDBOX_NAME-empty"])
@pytest.mark.parametrize("client_kind", sorted(DATA["clients"]))
def test_every_request_of_the_collections_gets_adobes_documented_status(
    tenant, client_kind, sandbox
):
    drops_empty = DATA["clients"][client_kind]["dropsEmpty"]
    environment = dict.fromkeys(DATA["environment"]["empty"], "")
    environment.update(
        {
            "ACCESS_TOKEN": tenant.creds.access_token,
            "API_KEY": tenant.creds.api_key,
            "IMS_ORG": tenant.creds.org,
            "SANDBOX_NAME": sandbox,
            "containerId": tenant.container,
            **library(tenant),
        }
    )
    filled = set(DATA["environment"]["filledByTest"]) - {"x-request-id"}  # fresh per request
    assert set(environment) == set(DATA["environment"]["empty"]) | filled
    failures = []
    for index, step in enumerate(DATA["steps"]):
        request = DATA["requests"][step["request"]]
        variables = {
            **environment,
            "x-request-id": str(uuid.uuid4()),
            **{k: as_text(v) for k, v in step["variables"].items()},
        }
        where = (index, step["request"], request["source"]["request"])
        try:
            response = send(tenant.client, request, variables, drops_empty=drops_empty)
        except KeyError as missing:  # a value an earlier, failed step should have captured
            failures.append((*where, f"no value for {missing}"))
            continue
        if response.status_code != step["status"]:
            failures.append((*where, response.status_code, step["status"], response.text[:300]))
            continue
        body = response.json() if response.content else None
        for pointer, expected in step["expect"].items():
            expected = fill(expected, variables) if isinstance(expected, str) else expected
            try:
                got = pointer_get(body, pointer)
            except (KeyError, IndexError, TypeError):
                got = "<missing>"
            if got != expected:
                failures.append((*where, pointer, got, expected))
        for name, pointer in step.get("capture", {}).items():
            environment[name] = pointer_get(body, pointer)
    assert not failures, json.dumps(failures, indent=1)


def test_the_data_holds_every_request_of_the_three_collections():
    origin = DATA["origin"]["collections"]
    requests = DATA["requests"]
    by_collection: dict[str, set[str]] = {}
    for request in requests.values():
        by_collection.setdefault(request["source"]["collection"], set()).add(
            request["source"]["request"]
        )
    assert {name: len(names) for name, names in by_collection.items()} == {
        name: collection["requests"] for name, collection in origin.items()
    }
    # Every request is replayed, and every step names a documented status.
    assert {step["request"] for step in DATA["steps"]} == set(requests)
    assert all(str(step["status"]) in DATA["statuses"] for step in DATA["steps"])
    # Every variable a request uses is in the environment (or captured on the way).
    known = set(DATA["environment"]["empty"]) | set(DATA["environment"]["filledByTest"])
    captured = {name for step in DATA["steps"] for name in step.get("capture", {})}
    for request in requests.values():
        templates = [v for _, v in request["query"] + request["headers"]]
        templates += [*list(request["pathVariables"].values()), request["body"] or ""]
        for template in templates:
            assert set(_VARIABLE.findall(template)) <= known | captured, template

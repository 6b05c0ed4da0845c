"""Schemathesis against a live server, at a bounded size (``scripts/fuzz-api`` runs more):
no 5xx, and every response as ``openapi.json`` documents it. Then the bugs it found."""

from __future__ import annotations

import functools
import json

import pytest

from support import PATCH_TYPE, apifuzz, schema
from support.backends import fresh_database


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_schemathesis_finds_no_server_error_and_no_undocumented_response(tmp_path, backend):
    # On PostgreSQL too: what its text and integers cannot hold, SQLite stored (a NUL, an
    # offset past 64 bits), and only a server on it answered those with a 5xx.
    run = functools.partial(
        apifuzz.run, tmp_path, max_examples=8, seed=20261129, phases="coverage,fuzzing"
    )
    if backend == "postgresql":
        with fresh_database() as url:
            result = run(db_url=url)
    else:
        result = run()
    assert result.requests >= 800, result.summary()
    assert result.ok, json.dumps(result.summary(), indent=1) + "\n" + result.output[-6000:]


# Regressions: each was a schemathesis finding.


def test_a_json_patch_that_replaces_the_root_is_a_422_not_a_500(tenant, placement):
    record = tenant.client.get(
        tenant.url(f"/{_instance_id(tenant, placement)}"), headers=tenant.headers
    )
    for ops in (
        [{"op": "add", "path": "", "value": None}],
        [{"op": "replace", "path": "", "value": [1]}],
    ):
        response = tenant.client.patch(
            tenant.url(f"/{record.json()['instanceId']}"),
            content=json.dumps(ops),
            headers={
                **tenant.headers,
                "Content-Type": PATCH_TYPE.format(schema=schema("offer-placement")),
            },
        )
        assert response.status_code == 422, response.text
        assert response.json()["pointer"] == "/"


def test_decision_events_with_an_empty_since_is_a_400(tenant):
    response = tenant.client.get(
        f"/data/core/ode/{tenant.container}/decision-events",
        params={"since": ""},
        headers=tenant.headers,
    )
    assert response.status_code == 400 and response.json()["pointer"] == "since"


def test_a_missing_org_header_is_a_documented_400_body(client, tenant):
    # (Found for x-sandbox-name, which is now optional: without it, the prod sandbox.)
    document = client.get("/openapi.json").json()
    headers = {k: v for k, v in tenant.headers.items() if k != "x-gw-ims-org-id"}
    response = client.get(f"/data/core/ode/{tenant.container}/diagnostics", headers=headers)
    assert response.status_code == 400
    documented = document["paths"]["/data/core/ode/{containerId}/diagnostics"]["get"]["responses"][
        "400"
    ]["content"]
    assert response.headers["content-type"] in documented


def _instance_id(tenant, at_id):
    page = tenant.client.get(
        tenant.url(),
        params={"property": f"_instance.@id=={at_id}", "schema": schema("offer-placement", None)},
        headers=tenant.headers,
    )
    return page.json()["_embedded"]["results"][0]["instanceId"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/data/core/xcore/{C}/instances", "GET, HEAD, POST"),
        ("/data/core/xcore/{C}/instances/x", "DELETE, GET, HEAD, PATCH, PUT"),
        ("/data/core/nextoffer/profiles", "DELETE, GET, HEAD, POST"),
    ],
)
def test_a_405_allows_every_method_of_the_path(tenant, path, allowed):
    response = tenant.client.request(
        "OPTIONS", path.replace("{C}", tenant.container), headers=tenant.headers
    )
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


def test_events_that_are_not_objects_are_rejected_one_by_one_as_documented(client, tenant):
    response = client.post(
        "/data/core/nextoffer/events", json={"events": [[None, None]]}, headers=tenant.headers
    )
    assert response.status_code == 207 and response.json()["rejected"] == 1
    items = client.get("/openapi.json").json()["paths"]["/data/core/nextoffer/events"]["post"][
        "requestBody"
    ]["content"]["application/json"]["schema"]["properties"]["events"]["items"]
    assert "type" not in items  # any item is accepted into the request and judged on its own

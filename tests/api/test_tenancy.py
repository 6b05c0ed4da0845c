"""Two orgs × two sandboxes × every verb: nothing crosses, and foreign ids are 404."""

from __future__ import annotations

import itertools
import json

import pytest

from support import CREATE_TYPE, PATCH_TYPE, schema
from support.api import HTML, WEB, make_tenant

TENANTS = [
    ("ACME@AdobeOrg", "prod"),
    ("ACME@AdobeOrg", "dev"),
    ("GLOBEX@AdobeOrg", "prod"),
    ("GLOBEX@AdobeOrg", "dev"),
]


@pytest.fixture
def tenants(client, db_url):
    made = [make_tenant(client, db_url, org, sandbox) for org, sandbox in TENANTS]
    for tenant in made:
        tenant.placement = tenant.create(
            "offer-placement",
            {
                "xdm:name": f"{tenant.creds.org}/{tenant.creds.sandbox}",
                "xdm:channel": WEB,
                "xdm:componentType": HTML,
            },
        )
    return made


def requests_into(owner, caller, instance_id, container):
    base = f"/data/core/xcore/{container}/instances"
    create = {"Content-Type": CREATE_TYPE.format(schema=schema("offer-placement"))}
    patch = {"Content-Type": PATCH_TYPE.format(schema=schema("offer-placement"))}
    body = json.dumps({"xdm:name": "x", "xdm:channel": WEB, "xdm:componentType": HTML})
    ops = json.dumps([{"op": "replace", "path": "/_instance/xdm:name", "value": "stolen"}])
    c = caller.client
    h = caller.headers
    return {
        "GET": lambda: c.get(f"{base}/{instance_id}", headers=h),
        "PUT": lambda: c.put(f"{base}/{instance_id}", content=body, headers={**h, **create}),
        "PATCH": lambda: c.patch(f"{base}/{instance_id}", content=ops, headers={**h, **patch}),
        "DELETE": lambda: c.delete(f"{base}/{instance_id}", headers=h),
        "POST": lambda: c.post(base, content=body, headers={**h, **create}),
    }


def test_no_verb_crosses_tenants(tenants):
    for owner, caller in itertools.permutations(tenants, 2):
        instance_id = owner.placement["instanceId"]
        # Through the owner's container path, and through the caller's own container.
        for container in (owner.container, caller.container):
            for verb, send in requests_into(owner, caller, instance_id, container).items():
                if verb == "POST" and container == caller.container:
                    continue  # creating in one's own container is allowed
                response = send()
                assert response.status_code == 404, (
                    owner.creds.org,
                    owner.creds.sandbox,
                    caller.creds.org,
                    caller.creds.sandbox,
                    verb,
                    response.text,
                )
    for owner in tenants:
        read = owner.client.get(
            f"/data/core/xcore/{owner.container}/instances/{owner.placement['instanceId']}",
            headers=owner.headers,
        )
        assert read.status_code == 200
        assert read.json()["repo:etag"] == 1
        assert read.json()["_instance"]["xdm:name"] == f"{owner.creds.org}/{owner.creds.sandbox}"


def test_each_tenant_lists_only_its_own_container(tenants):
    for tenant in tenants:
        body = tenant.client.get("/data/core/xcore/", headers=tenant.headers).json()
        listed = [
            c["instanceId"]
            for c in body["_embedded"]["https://ns.adobe.com/experience/xcore/container"]
        ]
        assert listed == [tenant.container]


def test_references_do_not_resolve_across_tenants(tenants):
    owner, caller = tenants[0], tenants[2]
    body = {
        "xdm:name": "borrowing",
        "xdm:status": "approved",
        "xdm:representations": [
            {
                "xdm:placement": owner.placement["@id"],
                "xdm:components": [{"@type": HTML, "dc:format": "text/html"}],
            }
        ],
    }
    caller.create("fallback-offer", body, expect=422)

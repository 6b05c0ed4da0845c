"""History (beyond Adobe): every write through the API keeps a revision; revert writes one
again. ``GET …/instances/{id}/revisions`` and ``POST …/revisions/{n}/revert``."""

from __future__ import annotations

from starlette.testclient import TestClient

from support.api import HTML, WEB, Tenant, make_tenant

PLACEMENT = {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML}


def _json_put(tenant: Tenant, instance_id: str, body: dict[str, object], etag: int) -> int:
    response = tenant.client.put(
        tenant.url(f"/{instance_id}"),
        json=body,
        headers={**tenant.headers, "Content-Type": "application/json", "If-Match": f'"{etag}"'},
    )
    return response.status_code


def test_create_update_and_delete_each_keep_a_revision_with_what_changed(tenant: Tenant) -> None:
    receipt = tenant.create("offer-placement", PLACEMENT)
    instance_id = receipt["instanceId"]
    assert _json_put(tenant, instance_id, {**PLACEMENT, "xdm:name": "Hero"}, 1) == 200
    history = tenant.client.get(tenant.url(f"/{instance_id}/revisions"), headers=tenant.headers)
    assert history.status_code == 200
    revisions = history.json()["revisions"]
    assert [(r["revision"], r["action"]) for r in revisions] == [(2, "update"), (1, "create")]
    assert revisions[0]["changes"] == [
        {"op": "replace", "path": "/xdm:name", "from": "Banner", "value": "Hero"}
    ]
    assert revisions[0]["repo:lastModifiedBy"] == tenant.creds.user
    assert revisions[1]["_instance"]["xdm:name"] == "Banner"

    deleted = tenant.client.delete(tenant.url(f"/{instance_id}"), headers=tenant.headers)
    assert deleted.status_code == 202
    after = tenant.client.get(tenant.url(f"/{instance_id}/revisions"), headers=tenant.headers)
    assert [r["action"] for r in after.json()["revisions"]] == ["delete", "update", "create"]


def test_revert_writes_the_old_body_as_a_new_revision(tenant: Tenant) -> None:
    instance_id = tenant.create("offer-placement", PLACEMENT)["instanceId"]
    assert _json_put(tenant, instance_id, {**PLACEMENT, "xdm:name": "Hero"}, 1) == 200
    reverted = tenant.client.post(
        tenant.url(f"/{instance_id}/revisions/1/revert"),
        headers={**tenant.headers, "If-Match": '"2"'},
    )
    assert reverted.status_code == 200, reverted.text
    assert reverted.json()["repo:etag"] == 3
    current = tenant.client.get(tenant.url(f"/{instance_id}"), headers=tenant.headers).json()
    assert current["_instance"]["xdm:name"] == "Banner"
    stale = tenant.client.post(
        tenant.url(f"/{instance_id}/revisions/1/revert"),
        headers={**tenant.headers, "If-Match": '"2"'},
    )
    assert stale.status_code == 409
    missing = tenant.client.post(
        tenant.url(f"/{instance_id}/revisions/99/revert"), headers=tenant.headers
    )
    assert missing.status_code == 404


def test_another_tenants_history_is_a_404(client: TestClient, db_url: str, tenant: Tenant) -> None:
    instance_id = tenant.create("offer-placement", PLACEMENT)["instanceId"]
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    seen = client.get(
        f"/data/core/xcore/{tenant.container}/instances/{instance_id}/revisions",
        headers=other.headers,
    )
    assert seen.status_code == 404
    unknown = client.get(tenant.url("/nosuch/revisions"), headers=tenant.headers)
    assert unknown.status_code == 404

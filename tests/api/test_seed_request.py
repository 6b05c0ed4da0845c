"""The seed request of the project: Adobe's documented "create a fallback offer" call."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime

from nextoffer.ids import parse_datetime, snowflake_time_ms, uuid1_time
from support import example, remap

SEED_CONTENT_TYPE = (
    "application/schema-instance+json; version=1;  "
    'schema="https://ns.adobe.com/experience/offer-management/fallback-offer;version=0.1"'
)


def test_documented_fallback_create_returns_documented_receipt(tenant, placement):
    body = remap(
        example("xcore-fallback-create.request.json"),
        {"xcore:offer-placement:124e0be5699743d3": placement},
    )
    response = tenant.client.post(
        tenant.url(),
        content=json.dumps(body).encode(),
        headers={
            **tenant.headers,
            "Accept": "application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1",
            "Content-Type": SEED_CONTENT_TYPE,
        },
    )
    assert response.status_code == 201, response.text
    receipt = response.json()
    documented = example("xcore-fallback-create.response.json")
    assert list(receipt) == list(documented)
    assert uuid.UUID(receipt["instanceId"]).version == 1
    assert re.fullmatch(r"xcore:fallback-offer:[0-9a-f]{16}", receipt["@id"])
    assert receipt["repo:etag"] == 1
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    assert stamp.fullmatch(receipt["repo:createdDate"])
    assert receipt["repo:createdDate"] == receipt["repo:lastModifiedDate"]
    created: datetime = parse_datetime(receipt["repo:createdDate"])
    # The UUID's timestamp and the @id's snowflake both encode the creation time.
    assert uuid1_time(receipt["instanceId"]) == created
    assert abs(snowflake_time_ms(receipt["@id"]) - created.timestamp() * 1000) < 1
    assert receipt["repo:createdBy"] == tenant.creds.user
    assert receipt["repo:createdByClientId"] == tenant.creds.api_key
    assert receipt["repo:lastModifiedByClientId"] == tenant.creds.api_key
    assert response.headers["content-type"].startswith(
        "application/vnd.adobe.platform.xcore.xdm.receipt+json"
    )
    assert response.headers["location"] == f"{tenant.container}/instances/{receipt['instanceId']}"
    assert response.headers["content-base"].endswith("/data/core/xcore/")

    read = tenant.client.get(tenant.url(f"/{receipt['instanceId']}"), headers=tenant.headers)
    assert read.status_code == 200
    resource = read.json()
    assert resource["_instance"] == {**body, "@id": receipt["@id"]}
    assert resource["schemas"] == [
        "https://ns.adobe.com/experience/offer-management/fallback-offer;version=0.5"
    ]

"""Authentication failures answer in Adobe's gateway shape and reveal nothing."""

from __future__ import annotations

import pytest

from nextoffer.service import tokens
from support.api import make_tenant


def call(tenant, headers):
    return tenant.client.get(f"/data/core/xcore/{tenant.container}/instances/x", headers=headers)


def assert_gateway(response, status, code):
    assert response.status_code == status, response.text
    assert response.json() == {"error_code": code, "message": response.json()["message"]}
    assert response.json()["message"]


def without(headers, name):
    return {k: v for k, v in headers.items() if k != name}


def test_missing_token(tenant):
    assert_gateway(call(tenant, without(tenant.headers, "Authorization")), 403, "403010")


@pytest.mark.parametrize(
    "value", ["Bearer", "Basic abc", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer ....."]
)
def test_malformed_token(tenant, value):
    assert_gateway(call(tenant, {**tenant.headers, "Authorization": value}), 401, "401013")


def test_wrongly_signed_token(tenant):
    claims = tokens.Claims("mallory", tenant.creds.api_key, tenant.creds.org, 0, 2_000_000_000)
    kid = tokens.kid_of(tenant.creds.access_token)
    forged = tokens.mint(claims, kid=kid, secret="not-the-secret")
    assert_gateway(
        call(tenant, {**tenant.headers, "Authorization": f"Bearer {forged}"}), 401, "401013"
    )


def test_expired_token(tenant, db_url):
    from nextoffer.storage.store import Store

    store = Store.open(db_url)
    with store.session() as session:
        kid, secret = next(iter(session.signing_keys().items()))
    store.close()
    expired = tokens.mint(
        tokens.Claims("u", tenant.creds.api_key, tenant.creds.org, 0, 1000), kid=kid, secret=secret
    )
    assert_gateway(
        call(tenant, {**tenant.headers, "Authorization": f"Bearer {expired}"}), 401, "401013"
    )


def test_api_key_missing_and_mismatched(tenant):
    assert_gateway(call(tenant, without(tenant.headers, "x-api-key")), 403, "403000")
    assert_gateway(call(tenant, {**tenant.headers, "x-api-key": "someone-else"}), 403, "403003")


def test_org_missing_and_mismatched(tenant):
    assert_gateway(call(tenant, without(tenant.headers, "x-gw-ims-org-id")), 400, "400003")
    assert_gateway(
        call(tenant, {**tenant.headers, "x-gw-ims-org-id": "OTHER@AdobeOrg"}), 403, "403025"
    )


def test_sandbox_not_granted(tenant):
    assert_gateway(call(tenant, {**tenant.headers, "x-sandbox-name": "dev"}), 403, "403025")


def containers_seen(client, headers):
    response = client.get("/data/core/xcore/", headers=headers)
    assert response.status_code == 200, response.text
    listed = response.json()["_embedded"]["https://ns.adobe.com/experience/xcore/container"]
    return [c["instanceId"] for c in listed]


def test_without_a_sandbox_header_a_request_works_on_prod(client, db_url, tenant):
    # Platform: "If the x-sandbox-name header is not specified, requests are resolved
    # under the prod sandbox". The same client may use dev too: prod is still the one.
    dev = make_tenant(client, db_url, tenant.creds.org, "dev")
    assert dev.creds.api_key == tenant.creds.api_key and dev.container != tenant.container
    assert containers_seen(client, dev.headers) == [dev.container]
    for headers in (
        without(tenant.headers, "x-sandbox-name"),
        {**tenant.headers, "x-sandbox-name": ""},
        without(dev.headers, "x-sandbox-name"),
    ):
        assert containers_seen(client, headers) == [tenant.container]


def test_a_client_without_prod_that_omits_the_sandbox_gets_the_sandbox_error(client, db_url):
    dev_only = make_tenant(client, db_url, "DEVONLY@AdobeOrg", "dev")
    response = call(dev_only, without(dev_only.headers, "x-sandbox-name"))
    assert_gateway(response, 403, "403025")
    assert response.json()["message"] == "Profile is not valid for this sandbox"
    assert containers_seen(client, dev_only.headers) == [dev_only.container]


def test_other_tenants_token_does_not_open_this_tenant(client, db_url, tenant):
    other = make_tenant(client, db_url, "EVIL@AdobeOrg", "prod")
    mixed = {**other.headers}
    response = client.get(f"/data/core/xcore/{tenant.container}/instances/x", headers=mixed)
    assert response.status_code == 404
    mixed["x-gw-ims-org-id"] = tenant.creds.org
    assert_gateway(
        client.get(f"/data/core/xcore/{tenant.container}/instances/x", headers=mixed), 403, "403025"
    )


def test_healthz_and_openapi_need_no_credentials(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_signed_token_with_absurd_expiry_is_invalid_not_a_crash(tenant, db_url):
    import base64
    import hashlib
    import hmac
    import json

    from nextoffer.storage.store import Store

    store = Store.open(db_url)
    with store.session() as session:
        kid, secret = next(iter(session.signing_keys().items()))
    store.close()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    claims = json.dumps(
        {"sub": "u", "client_id": tenant.creds.api_key, "org": tenant.creds.org, "iat": 0}
    )
    payload = b64((claims[:-1] + ', "exp": 1e400}').encode())  # parses as an infinite float
    signature = b64(
        hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    )
    token = f"{header}.{payload}.{signature}"
    assert_gateway(
        call(tenant, {**tenant.headers, "Authorization": f"Bearer {token}"}), 401, "401013"
    )

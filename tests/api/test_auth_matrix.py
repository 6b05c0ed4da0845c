"""Every endpoint x every way to get authentication wrong: the documented status and
gateway body (docs/api.md "Authentication and tenancy"), no data, and no side effect."""

from __future__ import annotations

import base64
import json
import re

import pytest

from nextoffer.service import tokens
from nextoffer.storage.store import Store
from support.endpoints import CALLS
from support.live import headers_of
from support.live import make_tenant as seeded_tenant

MISSING_TOKEN = (403, "403010", "Oauth token is missing.")
INVALID_TOKEN = (401, "401013", "Oauth token is not valid")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def world(client, db_url):
    """A seeded tenant, a second org's tenant, and the database's signing key."""
    creds, ids = seeded_tenant(db_url, "ACME@AdobeOrg", "prod", seed=True)
    other, _ = seeded_tenant(db_url, "EVIL@AdobeOrg", "prod")
    store = Store.open(db_url)
    with store.session() as session:
        kid, secret = sorted(session.signing_keys().items())[0]
    store.close()
    fill = {
        "C": creds.container_id,
        "I": ids["placement@instance"],
        "A": ids["decision"],
        "P": ids["placement"],
        "E": "victim@example.com",
        "D": creds.datastream_id,
    }
    return {"creds": creds, "other": other, "kid": kid, "secret": secret, "fill": fill, "ids": ids}


def cases(world):
    """``(name, headers, (status, error_code, message))`` for every failure we document."""
    creds, other, kid, secret = world["creds"], world["other"], world["kid"], world["secret"]
    good = headers_of(creds)

    def with_(**changes):
        headers = dict(good)
        for key, value in changes.items():
            key = key.replace("_", "-")
            if value is None:
                headers.pop(key, None)
            else:
                headers[key] = value
        return headers

    def bearer(token):
        return with_(Authorization=f"Bearer {token}")

    claims = tokens.Claims(creds.user, creds.api_key, creds.org, 0, 4_000_000_000)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(
        json.dumps(
            {
                "sub": "u",
                "client_id": creds.api_key,
                "org": creds.org,
                "iat": 0,
                "exp": 4_000_000_000,
            }
        ).encode()
    )
    none_header = _b64(json.dumps({"alg": "none", "kid": kid}).encode())
    return [
        ("no Authorization", with_(Authorization=None), MISSING_TOKEN),
        ("empty Authorization", with_(Authorization=""), MISSING_TOKEN),
        ("Bearer without token", with_(Authorization="Bearer"), INVALID_TOKEN),
        ("Basic scheme", with_(Authorization="Basic dXNlcjpwYXNz"), INVALID_TOKEN),
        ("token without Bearer", with_(Authorization=creds.access_token), INVALID_TOKEN),
        ("not a JWS", bearer("not-a-jwt"), INVALID_TOKEN),
        ("three empty parts", bearer(".."), INVALID_TOKEN),
        ("garbage parts", bearer("a.b.c"), INVALID_TOKEN),
        ("header not JSON", bearer(f"{_b64(b'{')}.{payload}.x"), INVALID_TOKEN),
        ("alg none", bearer(f"{none_header}.{payload}."), INVALID_TOKEN),
        ("unsigned HS256", bearer(f"{header}.{payload}."), INVALID_TOKEN),
        ("truncated token", bearer(creds.access_token[:-5]), INVALID_TOKEN),
        (
            "wrongly signed",
            bearer(tokens.mint(claims, kid=kid, secret="not-the-secret")),
            INVALID_TOKEN,
        ),
        (
            "unknown key id",
            bearer(tokens.mint(claims, kid="no-such-kid", secret=secret)),
            INVALID_TOKEN,
        ),
        (
            "expired",
            bearer(
                tokens.mint(
                    tokens.Claims("u", creds.api_key, creds.org, 0, 1000), kid=kid, secret=secret
                )
            ),
            INVALID_TOKEN,
        ),
        (
            "claims not an object",
            bearer(
                f"{header}.{_b64(b'[1]')}."
                + _b64(
                    __import__("hmac")
                    .new(secret.encode(), f"{header}.{_b64(b'[1]')}".encode(), "sha256")
                    .digest()
                )
            ),
            INVALID_TOKEN,
        ),
        ("no x-api-key", with_(x_api_key=None), (403, "403000", "Api Key is required")),
        (
            "x-api-key of another client",
            with_(x_api_key=other.api_key),
            (403, "403003", "Api Key is invalid"),
        ),
        (
            "other org's token, this api key",
            with_(Authorization=f"Bearer {other.access_token}"),
            (403, "403003", "Api Key is invalid"),
        ),
        (
            "no x-gw-ims-org-id",
            with_(x_gw_ims_org_id=None),
            (400, "400003", "Missing header: x-gw-ims-org-id"),
        ),
        (
            "org not the token's",
            with_(x_gw_ims_org_id=other.org),
            (403, "403025", "Profile is not valid"),
        ),
        (
            "other org's token and api key, this org",
            {**headers_of(other), "x-gw-ims-org-id": creds.org},
            (403, "403025", "Profile is not valid"),
        ),
        (
            "sandbox not granted",
            with_(x_sandbox_name="dev"),
            (403, "403025", "Profile is not valid for this sandbox"),
        ),
        (
            "sandbox of another org",
            with_(x_sandbox_name="prod-evil"),
            (403, "403025", "Profile is not valid for this sandbox"),
        ),
    ]


def test_every_endpoint_refuses_every_bad_credential_with_the_documented_body(client, world):
    failures = []
    sent = 0
    for case_name, headers, (status, code, message) in cases(world):
        for call in CALLS:
            path, params, content, extra = call.render(world["fill"])
            response = client.request(
                call.method, path, params=params, content=content, headers={**headers, **extra}
            )
            sent += 1
            body = response.content
            expected = {"error_code": code, "message": message}
            if (
                response.status_code != status
                or response.headers.get("content-type") != "application/json"
                or json.loads(body or b"null") != expected
            ):
                failures.append((case_name, call.name, response.status_code, body[:200]))
    assert not failures, failures
    assert sent == len(CALLS) * len(cases(world))


def test_refused_requests_changed_nothing(client, world):
    # Every write in CALLS sent with a bad credential must leave no trace.
    for _case_name, headers, _expected in cases(world):
        for call in CALLS:
            path, params, content, extra = call.render(world["fill"])
            client.request(
                call.method, path, params=params, content=content, headers={**headers, **extra}
            )
    good = headers_of(world["creds"])
    fill = world["fill"]
    placement = client.get(f"/data/core/xcore/{fill['C']}/instances/{fill['I']}", headers=good)
    assert placement.status_code == 200 and placement.json()["repo:etag"] == 1
    assert placement.json()["_instance"]["xdm:name"] == "Home page banner"
    listed = client.get(
        f"/data/core/xcore/{fill['C']}/instances",
        params={"schema": "https://ns.adobe.com/experience/offer-management/offer-placement"},
        headers=good,
    )
    assert listed.json()["_embedded"]["total"] == 1
    profile = client.get(
        "/data/core/nextoffer/profiles",
        params={"namespace": "Email", "id": fill["E"]},
        headers=good,
    )
    assert profile.status_code == 404
    events = client.get(f"/data/core/ode/{fill['C']}/decision-events", headers=good)
    assert events.json()["count"] == 0


def test_the_valid_credentials_open_every_endpoint(client, world):
    # The control: the same calls with good headers are not refused by authentication.
    good = headers_of(world["creds"])
    for call in CALLS:
        path, params, content, extra = call.render(world["fill"])
        response = client.request(
            call.method, path, params=params, content=content, headers={**good, **extra}
        )
        assert response.status_code < 400 or "error_code" not in response.json(), (
            call.name,
            response.text,
        )
        assert response.status_code not in (401, 403), (call.name, response.text)


def test_without_a_sandbox_header_every_endpoint_works_on_prod(client, world):
    # No x-sandbox-name is the organisation's prod sandbox (docs/api.md): the same calls as
    # the control above, and the tenant (org ACME, sandbox prod) is the one they reach.
    headers = {k: v for k, v in headers_of(world["creds"]).items() if k != "x-sandbox-name"}
    for call in CALLS:
        path, params, content, extra = call.render(world["fill"])
        response = client.request(
            call.method, path, params=params, content=content, headers={**headers, **extra}
        )
        # As in the control: not refused by authentication (a write may still be refused,
        # e.g. the delete of a placement the seeded offers use).
        assert response.status_code not in (400, 401, 403), (call.name, response.text)
        assert response.status_code < 400 or "error_code" not in response.json(), call.name


def test_a_client_without_prod_that_omits_the_sandbox_is_refused_everywhere(client, db_url, world):
    dev_only, _ = seeded_tenant(db_url, "DEVONLY@AdobeOrg", "dev")
    headers = {k: v for k, v in headers_of(dev_only).items() if k != "x-sandbox-name"}
    expected = {"error_code": "403025", "message": "Profile is not valid for this sandbox"}
    for call in CALLS:
        path, params, content, extra = call.render({**world["fill"], "C": dev_only.container_id})
        response = client.request(
            call.method, path, params=params, content=content, headers={**headers, **extra}
        )
        assert response.status_code == 403 and response.json() == expected, (
            call.name,
            response.text,
        )


def test_the_matrix_covers_every_authenticated_route(client):
    document = client.get("/openapi.json").json()
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
        and item[method].get("security") != []  # /healthz, /openapi.json, /metrics: no credentials
    }
    covered = {(call.route, call.method) for call in CALLS}
    assert documented == covered, sorted(documented ^ covered)
    for path, _method in documented:
        assert re.fullmatch(r"/data/core/[a-z/{}A-Z-]*", path)

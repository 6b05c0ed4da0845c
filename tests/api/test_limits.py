"""Guardrails on one request: each is refused cleanly, a 4xx with a problem body that says
what was too big (docs/api.md "Guardrails")."""

from __future__ import annotations

import json

import pytest

from support import CREATE_TYPE, PATCH_TYPE, schema
from support.api import HTML, WEB
from support.endpoints import DECIDE_TYPE

PROBLEM = "application/problem+json"


def assert_problem(response, status, slug, *, mentions=""):
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"https://nextoffer.dev/problems/{slug}" and body["status"] == status
    assert mentions in body["detail"], body
    return body


def create(tenant, type_name, content, **headers):
    return tenant.client.post(
        tenant.url(),
        content=content,
        headers={
            **tenant.headers,
            "Content-Type": CREATE_TYPE.format(schema=schema(type_name)),
            **headers,
        },
    )


def rule_body(text):
    return json.dumps(
        {
            "xdm:name": "r",
            "xdm:condition": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": text},
        }
    )


def test_a_body_over_one_mib_is_413(tenant):
    big = json.dumps(
        {"xdm:name": "x" * (1024 * 1024), "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    assert_problem(
        create(tenant, "offer-placement", big), 413, "payload-too-large", mentions="limit"
    )


def test_a_streamed_body_over_one_mib_without_a_length_is_413(tenant):
    def chunks():
        yield b'{"xdm:name": "'
        for _ in range(80):
            yield b"x" * 16384
        yield b'"}'

    assert_problem(create(tenant, "tag", chunks()), 413, "payload-too-large", mentions="limit")


def test_an_offer_over_300_kb_is_413(tenant, placement):
    offer = {
        "xdm:name": "huge",
        "xdm:status": "draft",
        "xdm:representations": [
            {
                "xdm:placement": placement,
                "xdm:channel": WEB,
                "xdm:components": [
                    {"@type": HTML, "dc:format": "text/html", "xdm:content": "x" * 400_000}
                ],
            }
        ],
    }
    assert create(tenant, "personalized-offer", json.dumps(offer)).status_code == 413


def test_json_nested_deeper_than_64_is_400(tenant):
    deep = '{"xdm:name": "t", "x": ' + "[" * 65 + "]" * 65 + "}"
    assert_problem(create(tenant, "tag", deep), 400, "bad-request", mentions="deeper than 64")
    ok = '{"xdm:name": "t", "x": ' + "[" * 62 + "]" * 62 + "}"
    assert create(tenant, "tag", ok).status_code == 201


def test_very_deep_json_is_refused_without_a_crash(tenant):
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = create(tenant, "tag", deep)
    assert response.status_code == 400 and response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "content",
    [
        '{"xdm:name": "café"}'.encode("utf-16"),  # with its byte-order mark
        '{"xdm:name": "café"}'.encode("latin-1"),
    ],
)
def test_a_body_that_is_not_utf8_is_a_400_saying_so(tenant, content):
    # orjson's own words were "str is not valid UTF-8: surrogates not allowed".
    assert_problem(create(tenant, "tag", content), 400, "bad-request", mentions="not UTF-8")


def test_a_compressed_body_is_415_naming_its_content_encoding(tenant):
    import gzip

    content = gzip.compress(b'{"xdm:name": "t"}')
    for target in (
        lambda: create(tenant, "tag", content, **{"Content-Encoding": "gzip"}),
        lambda: tenant.client.post(
            "/data/core/nextoffer/events",
            content=content,
            headers={
                **tenant.headers,
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            },
        ),
    ):
        assert_problem(target(), 415, "unsupported-media-type", mentions="'gzip'")
    # identity is no encoding at all
    created = create(tenant, "tag", b'{"xdm:name": "t"}', **{"Content-Encoding": "identity"})
    assert created.status_code == 201, created.text


def test_more_than_30_proposition_requests_is_422(tenant):
    request = {
        "xdm:propositionRequests": [
            {
                "xdm:placementId": "xcore:offer-placement:1",
                "xdm:activityId": "xcore:offer-activity:1",
            }
        ]
        * 31,
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "a@b.c"}]}}],
    }
    response = tenant.client.post(
        f"/data/core/ode/{tenant.container}/decisions",
        content=json.dumps(request),
        headers={**tenant.headers, "Content-Type": DECIDE_TYPE},
    )
    assert_problem(response, 422, "unprocessable", mentions="30")


def test_more_than_30_activity_ids_is_400(tenant):
    params = [("activityId", f"xcore:offer-activity:{i}") for i in range(31)]
    response = tenant.client.get(
        f"/data/core/ode/{tenant.container}/offers", params=params, headers=tenant.headers
    )
    assert_problem(response, 400, "bad-request", mentions="30")


def test_more_than_1000_patch_operations_is_400(tenant, placement):
    listed = tenant.client.get(
        tenant.url(), params={"schema": schema("offer-placement", None)}, headers=tenant.headers
    )
    instance_id = listed.json()["_embedded"]["results"][0]["instanceId"]
    ops = [{"op": "replace", "path": "/_instance/xdm:name", "value": "n"}] * 1001
    response = tenant.client.patch(
        tenant.url(f"/{instance_id}"),
        content=json.dumps(ops),
        headers={
            **tenant.headers,
            "Content-Type": PATCH_TYPE.format(schema=schema("offer-placement")),
        },
    )
    assert_problem(response, 400, "bad-request", mentions="1000")


def test_more_than_1000_events_is_413(tenant):
    events = [
        {"identityMap": {"Email": [{"id": "a@b.c"}]}, "timestamp": "2026-01-01T00:00:00Z"}
    ] * 1001
    response = tenant.client.post(
        "/data/core/nextoffer/events", json={"events": events}, headers=tenant.headers
    )
    assert_problem(response, 413, "payload-too-large", mentions="1000")


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ('name matches ".*.*.*.*.*!"', "repeated parts"),
        ('name matches "' + "a?" * 11 + '"', "optional parts"),
        ('name matches "(a+)+$"', "nested quantifiers"),
        ('name matches "' + "a" * 513 + '"', "longer than 512"),
        ("age = 1 and " * 1300 + "true", "15000"),
        ("(" * 31 + "true" + ")" * 31, "nesting"),
    ],
)
def test_rules_over_a_complexity_limit_are_422_with_a_position(tenant, text, mentions):
    body = assert_problem(create(tenant, "eligibility-rule", rule_body(text)), 422, "p-q-l-error")
    assert mentions in body["message"] or mentions in body["detail"], body
    assert body["line"] >= 1 and body["column"] >= 1

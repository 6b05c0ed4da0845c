"""Console-test helpers: the CSRF token of a page, signing in, Debian's chromium."""

from __future__ import annotations

import os
import re

import pytest
from starlette.testclient import TestClient

from support.api import Tenant

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The first CSRF token of a page (every form of one page carries the same session's)."""
    match = CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: TestClient, tenant: Tenant) -> None:
    page = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={
            "csrf_token": csrf_of(page.text),
            "org": tenant.creds.org,
            "sandbox": tenant.creds.sandbox,
            "apiKey": tenant.creds.api_key,
            "accessToken": tenant.creds.access_token,
            "next": "/console/offers",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/offers"


def chromium_path() -> str:
    """Debian's chromium (``.ci/run`` installs it); its absence fails under CI."""
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        reason = "the browser tests need Debian's chromium at /usr/bin/chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return path

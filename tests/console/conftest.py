"""Console tests: in-process (TestClient, both databases) and in a real browser (Playwright
driving Debian's chromium against a live ``nextoffer serve``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.api import Tenant, make_tenant
from support.console import sign_in


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    settings = Settings(db_url=db_url, freeze_heap=False, access_log=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def tenant(client: TestClient, db_url: str) -> Tenant:
    return make_tenant(client, db_url, "ACME@AdobeOrg", "prod")


@pytest.fixture
def signed_in(client: TestClient, tenant: Tenant) -> Tenant:
    sign_in(client, tenant)
    return tenant

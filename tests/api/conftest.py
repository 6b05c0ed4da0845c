from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.api import HTML, WEB, Tenant, make_tenant


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    # freeze_heap collects the whole test process's garbage at every library rebuild
    # (+30 % run time here); tests/service/test_heap.py covers it.
    settings = Settings(db_url=db_url, freeze_heap=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def tenant(client: TestClient, db_url: str) -> Tenant:
    return make_tenant(client, db_url, "ACME@AdobeOrg", "prod")


@pytest.fixture
def placement(tenant: Tenant) -> str:
    receipt = tenant.create(
        "offer-placement",
        {"xdm:name": "Web banner", "xdm:channel": WEB, "xdm:componentType": HTML},
    )
    return str(receipt["@id"])

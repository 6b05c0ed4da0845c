from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import pytest
from starlette.testclient import TestClient
from support.api import HTML, WEB, Tenant, make_tenant

from nextoffer.api.app import create_app
from nextoffer.settings import Settings


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nextoffer.db'}"


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(db_url=db_url)), raise_server_exceptions=False) as test_client:
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

"""A datastream's allowed origins are kept as chromium sends ``Origin``.

The Edge route compares the header with the stored origins as text, so an origin a
marketer writes in another form than the browser's was refused (403) for every visitor:
a default port (``https://shop.example:443``), a host outside ASCII, an IPv6 address
(stored without its brackets). Each form below is saved through the datastreams API and
read back; chromium's own serialization of the same text (``new URL(text).origin``) is
the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.api import Tenant, make_tenant

FORMS = [
    "https://www.shop.test",
    "HTTPS://WWW.Shop.Test/",
    "https://shop.example:443",
    "http://shop.example:80",
    "https://shop.example:8443",
    "http://localhost:3000",
    "https://bücher.example",
    "https://ÉCOLE.example",
    "https://xn--bcher-kva.example",
    "http://[::1]:8080",
    "http://[2001:DB8::1]:80",
    "http://[0:0:0:0:0:0:0:1]:8080",
    "https://[1:0:0:2:0:0:0:3]",
    "https://[::FFFF:1.2.3.4]",
    "http://127.0.0.1:8000",
]


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    db_url = f"sqlite:///{tmp_path / 'nextoffer.db'}"
    settings = Settings(db_url=db_url, freeze_heap=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield make_tenant(client, db_url, "ORIGINS@AdobeOrg", "prod")


def test_each_form_of_an_origin_is_kept_as_chromium_sends_it(tenant: Tenant, browser: Any) -> None:
    page = browser.new_page()
    try:
        sent = page.evaluate("forms => forms.map(f => new URL(f).origin)", FORMS)
    finally:
        page.close()
    created = tenant.client.post(
        "/data/core/nextoffer/datastreams",
        json={"name": "web", "allowedOrigins": FORMS},
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    kept = created.json()["allowedOrigins"]
    # The datastream keeps each origin once: forms naming one origin are one entry.
    assert kept == list(dict.fromkeys(sent))

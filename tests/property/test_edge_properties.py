"""Random bodies on the public Edge endpoints, shaped as the Web SDK's or not: every
answer is a 2xx or a 4xx, never a 5xx. Anyone holding a datastream id can send these.

The bodies mix the members the SDK sends (events with ``xdm`` and decision scopes,
consent entries of both standards, identity maps, state) with values of every JSON type
in every place: a consent ``version`` that was a list made the endpoint raise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.settings import Settings
from support.api import Tenant, make_tenant

#: A TC string consenting to Adobe's purposes and vendor, and an ECID.
TC = "CO052l-O052l-DGAMBFRACBgAIBAAAAABIYgEawAQEagAAAA"
ECID = "12345678901234567890123456789012345678"
PATHS = [
    "/ee/v1/interact",
    "/ee/v2/interact",
    "/ee/v1/collect",
    "/ee/v1/privacy/set-consent",
    "/ee/nx1/v1/identity/acquire",
]
NAMES = [
    *("events", "xdm", "query", "data", "meta", "state", "entries", "key", "value"),
    *("consent", "standard", "version", "general", "collect", "val", "gdprApplies"),
    *("identityMap", "ECID", "Email", "id", "primary", "authenticatedState", "identity"),
    *("personalization", "decisionScopes", "eventType", "timestamp", "_id", "fetch"),
    *("_experience", "decisioning", "propositions", "propositionEventType", "scope"),
    *("__adobe", "ajo", "dryRun", "configOverrides", "maxAge"),
]

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["Adobe", "IAB TCF", "1.0", "2.0", "in", "y", TC, ECID, "web://a"]),
)
names = st.one_of(st.sampled_from(NAMES), st.text(max_size=3))
anything = st.recursive(
    leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=5)),
    max_leaves=25,
)
xdm = st.dictionaries(names, anything, max_size=6)
event = st.fixed_dictionaries(
    {"xdm": xdm},
    optional={
        "query": st.fixed_dictionaries(
            {},
            optional={
                "personalization": st.fixed_dictionaries(
                    {}, optional={"decisionScopes": st.lists(anything, max_size=3)}
                )
            },
        ),
        "data": anything,
    },
)
entry = st.fixed_dictionaries(
    {"standard": st.one_of(st.sampled_from(["Adobe", "IAB TCF"]), anything)},
    optional={
        "version": st.one_of(st.sampled_from(["1.0", "2.0", "2.2"]), anything),
        "value": anything,
        "gdprApplies": anything,
    },
)
bodies = st.one_of(
    anything,
    st.fixed_dictionaries(
        {"events": st.lists(event, min_size=1, max_size=3)},
        optional={"meta": st.fixed_dictionaries({}, optional={"state": anything})},
    ),
    st.fixed_dictionaries(
        {"consent": st.lists(entry, min_size=1, max_size=3)}, optional={"identityMap": anything}
    ),
    st.fixed_dictionaries(
        {"xdm": st.fixed_dictionaries({}, optional={"identityMap": anything})},
        optional={"query": anything},
    ),
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """An app on a SQLite database of its own (the property runs many examples on one
    app), its datastream's rate high enough for all of them."""
    db = f"sqlite:///{Path(tmp_path_factory.mktemp('edge')) / 'edge.db'}"
    settings_ = Settings(db_url=db, freeze_heap=False)
    with TestClient(create_app(settings_), raise_server_exceptions=False) as client:
        tenant: Tenant = make_tenant(client, db, "ACME@AdobeOrg", "prod")
        datastream = tenant.creds.datastream_id
        client.patch(
            f"/data/core/nextoffer/datastreams/{datastream}",
            json={"rateLimit": 1_000_000},
            headers=tenant.headers,
        ).raise_for_status()
        yield client, datastream


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, path=st.sampled_from(PATHS))
def test_an_edge_body_is_answered_without_a_server_error(
    edge: tuple[TestClient, str], body: Any, path: str
) -> None:
    client, datastream = edge
    response = client.post(
        path,
        params={"configId": datastream},
        content=json.dumps(body),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code < 500, (path, body, response.text[:500])

"""Batch decisioning helpers: a library (offer A capped as the test says, B for gold
profiles, fallback F), profiles, audiences, datasets and workload bodies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nextoffer.root import NextOffer
from nextoffer.service.batch.jobs import BatchJobs, Engine
from support.api import HTML, WEB, Tenant

SEGMENTS = "/data/core/ups/segment/definitions"
DATASETS = "/data/core/nextoffer/datasets"
DWM = "/data/core/dwm/workloads/decisions"


class Library:
    """Placement p; offers A (priority 20, capped as the test says) and B (10, for
    profiles with ``tier = "gold"`` only); fallback F; one live decision."""

    def __init__(self, tenant: Tenant, caps: list[dict[str, Any]]) -> None:
        create = tenant.create
        self.placement = create(
            "offer-placement", {"xdm:name": "p", "xdm:channel": WEB, "xdm:componentType": HTML}
        )["@id"]
        reps = [
            {
                "xdm:placement": self.placement,
                "xdm:components": [
                    {"@type": HTML, "dc:format": "text/html", "xdm:content": "<b>hi</b>"}
                ],
            }
        ]
        self.rule = create(
            "eligibility-rule",
            {
                "xdm:name": "gold",
                "xdm:condition": {
                    "xdm:type": "PQL",
                    "xdm:format": "pql/text",
                    "xdm:value": 'tier = "gold"',
                },
            },
        )["@id"]
        window = {"xdm:startDate": "2020-01-01T00:00:00Z", "xdm:endDate": "2099-01-01T00:00:00Z"}
        self.a = create(
            "personalized-offer",
            {
                "xdm:name": "A",
                "xdm:status": "approved",
                "xdm:rank": {"xdm:priority": 20},
                "xdm:representations": reps,
                "xdm:selectionConstraint": window,
                "xdm:frequencyCappingConstraints": caps,
            },
        )["@id"]
        self.b = create(
            "personalized-offer",
            {
                "xdm:name": "B",
                "xdm:status": "approved",
                "xdm:rank": {"xdm:priority": 10},
                "xdm:representations": reps,
                "xdm:selectionConstraint": {**window, "xdm:eligibilityRule": self.rule},
            },
        )["@id"]
        self.fallback = create(
            "fallback-offer",
            {"xdm:name": "F", "xdm:status": "approved", "xdm:representations": reps},
        )["@id"]
        collection = create(
            "offer-filter",
            {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": [self.a, self.b]},
        )["@id"]
        self.decision = create(
            "offer-activity",
            {
                "xdm:name": "d",
                "xdm:status": "live",
                "xdm:fallback": self.fallback,
                "xdm:criteria": [
                    {
                        "xdm:placements": [self.placement],
                        "xdm:optionSelection": {"xdm:filter": collection},
                    }
                ],
            },
        )["@id"]


def add_profiles(tenant: Tenant, count: int, *, start: int = 0) -> None:
    for n in range(start, start + count):
        body = {
            "identityMap": {"Email": [{"id": f"p{n:04d}@example.com"}]},
            "profile": {"age": n % 100, "tier": "gold" if n % 3 == 0 else "silver"},
        }
        response = tenant.client.post(
            "/data/core/nextoffer/profiles", json=body, headers=tenant.headers
        )
        assert response.status_code in (200, 201), response.text


def segment(tenant: Tenant, expression: str, name: str = "adults") -> str:
    response = tenant.client.post(
        SEGMENTS,
        json={
            "name": name,
            "description": "",
            "expression": {"type": "PQL", "format": "pql/text", "value": expression},
            "schema": {"name": "_xdm.context.profile"},
        },
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def dataset(tenant: Tenant, name: str = "offers") -> str:
    response = tenant.client.post(DATASETS, json={"name": name}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def workload(library: Library, segment_id: str, dataset_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "xdm:segmentIds": [segment_id],
        "xdm:dataSetId": dataset_id,
        "xdm:propositionRequests": [
            {
                "xdm:activityId": library.decision,
                "xdm:placementId": library.placement,
                "xdm:itemCount": 1,
            }
        ],
        "xdm:includeContent": False,
        **extra,
    }


def batch_runner(no: NextOffer, engines: Mapping[str, Engine], **options: Any) -> BatchJobs:
    """A batch runner of its own over ``no``'s store, catalogs, repository, datasets,
    clock and ids, with the test's ``engines`` (and ``poll_seconds``, ``max_jobs``,
    ``stall_seconds``…): what the root builds, with what the test needs in place."""
    return BatchJobs(
        no.store,
        catalogs=no.catalogs,
        repository=no.repository,
        datasets=no.datasets,
        clock=no.clock,
        ids=no.ids,
        engines=engines,
        **options,
    )

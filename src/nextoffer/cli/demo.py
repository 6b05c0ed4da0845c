"""The demo tenant ``serve --demo`` creates: a small library and a ready ``curl``."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import click
import orjson

from nextoffer.console import login_link
from nextoffer.ids import utcnow
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
    TAG,
    ObjectType,
    SchemaRef,
)
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.service.catalogs import CatalogCache
from nextoffer.service.repository import Repository
from nextoffer.service.tenants import Credentials
from nextoffer.settings import Settings

DEMO_ORG = "DEMO@AdobeOrg"
DEMO_SANDBOX = "prod"
DEMO_CLIENT = "nextoffer-demo"
DEMO_USER = "demo@nextoffer"

HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
WEB = "https://ns.adobe.com/xdm/channel-types/web"

#: The names :func:`seed_library` gives; a later start looks for these first.
DEMO_PLACEMENT_NAME = "Home page banner"
DEMO_DECISION_NAME = "Home page decision"


def _html(placement: str, text: str) -> dict[str, Any]:
    return {
        "xdm:placement": placement,
        "xdm:channel": WEB,
        "xdm:components": [
            {"@type": HTML, "dc:format": "text/html", "dc:language": ["en"], "xdm:content": text}
        ],
    }


def seed_library(repo: Repository, principal: Principal, container_id: str) -> dict[str, str]:
    """Create the demo objects; returns their ``@id`` by a short name."""

    def make(object_type: ObjectType, body: dict[str, Any]) -> str:
        ref = SchemaRef(object_type, object_type.stored_version, object_type.versioned_schema)
        return repo.create(principal, container_id, ref, body).at_id

    now = utcnow()
    window = {
        "xdm:startDate": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "xdm:endDate": (now + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    ids: dict[str, str] = {}
    ids["placement"] = make(
        PLACEMENT,
        {
            "xdm:name": DEMO_PLACEMENT_NAME,
            "xdm:channel": WEB,
            "xdm:componentType": HTML,
            "xdm:description": "The banner at the top of the home page",
        },
    )
    ids["tag"] = make(TAG, {"xdm:name": "Holiday sales and promotions"})
    ids["rule"] = make(
        RULE,
        {
            "xdm:name": "Gold members",
            "xdm:condition": {
                "xdm:type": "PQL",
                "xdm:format": "pql/text",
                "xdm:value": 'loyalty.tier = "gold"',
            },
        },
    )
    ids["gold_offer"] = make(
        PERSONALIZED_OFFER,
        {
            "xdm:name": "Gold members: 20% off",
            "xdm:status": "approved",
            "xdm:representations": [_html(ids["placement"], "<p>20% off for our gold members</p>")],
            "xdm:selectionConstraint": {**window, "xdm:eligibilityRule": ids["rule"]},
            "xdm:rank": {"xdm:priority": 10},
            "xdm:cappingConstraint": {"xdm:profileCap": 3},
            "xdm:tags": [ids["tag"]],
            "xdm:characteristics": {"offer_code": "GOLD20"},
        },
    )
    ids["holiday_offer"] = make(
        PERSONALIZED_OFFER,
        {
            "xdm:name": "Holiday sale: 10% off",
            "xdm:status": "approved",
            "xdm:representations": [
                _html(ids["placement"], "<p>10% off everything this season</p>")
            ],
            "xdm:selectionConstraint": window,
            "xdm:rank": {"xdm:priority": 5},
            "xdm:tags": [ids["tag"]],
            "xdm:characteristics": {"offer_code": "HOLIDAY10"},
        },
    )
    ids["fallback"] = make(
        FALLBACK_OFFER,
        {
            "xdm:name": "Welcome banner",
            "xdm:status": "approved",
            "xdm:representations": [_html(ids["placement"], "<p>Welcome!</p>")],
        },
    )
    ids["collection"] = make(
        COLLECTION,
        {"xdm:name": "Holiday offers", "xdm:filterType": "anyTags", "xdm:ids": [ids["tag"]]},
    )
    ids["decision"] = make(
        DECISION,
        {
            "xdm:name": DEMO_DECISION_NAME,
            "xdm:status": "live",
            **window,
            "xdm:criteria": [
                {
                    "xdm:placements": [ids["placement"]],
                    "xdm:optionSelection": {"xdm:filter": ids["collection"]},
                }
            ],
            "xdm:fallback": ids["fallback"],
        },
    )
    return ids


def find_demo_ids(catalogs: CatalogCache, container_id: str) -> dict[str, str]:
    """The ``@id``s the welcome's curls need, read from a container seeded by an earlier start.

    ``decision`` and ``placement``: a live decision and a placement it covers, as the
    decision service resolves them (the same compiled catalog), the demo's own by name when
    they are still there. Without such a pair, ``placement`` alone (any placement, for the
    fallback create); an empty dict when the container has no placement.
    """
    catalog = catalogs.get(container_id).catalog

    def named(body: Mapping[str, Any], name: str) -> bool:
        return body.get("xdm:name") == name

    placements = sorted(
        catalog.placements.values(),
        key=lambda p: (not named(p.body, DEMO_PLACEMENT_NAME), p.at_id),
    )
    decisions = sorted(
        (d for d in catalog.decisions.values() if d.status == "live"),
        key=lambda d: (not named(d.body, DEMO_DECISION_NAME), d.at_id),
    )
    for decision in decisions:
        for placement in placements:
            if decision.covers(placement.at_id):
                return {"placement": placement.at_id, "decision": decision.at_id}
    return {"placement": placements[0].at_id} if placements else {}


def seed_demo(settings: Settings) -> Credentials:
    """Bootstrap the demo tenant, seed its library when the container is empty, and print
    the headers and curls; a later start on the same database prints curls for the library
    already there."""
    with NextOffer.open(settings) as no:
        creds = no.bootstrap(
            org=DEMO_ORG, sandbox=DEMO_SANDBOX, client_id=DEMO_CLIENT, user=DEMO_USER
        )
        with no.store.session() as session:
            seeded = session.count_instances(creds.container_id) == 0
        if seeded:
            ids = seed_library(no.repository, creds.principal, creds.container_id)
        else:
            ids = find_demo_ids(no.catalogs, creds.container_id)
    _print_welcome(settings, creds, ids, seeded=seeded)
    return creds


def _print_welcome(
    settings: Settings, creds: Credentials, ids: dict[str, str], *, seeded: bool
) -> None:
    base = f"http://{settings.host}:{settings.port}"
    headers = {
        "Authorization": f"Bearer {creds.access_token}",
        "x-api-key": creds.api_key,
        "x-gw-ims-org-id": creds.org,
        "x-sandbox-name": creds.sandbox,
    }
    click.echo("\nnextoffer demo tenant ready.\n")
    click.echo("Headers for every call:")
    for key, value in headers.items():
        click.echo(f"  {key}: {value}")
    click.echo(f"\nContainer: {creds.container_id}")
    link = login_link(
        base,
        org=creds.org,
        sandbox=creds.sandbox,
        api_key=creds.api_key,
        access_token=creds.access_token,
    )
    click.echo(f"Console (signs you in): {link}")
    click.echo(f"Datastream (the Web SDK's datastreamId, Edge configId): {creds.datastream_id}")
    listed = ", ".join(f"{k}={v}" for k, v in ids.items())
    if seeded:
        click.echo("Seeded library: " + listed)
    elif ids:
        click.echo("Library already seeded (an earlier start); using " + listed)
    if "placement" in ids:
        click.echo("\nCreate a fallback offer (the documented seed request):\n")
        click.echo(_fallback_curl(base, creds.container_id, headers, ids["placement"]) + "\n")
    else:
        click.echo(
            "\nThe demo container has no placement left, so there is no example to print;"
            " start with a new --db to seed the demo library again.\n"
        )
        return
    if "decision" in ids:
        click.echo("Ask for the best offer (with the explain trace):\n")
        click.echo(
            _decision_curl(base, creds.container_id, headers, ids["placement"], ids["decision"])
            + "\n"
        )
    else:
        click.echo(
            "The demo container has no live decision covering a placement, so there is no"
            " decision example; start with a new --db to seed the demo library again.\n"
        )


def _fallback_curl(base: str, container_id: str, headers: dict[str, str], placement: str) -> str:
    seed = {
        "xdm:status": "approved",
        "xdm:name": "Fallback for sales",
        "xdm:representations": [
            {
                "xdm:components": [
                    {"dc:language": ["en"], "@type": HTML, "dc:format": "text/html"}
                ],
                "xdm:channel": WEB,
                "xdm:placement": placement,
            }
        ],
    }
    schema = "https://ns.adobe.com/experience/offer-management/fallback-offer;version=0.1"
    lines = [f"curl -sS -X POST {base}/data/core/xcore/{container_id}/instances \\"]
    lines.append(
        "  -H "
        + shlex.quote("Accept: application/vnd.adobe.platform.xcore.xdm.receipt+json; version=1")
        + " \\"
    )
    lines.append(
        "  -H "
        + shlex.quote(
            f'Content-Type: application/schema-instance+json; version=1;  schema="{schema}"'
        )
        + " \\"
    )
    lines.extend("  -H " + shlex.quote(f"{k}: {v}") + " \\" for k, v in headers.items())
    lines.append("  -d " + shlex.quote(orjson.dumps(seed).decode()))
    return "\n".join(lines)


def _decision_curl(
    base: str, container_id: str, headers: dict[str, str], placement: str, decision: str
) -> str:
    request = {
        "xdm:propositionRequests": [{"xdm:placementId": placement, "xdm:activityId": decision}],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "someone@example.com"}]}}],
        "xdm:responseFormat": {
            "xdm:includeContent": True,
            "xdm:includeMetadata": {"xdm:option": ["name"]},
            "nextoffer:explain": True,
        },
    }
    decide_type = (
        "Content-Type: application/vnd.adobe.xdm+json; "
        'schema="https://ns.adobe.com/experience/offer-management/decision-request;version=1.0"'
    )
    call = [f"curl -sS -X POST {base}/data/core/ode/{container_id}/decisions \\"]
    call.append("  -H " + shlex.quote(decide_type) + " \\")
    call.extend("  -H " + shlex.quote(f"{k}: {v}") + " \\" for k, v in headers.items())
    call.append("  -d " + shlex.quote(orjson.dumps(request).decode()))
    return "\n".join(call)

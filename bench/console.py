"""Console page times at 1,000 offers: server time per page, in-process, on SQLite.

Seeds one container with 1,000 personalized offers (each with a representation, a tag,
and one of 20 rules), 3 placements, 10 tags, 20 rules, 2 ranking formulas, 10 collections,
5 decisions and a fallback, 3 AI ranking strategies (one ranks the first decision), and
records 300 decisions with their displays and a click on every fifth (for the reports and
the strategy's learning curves). Then each console
page is requested ``--requests`` times, one at a time, through Starlette's TestClient; a
middleware times each request inside the server (first byte of the request to the last
byte of the response). The reference, in the same run and the same way: the API's list of
the same offers (``GET …/instances?schema=…personalized-offer&limit=25``), the search the
console's list page runs before rendering it.

    .venv/bin/python bench/console.py [--offers 1000] [--requests 50] [--plot PNG]

``--plot`` draws p50 and p95 per page against the 100 ms goal (matplotlib).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from httpbench import machine
from rich.progress import track
from starlette.testclient import TestClient

from nextoffer.api.app import create_app
from nextoffer.engine import PropositionRequest
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RANKING_FORMULA,
    RANKING_STRATEGY,
    RULE,
    TAG,
)
from nextoffer.root import NextOffer
from nextoffer.service.decisions import DecisionCall
from nextoffer.settings import Settings

OM = "https://ns.adobe.com/experience/offer-management/"
WEB = "https://ns.adobe.com/xdm/channel-types/web"
HTML = OM + "content-component-html"
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')

Scope = dict[str, Any]
App = Callable[
    [Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]
]


class Timed:
    """ASGI middleware: the server time of each request, in seconds."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.times: list[float] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        await self.app(scope, receive, send)
        self.times.append(time.perf_counter() - start)


def seed(db_url: str, offers: int) -> dict[str, Any]:
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False)) as no:
        creds = no.bootstrap(org="BENCH@AdobeOrg", sandbox="prod")
        who, cid = creds.principal, creds.container_id

        def make(object_type: Any, body: dict[str, Any]) -> str:
            return no.create(who, cid, object_type, body).at_id

        placements = [
            make(
                PLACEMENT,
                {"xdm:name": f"Placement {n}", "xdm:channel": WEB, "xdm:componentType": HTML},
            )
            for n in range(3)
        ]
        tags = [make(TAG, {"xdm:name": f"Tag {n}"}) for n in range(10)]
        rules = [
            make(
                RULE,
                {
                    "xdm:name": f"Rule {n}",
                    "xdm:condition": {
                        "xdm:type": "PQL",
                        "xdm:format": "pql/text",
                        "xdm:value": f"age >= {n}",
                    },
                },
            )
            for n in range(20)
        ]
        for n in range(2):
            make(
                RANKING_FORMULA,
                {
                    "xdm:name": f"Formula {n}",
                    "xdm:expression": {
                        "xdm:type": "PQL",
                        "xdm:format": "pql/text",
                        "xdm:value": f"offer.rank.priority * {n + 1}",
                    },
                },
            )

        def representation(placement: str, text: str) -> dict[str, Any]:
            return {
                "xdm:channel": WEB,
                "xdm:placement": placement,
                "xdm:components": [{"@type": HTML, "dc:format": "text/html", "xdm:content": text}],
            }

        fallback = make(
            FALLBACK_OFFER,
            {
                "xdm:name": "Fallback",
                "xdm:status": "approved",
                "xdm:representations": [representation(p, "Hi") for p in placements],
            },
        )
        offer_ids = []
        for n in track(range(offers), description=f"seeding {offers} offers"):
            offer_ids.append(
                make(
                    PERSONALIZED_OFFER,
                    {
                        "xdm:name": f"Offer {n} {['gold', 'silver', 'bronze'][n % 3]}",
                        "xdm:status": "approved",
                        "xdm:representations": [
                            representation(placements[n % 3], f"<p>Offer {n}</p>")
                        ],
                        "xdm:selectionConstraint": {
                            "xdm:profileConstraintType": "eligibilityRule",
                            "xdm:eligibilityRule": rules[n % 20],
                        },
                        "xdm:rank": {"xdm:priority": n % 50},
                        "xdm:cappingConstraint": {"xdm:globalCap": 1000},
                        "xdm:tags": [tags[n % 10]],
                    },
                )
            )
        collections = [
            make(
                COLLECTION,
                {"xdm:name": f"Collection {n}", "xdm:filterType": "anyTags", "xdm:ids": [tags[n]]},
            )
            for n in range(10)
        ]
        strategies = [
            make(RANKING_STRATEGY, {"xdm:name": f"Strategy {n}", "xdm:strategyType": kind})
            for n, kind in enumerate(
                ("auto-optimization", "auto-optimization", "personalized-optimization")
            )
        ]

        def ranking(n: int) -> dict[str, Any]:
            if n:
                return {}
            order = {
                "xdm:orderEvaluationType": "rankingStrategy",
                "xdm:rankingStrategy": strategies[0],
            }
            return {"xdm:ranking": {"xdm:order": order}}

        decisions = [
            make(
                DECISION,
                {
                    "xdm:name": f"Decision {n}",
                    "xdm:status": "live",
                    "xdm:fallback": fallback,
                    "xdm:criteria": [
                        {
                            "xdm:placements": placements,
                            "xdm:optionSelection": {"xdm:filter": collections[n]},
                            **ranking(n),
                        }
                    ],
                },
            )
            for n in range(5)
        ]
        events: list[dict[str, Any]] = []
        for n in track(range(300), description="recording 300 decisions"):
            call = DecisionCall(
                propositions=(PropositionRequest(decisions[n % 5], placements[n % 3], 3),),
                identities=[("Email", f"p{n}@example.com")],
            )
            outcome = no.decide(who, cid, call, profile={"age": n % 40})
            for proposition in outcome.result.propositions:
                for option in proposition.options[:1]:
                    kinds = ["decisioning.propositionDisplay"]
                    kinds += ["decisioning.propositionInteract"] if n % 5 == 0 else []
                    events += [
                        {
                            "timestamp": outcome.created.isoformat(),
                            "eventType": kind,
                            "https://ns.adobe.com/experience/decisioning/propositions": [
                                {
                                    "xdm:id": outcome.proposition_id,
                                    "xdm:items": [{"xdm:id": option.offer_id}],
                                }
                            ],
                        }
                        for kind in kinds
                    ]
        for start in range(0, len(events), 100):
            outcomes = no.events.append(who, {"events": events[start : start + 100]})
            assert all(o.status == "stored" for o in outcomes), outcomes
        with no.store.session() as session:
            found = session.instances_by_at_id(cid, [offer_ids[7], placements[0], decisions[0]])
    return {
        "creds": creds,
        "offer": found[offer_ids[7]].instance_id,
        "placement": placements[0],
        "decision": decisions[0],
    }


#: What each page must show, so that a page answering fast with an error is not measured.
EXPECT = {
    "POST /console/simulate (dry run, explain, 3 items)": "Why each candidate",
    "POST /console/pql/check": '"ok":true',
    "/console/offers (list, 25 a page)": "Offer ",
    "/console/reports (30 days, charts)": "Strategy 0: CTR per day",
    "/console/offers/{id} (edit form)": "Representation 1",
}


def measure(
    client: TestClient, timed: Timed, method: str, url: str, requests: int, **kwargs: Any
) -> list[float]:
    for _ in range(5):  # warm-up
        response = client.request(method, url, **kwargs)
        assert response.status_code in (200, 303), (url, response.status_code, response.text[:500])
    timed.times.clear()
    for _ in range(requests):
        client.request(method, url, **kwargs)
    return list(timed.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--plot", type=Path, help="write a PNG of the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        seeded = seed(db_url, args.offers)
        creds = seeded["creds"]
        settings = Settings(db_url=db_url, freeze_heap=False, access_log=False, metrics=False)
        app = create_app(settings)
        timed = Timed(app)
        with TestClient(timed, follow_redirects=False) as client:  # type: ignore[arg-type]
            page = client.get("/console/login")
            client.post(
                "/console/login",
                data={
                    "csrf_token": CSRF.search(page.text).group(1),  # type: ignore[union-attr]
                    "org": creds.org,
                    "sandbox": creds.sandbox,
                    "apiKey": creds.api_key,
                    "accessToken": creds.access_token,
                },
            )
            token = CSRF.search(client.get("/console/offers").text).group(1)  # type: ignore[union-attr]
            api_headers = {
                "Authorization": f"Bearer {creds.access_token}",
                "x-api-key": creds.api_key,
                "x-gw-ims-org-id": creds.org,
                "x-sandbox-name": creds.sandbox,
            }
            cid = creds.container_id
            offer = seeded["offer"]
            cases: list[tuple[str, str, str, dict[str, Any]]] = [
                (
                    "API list of 25 offers (reference)",
                    "GET",
                    f"/data/core/xcore/{cid}/instances?schema={OM}personalized-offer&limit=25",
                    {"headers": api_headers},
                ),
                ("/console/offers (list, 25 a page)", "GET", "/console/offers", {}),
                (
                    "/console/offers?q=gold&status=approved",
                    "GET",
                    "/console/offers?q=gold&status=approved",
                    {},
                ),
                ("/console/offers/{id} (edit form)", "GET", f"/console/offers/{offer}", {}),
                ("/console/offers/{id}/history", "GET", f"/console/offers/{offer}/history", {}),
                (
                    "/console/collections/new (1,000 offers in a select)",
                    "GET",
                    "/console/collections/new",
                    {},
                ),
                ("/console/decisions/new", "GET", "/console/decisions/new", {}),
                ("/console/rules/new", "GET", "/console/rules/new", {}),
                ("/console/ranking-strategies", "GET", "/console/ranking-strategies", {}),
                (
                    "POST /console/pql/check",
                    "POST",
                    "/console/pql/check",
                    {
                        "json": {"source": 'age >= 18 and person.name.firstName = "Ada"'},
                        "headers": {"X-CSRF-Token": token},
                    },
                ),
                ("/console/simulate (form)", "GET", "/console/simulate", {}),
                (
                    "POST /console/simulate (dry run, explain, 3 items)",
                    "POST",
                    "/console/simulate",
                    {
                        "data": {
                            "csrf_token": token,
                            "decision": seeded["decision"],
                            "placements": seeded["placement"],
                            "items": "3",
                            "profile": '{"age": 30}',
                        }
                    },
                ),
                ("/console/reports (30 days, charts)", "GET", "/console/reports", {}),
                ("/console/reports.csv", "GET", "/console/reports.csv", {}),
            ]
            rows = []
            for label, method, url, kwargs in track(cases, description="measuring pages"):
                shown = client.request(method, url, **kwargs)
                assert EXPECT.get(label, "") in shown.text, (label, shown.text[:2000])
                times = measure(client, timed, method, url, args.requests, **kwargs)
                rows.append(
                    (
                        label,
                        statistics.median(times) * 1000,
                        statistics.quantiles(times, n=20)[18] * 1000,
                    )
                )
    reference = rows[0][1]
    print(f"\nmachine: {machine()}; {args.offers} offers; {args.requests} requests per page\n")
    print("| page | p50 ms | p95 ms | p50 / reference |")
    print("|---|---:|---:|---:|")
    for label, p50, p95 in rows:
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {p50 / reference:.1f}× |")
    if args.plot:
        plot(rows, args.plot, args.offers)


def plot(rows: list[tuple[str, float, float]], path: Path, offers: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _p50, _p95 in rows][::-1]
    fig, ax = plt.subplots(figsize=(10, 6))
    y = range(len(labels))
    ax.barh([i + 0.2 for i in y], [p95 for _l, _p, p95 in rows][::-1], 0.4, label="p95")
    ax.barh([i - 0.2 for i in y], [p50 for _l, p50, _p in rows][::-1], 0.4, label="p50")
    ax.axvline(100, color="red", linestyle="--", label="goal: 100 ms")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.set_xlabel("server time per request, ms")
    ax.set_title(f"Console pages at {offers:,} offers (in-process, SQLite)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

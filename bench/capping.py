"""The cost of capping per decision, through the service with a real SQLite store.

    .venv/bin/python bench/capping.py [--decisions 2000]

Two libraries, identical but for caps: 100 offers (5-condition PQL rules, priorities),
one decision, top 3. "No caps": no offer is capped. "Caps on every offer": each has a
global cap and a per-profile weekly frequency rule, limits high enough never to bind.
Each decision is recorded (not a dry run), so "no caps" pays one write (the decision
event) and "caps" pays the counter read (one batched query for all candidates), the
reservation (one write transaction for what was proposed) and the same record.
Reported: median µs per decision over repeats, and the ratio caps / no caps.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from scratch import scratch_dir

from nextoffer.engine import PropositionRequest
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
    SchemaRef,
)
from nextoffer.root import NextOffer
from nextoffer.service.auth import Principal
from nextoffer.service.decisions import DecisionCall, Decisions
from nextoffer.settings import Settings

HTML = "https://ns.adobe.com/experience/offer-management/content-component-html"
PROFILE = {"age": 35, "country": "US", "tier": "gold", "loyaltyPoints": 5000, "optIn": True}


def setup(capped: bool) -> tuple[Decisions, Principal, str, DecisionCall, NextOffer]:
    no = NextOffer.open(
        Settings(db_url=f"sqlite:///{scratch_dir('nextoffer-capping-') / 'bench.db'}")
    )
    creds = no.bootstrap(org="B@AdobeOrg", sandbox="prod")
    principal = creds.principal
    repo = no.repository
    container = creds.container_id

    def make(object_type: Any, body: dict[str, Any]) -> str:
        return repo.create(principal, container, SchemaRef(object_type, None, ""), body).at_id

    rng = random.Random(7)
    placement = make(PLACEMENT, {"xdm:name": "p", "xdm:channel": "web", "xdm:componentType": HTML})
    reps = [
        {"xdm:placement": placement, "xdm:components": [{"@type": HTML, "dc:format": "text/html"}]}
    ]
    offers = []
    for n in range(100):
        rule = make(
            RULE,
            {
                "xdm:name": f"r{n}",
                "xdm:condition": {
                    "xdm:value": (
                        f"age >= {rng.randint(18, 40)} "
                        'and country in ["US", "CA", "GB"] and tier = "gold" '
                        f"and loyaltyPoints > {rng.randint(0, 6000)} and optIn = true"
                    )
                },
            },
        )
        body: dict[str, Any] = {
            "xdm:name": f"o{n}",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:rank": {"xdm:priority": rng.randint(0, 100)},
            "xdm:selectionConstraint": {"xdm:eligibilityRule": rule},
        }
        if capped:
            body["xdm:cappingConstraint"] = {"xdm:globalCap": 10**9}
            body["xdm:frequencyCappingConstraints"] = [
                {
                    "xdm:limit": 10**9,
                    "xdm:scope": "profile",
                    "xdm:repeat": {"xdm:unit": "week", "xdm:unitCount": 1},
                }
            ]
        offers.append(make(PERSONALIZED_OFFER, body))
    fallback = make(
        FALLBACK_OFFER, {"xdm:name": "f", "xdm:status": "approved", "xdm:representations": reps}
    )
    collection = make(COLLECTION, {"xdm:name": "c", "xdm:filterType": "offers", "xdm:ids": offers})
    decision = make(
        DECISION,
        {
            "xdm:name": "d",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [{"xdm:optionSelection": {"xdm:filter": collection}}],
        },
    )
    call = DecisionCall(
        propositions=(PropositionRequest(decision, placement, 3),),
        identities=[("Email", "bench@x")],
    )
    return no.decisions, principal, container, call, no


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    worlds = {"no caps": setup(False), "caps on every offer": setup(True)}
    batch = max(args.decisions // args.repeats, 1)
    timings: dict[str, list[float]] = {name: [] for name in worlds}
    for _ in range(args.repeats):
        for name, (decisions, principal, container, call, _) in worlds.items():
            start = time.perf_counter()
            for _ in range(batch):
                decisions.decide(principal, container, call, profile=PROFILE, events=[])
            timings[name].append((time.perf_counter() - start) / batch * 1e6)
    for _, (*_, no) in worlds.items():
        no.close()
    base = statistics.median(timings["no caps"])
    print(
        f"{batch} decisions x {args.repeats} repeats, interleaved; "
        "median µs per recorded decision\n"
    )
    print("| library | µs per decision | ratio to no caps |")
    print("|---|---:|---:|")
    for name, values in timings.items():
        print(
            f"| {name} | {statistics.median(values):.0f} | {statistics.median(values) / base:.2f} |"
        )


if __name__ == "__main__":
    main()

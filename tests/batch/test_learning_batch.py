"""Batch decisions rank with what ranking strategies learned online
(``service/batch/chunk.py``): on both databases, after a strategy learned which offer is
clicked, a chunk's decisions pick it for (nearly) every profile; they ranked from the
untrained prior (uniformly at random) before."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import orjson

from nextoffer.engine import PropositionRequest
from nextoffer.root import NextOffer
from nextoffer.service.batch.chunk import ChunkDecider
from nextoffer.service.batch.plan import JobPlan
from nextoffer.settings import Settings
from support.api import Tenant
from support.ranking import AUTO, Shop, teach


def test_a_chunk_ranks_with_what_the_strategy_learned_online(
    tenant: Tenant, settings: Settings
) -> None:
    shop = Shop(tenant, AUTO)
    best = shop.offers[1]
    teach(shop, best, 60)  # online: every display of B is clicked, A and C never
    with NextOffer.open(replace(settings, batch_runner=False)) as no:
        plan = JobPlan(
            job_id="job-1",
            org=tenant.creds.org,
            sandbox=tenant.creds.sandbox,
            container_id=tenant.container,
            segment="age >= 0",
            propositions=(PropositionRequest(shop.decision, shop.placement, 1),),
            include_content=False,
            seed=7,
            decided_at=datetime.now(UTC),
            image=no.catalogs.image(tenant.container),
        )
        decider = ChunkDecider(plan, no.path, learning=no.learning)
        rows = [
            (f"p{n:04d}", "Email", f"p{n:04d}@example.com", orjson.dumps({"age": 20}).decode())
            for n in range(40)
        ]
        events, _ = decider.decide(rows)
    picks = Counter(event.propositions[0][2][0][0] for event in events)
    assert picks[best] >= 36, picks  # from the prior it would be about 13 of 40

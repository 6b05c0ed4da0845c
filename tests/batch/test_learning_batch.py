"""Batch decisions rank with what ranking strategies learned online
(``service/batch/chunk.py``): on both databases, after a strategy learned which offer is
clicked, a chunk's decisions pick it for (nearly) every profile; they ranked from the
untrained prior (uniformly at random) before."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import orjson

from batch.test_workloads import rows, wait_done
from nextoffer.engine import PropositionRequest
from nextoffer.root import NextOffer
from nextoffer.service.batch.chunk import ChunkDecider
from nextoffer.service.batch.plan import JobPlan
from nextoffer.settings import Settings
from support.api import Tenant
from support.batch import DWM, add_profiles, dataset, segment, workload
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


def test_a_local_job_picks_the_offer_the_strategy_learned_online(tenant: Tenant) -> None:
    # End to end, through the workloads API and the local engine's worker processes
    # (each opens its own root on the same store and reads what was learned).
    shop = Shop(tenant, AUTO)
    best = shop.offers[1]
    teach(shop, best, 60)
    add_profiles(tenant, 40)
    started = tenant.client.post(
        DWM,
        json=workload(shop, segment(tenant, "age >= 0"), dataset(tenant)),
        headers=tenant.headers,
    )
    assert started.status_code == 200, started.text
    done = wait_done(tenant, f"{DWM}/{started.json()['@id']}")
    assert done["ode:status"] == "COMPLETED", done
    decided = rows(tenant, done["xdm:dataSetId"])
    picks = Counter(
        r["_experience"]["decisioning"]["propositions"][0]["items"][0]["id"] for r in decided
    )
    assert len(decided) == 40
    assert picks[best] >= 36, picks  # from the prior it would be about 13 of 40

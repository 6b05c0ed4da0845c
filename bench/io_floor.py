"""``POST /floor/{container_id}``: the IO a recorded decision cannot skip, and nothing else.

The benchmark server adds this route next to ``GET /bare``. It takes the same request
body as ``POST …/decisions`` and does only what every recorded decision must do in the
embedded default's storage, through the same code:

* authenticate the caller and find the container's snapshot (cached after the first call);
* parse the JSON body and find the profile of its identity as a decision does
  (``Decisions.stored_profile``: the profile cache, else one driver read);
* write a decision record of the same shape: the event (a body like the real one, three
  offers proposed) and the reservations of the capped offers' counters, group-committed
  by ``SqlitePath`` and awaited like a decision's record; the offers report is folded
  from the events behind the answer, by the same path, as a decision's is (the lean
  record, ``storage/report_fold.py``).

It is served ahead of the router, by the same ``Shortcut`` as the decision route
(``httpbench.py`` adds it there), so it passes the same layers as a decision. What it
leaves out is the decision itself: rules, ranking, the response (a constant small
body). Its three offers are drawn from the library's ten highest-priority ones — real
decisions' picks concentrate there too — so its rows touch no more pages than theirs.
Its throughput bounds what any decision route could reach on this stack while recording
every decision: a row in ``http_decisions.py``'s table.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api.context import authenticate, nextoffer
from nextoffer.engine.model import Offer
from nextoffer.ids import epoch_micros, format_datetime, utcnow, uuid7
from nextoffer.service.caps import counter_key
from nextoffer.service.offload import finished
from nextoffer.storage.decision_path import DecisionRecord

#: Snapshot object id -> its ten highest-priority offers.
_TOP: dict[int, list[Offer]] = {}
_OK = b'{"status":"ok"}'


async def floor(request: Request) -> Response:
    no = nextoffer(request)
    principal = authenticate(request)
    container_id = request.path_params["container_id"]
    snapshot = no.catalogs.ready(container_id)
    if snapshot is None:  # the first request checks tenancy (the decision service's way)
        snapshot = await no.run(no.decisions.snapshot, principal, container_id)
    top = _TOP.get(id(snapshot))
    if top is None:
        ranked = sorted(snapshot.catalog.offers.values(), key=lambda o: (-o.priority, o.at_id))
        top = _TOP[id(snapshot)] = ranked[:10]
    body = orjson.loads(await request.body())
    ((namespace, entries),) = body["xdm:profiles"][0]["xdm:identityMap"].items()
    identity = entries[0]["xdm:id"]
    placement = body["xdm:propositionRequests"][0]["xdm:placementId"]
    path = no.path
    profile = no.decisions.stored_profile(principal, namespace, identity)
    key = profile[0] if profile is not None else f"identity:{namespace}:{identity}"
    now = utcnow()
    proposition_id = uuid7(now)
    chosen = random.sample(top, 3)
    stamp = format_datetime(now)
    record_body: dict[str, Any] = {
        "propositionId": proposition_id,
        "timestamp": stamp,
        "identity": {"namespace": namespace, "id": identity},
        "profileId": key,
        "profileKey": key,
        "decisionRequestId": None,
        "propositions": [
            {
                "activity": "xcore:offer-activity:0000000000000000",
                "placement": placement,
                "options": [{"id": offer.at_id} for offer in chosen],
                "fallback": None,
            }
        ],
    }
    # The counters a decision proposing these offers reserves, named as the service names
    # them (period, epoch and all).
    reserve = [
        (
            counter_key(
                container_id,
                offer.at_id,
                rule,
                profile_key=key,
                placement_id=placement,
                moment=now,
                epoch=snapshot.cap_epochs.get(offer.at_id, 0),
            ),
            rule.limit,
        )
        for offer in chosen
        for rule in offer.caps
        if rule.counts_propositions
    ]
    record = DecisionRecord(
        proposition_id=proposition_id,
        container_id=container_id,
        created=stamp,
        created_us=epoch_micros(now),
        profile_key=key,
        body=record_body,
        day=stamp[:10],
        proposed_offers=[offer.at_id for offer in chosen],
        reserve=reserve,
    )
    future = path.record(record)
    await finished(future)
    if future.result():  # a counter at its limit: the bench's caps are far above any run
        raise RuntimeError("a reservation was refused")
    return Response(_OK, media_type="application/json")


ROUTE = Route("/floor/{container_id}", floor, methods=["POST"])

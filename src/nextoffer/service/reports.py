"""The offers report: per offer and UTC day, propositions, impressions, clicks and CTR."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from nextoffer.errors import BadRequest
from nextoffer.service.auth import Principal
from nextoffer.service.caps import counter_key
from nextoffer.service.decisions import Decisions
from nextoffer.service.repository import Repository
from nextoffer.storage.counters import CapCounterStore, CounterKey
from nextoffer.storage.store import Store

#: The longest report one request may ask for.
MAX_DAYS = 366


class Reports:
    def __init__(
        self,
        store: Store,
        *,
        repository: Repository,
        decisions: Decisions,
        counters: CapCounterStore,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._repository = repository
        self._decisions = decisions
        self._counters = counters
        self._clock = clock

    def caps(self, principal: Principal, container_id: str) -> list[dict[str, Any]]:
        """Each offer's caps that count for everyone (not per profile or placement) with
        their current count, in the period running now: cap usage against limits."""
        snapshot = self._decisions.snapshot(principal, container_id)
        now = self._clock()
        found: list[tuple[dict[str, Any], CounterKey]] = []
        for offer_id, offer in sorted(snapshot.catalog.offers.items()):
            for rule in offer.caps:
                if rule.per_profile or rule.per_placement:
                    continue
                key = counter_key(
                    container_id,
                    offer_id,
                    rule,
                    profile_key="",
                    placement_id="",
                    moment=now,
                    epoch=snapshot.cap_epochs.get(offer_id, 0),
                )
                row = {
                    "offerId": offer_id,
                    "name": offer.body.get("xdm:name"),
                    "rule": rule.rule_id,
                    "events": sorted(event.value for event in rule.events),
                    "limit": rule.limit,
                    "repeat": f"{rule.repeat[1]} {rule.repeat[0]}" if rule.repeat else None,
                }
                found.append((row, key))
        counts = self._counters.read([key for _row, key in found]) if found else {}
        return [{**row, "count": counts.get(key, 0)} for row, key in found]

    def offers(
        self,
        principal: Principal,
        container_id: str,
        *,
        first: date,
        last: date,
        offer_ids: list[str],
    ) -> list[dict[str, Any]]:
        if last < first:
            raise BadRequest("to is before from", pointer="to")
        if (last - first).days >= MAX_DAYS:
            raise BadRequest(f"a report covers at most {MAX_DAYS} days", pointer="to")
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
            rows = session.runtime.offer_report(
                container_id, first_day=first.isoformat(), last_day=last.isoformat()
            )
        wanted = set(offer_ids)
        return [
            {
                **row,
                "clickThroughRate": row["clicks"] / row["impressions"]
                if row["impressions"]
                else None,
            }
            for row in rows
            if not wanted or row["offerId"] in wanted
        ]

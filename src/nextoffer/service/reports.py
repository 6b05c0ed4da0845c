"""The offers report: per offer and UTC day, propositions, impressions, clicks and CTR."""

from __future__ import annotations

from datetime import date
from typing import Any

from nextoffer.errors import BadRequest
from nextoffer.service.auth import Principal
from nextoffer.service.repository import Repository
from nextoffer.storage.store import Store

#: The longest report one request may ask for.
MAX_DAYS = 366


class Reports:
    def __init__(self, store: Store, *, repository: Repository) -> None:
        self._store = store
        self._repository = repository

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

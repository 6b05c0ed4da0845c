"""The reports: per offer and UTC day, propositions, impressions, clicks and CTR; per
ranking strategy and day, what each offer got and the lift against serving at random.

The offers report's propositions are folded from the decision events behind the answers
(``storage/report_fold.py``); a read of it folds first, so it counts every decision
recorded before the read, in any process."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from nextoffer.errors import BadRequest, NotFound
from nextoffer.repository.objects import RANKING_STRATEGY
from nextoffer.service.auth import Principal
from nextoffer.service.caps import counter_key
from nextoffer.service.decisions import Decisions
from nextoffer.service.repository import Repository
from nextoffer.storage.counters import CapCounterStore, CounterKey
from nextoffer.storage.store import Store

#: The longest report one request may ask for.
MAX_DAYS = 366
#: The days a report covers when it names no first day: this many, ending with its last.
DEFAULT_DAYS = 30


def report_days(from_text: str | None, to_text: str | None, *, today: date) -> tuple[date, date]:
    """A report's first and last day from its ``from`` and ``to`` (``YYYY-MM-DD``; without
    ``to``, ``today``; without ``from``, :data:`DEFAULT_DAYS` ending with ``to``, or as many
    as the calendar has before it). The range itself is checked by the report."""
    last = _day(to_text, "to") if to_text is not None else today
    if from_text is not None:
        return _day(from_text, "from"), last
    return last - timedelta(days=min(DEFAULT_DAYS - 1, (last - date.min).days)), last


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a date, YYYY-MM-DD", pointer=name) from exc


class Reports:
    def __init__(
        self,
        store: Store,
        *,
        repository: Repository,
        decisions: Decisions,
        counters: CapCounterStore,
        clock: Callable[[], datetime],
        fold: Callable[[], None],
    ) -> None:
        self._store = store
        self._repository = repository
        self._decisions = decisions
        self._counters = counters
        self._clock = clock
        self._fold = fold

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

    def ranking_strategy(
        self,
        principal: Principal,
        container_id: str,
        strategy: str,
        *,
        first: date,
        last: date,
    ) -> dict[str, Any]:
        """Per UTC day (and over the whole range): impressions, clicks, CTR and traffic
        share per offer, and the estimated lift against serving at random.

        ``strategy`` is the strategy's instance id or ``@id``."""
        _check_range(first, last)
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
            record = session.get_instance(container_id, strategy)
            if record is None:
                record = session.instances_by_at_id(container_id, [strategy]).get(strategy)
            if record is None or record.schema_id != RANKING_STRATEGY.schema_id:
                raise NotFound(f"no ranking strategy {strategy} in container {container_id}")
            rows = session.ranking.daily(
                container_id, record.at_id, first_day=first.isoformat(), last_day=last.isoformat()
            )
        by_day: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(row["day"], []).append(row)
        return {
            "containerId": container_id,
            "strategyId": record.at_id,
            "instanceId": record.instance_id,
            "strategyType": record.body.get("xdm:strategyType"),
            "from": first.isoformat(),
            "to": last.isoformat(),
            "total": _period(rows),
            "days": [{"day": day, **_period(found)} for day, found in sorted(by_day.items())],
        }

    def offers(
        self,
        principal: Principal,
        container_id: str,
        *,
        first: date,
        last: date,
        offer_ids: list[str],
    ) -> list[dict[str, Any]]:
        _check_range(first, last)
        with self._store.session() as session:
            self._repository.container(session, principal, container_id)
        self._fold()  # read your writes: every decision recorded before this read
        with self._store.session() as session:
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


def _check_range(first: date, last: date) -> None:
    if last < first:
        raise BadRequest("to is before from", pointer="to")
    if (last - first).days >= MAX_DAYS:
        raise BadRequest(f"a report covers at most {MAX_DAYS} days", pointer="to")


#: The normal quantile of a two-sided 95 % interval.
_Z95 = 1.959964


def _rate(clicks: int, impressions: int) -> float | None:
    return clicks / impressions if impressions else None


def _period(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One period of a strategy's traffic: per offer, and the lift against random."""
    offers: dict[str, list[int]] = {}
    explored = [0, 0]
    served = [0, 0]
    for row in rows:
        counts = offers.setdefault(row["offerId"], [0, 0])
        counts[0] += row["impressions"]
        counts[1] += row["clicks"]
        part = explored if row["explored"] else served
        part[0] += row["impressions"]
        part[1] += row["clicks"]
    impressions = sum(n for n, _ in offers.values())
    clicks = sum(c for _, c in offers.values())
    return {
        "impressions": impressions,
        "clicks": clicks,
        "clickThroughRate": _rate(clicks, impressions),
        "exploredImpressions": explored[0],
        "exploredClicks": explored[1],
        "offers": [
            {
                "offerId": offer_id,
                "impressions": n,
                "clicks": c,
                "clickThroughRate": _rate(c, n),
                "trafficShare": n / impressions if impressions else None,
            }
            for offer_id, (n, c) in sorted(offers.items())
        ],
        "lift": _lift(served, explored, offers),
    }


def _lift(
    served: list[int], explored: list[int], offers: Mapping[str, list[int]]
) -> dict[str, Any] | None:
    """The strategy's CTR over the CTR of serving at random, minus one, with a 95 %
    interval (a normal interval on the log of the ratio).

    The random baseline is the traffic the strategy served at random (personalized
    exploration: the same requests, ranked uniformly) when it has some; otherwise the
    mean of the offers' CTRs, what uniform serving of the same offers would earn if their
    rates did not depend on who saw them. Rates are smoothed by half a click per
    impression (Agresti-Caffo) so that a period with no click still has an interval.
    Clicks can outnumber impressions (a proposition clicked twice, a click whose display
    was never sent): at most one click an impression is counted.
    """
    served = [served[0], min(served[1], served[0])]
    explored = [explored[0], min(explored[1], explored[0])]
    offers = {k: [n, min(c, n)] for k, (n, c) in offers.items()}
    n_s, c_s = served if served[0] else explored
    if n_s == 0:
        return None
    p_s = (c_s + 0.5) / (n_s + 1)
    var_log_s = (1 - p_s) / ((n_s + 1) * p_s)
    if explored[0] and served[0]:
        baseline = "exploredTraffic"
        p_r = (explored[1] + 0.5) / (explored[0] + 1)
        var_log_r = (1 - p_r) / ((explored[0] + 1) * p_r)
    else:
        baseline = "meanOfferRate"
        rates = [((c + 0.5) / (n + 1), n + 1) for n, c in offers.values() if n]
        p_r = sum(p for p, _ in rates) / len(rates)
        var_r = sum(p * (1 - p) / n for p, n in rates) / len(rates) ** 2
        var_log_r = var_r / p_r**2
    log_ratio = math.log(p_s / p_r)
    half = _Z95 * math.sqrt(var_log_s + var_log_r)
    return {
        "estimate": math.exp(log_ratio) - 1,
        "low": math.exp(log_ratio - half) - 1,
        "high": math.exp(log_ratio + half) - 1,
        "confidence": 0.95,
        "baseline": baseline,
        "baselineClickThroughRate": p_r,
    }

"""Reports: propositions, impressions, clicks and CTR per offer and day, as charts, a table
and CSV; cap usage against limits; the ranking strategies' learning curves (CTR per day
against the random baseline, impressions and clicks per day, traffic share per offer, the
lift with its interval — ``Reports.ranking_strategy``, the API's report). Charts are SVG
drawn on the server (``charts.py``) and inlined in the page."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.console import charts, web
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import BadRequest
from nextoffer.ids import utcnow
from nextoffer.repository.objects import PERSONALIZED_OFFER, RANKING_STRATEGY
from nextoffer.service.reports import report_days

#: Caps listed (the fullest first).
CAPS_SHOWN = 50
#: Offers drawn in the bar chart (the busiest; the table and CSV list them all).
CHART_OFFERS = 15
#: Strategies with a panel (by name; the rest are counted and linked to their pages).
STRATEGIES_SHOWN = 10


def _range(request: Request) -> tuple[date, date]:
    """The form's days; a field left empty is absent (``service.reports.report_days``)."""
    params = request.query_params
    return report_days(params.get("from") or None, params.get("to") or None, today=utcnow().date())


async def _rows(request: Request, visitor: Visitor) -> tuple[date, date, list[dict[str, Any]]]:
    first, last = _range(request)
    no = nextoffer(request)
    rows = await no.run(
        no.reports.offers,
        visitor.principal,
        visitor.container_id,
        first=first,
        last=last,
        offer_ids=[],
    )
    return first, last, rows


async def _names(request: Request, visitor: Visitor) -> dict[str, str]:
    options = await nextoffer(request).run(web.options, request, visitor, {PERSONALIZED_OFFER})
    return {at_id: name for at_id, name, _b in options[PERSONALIZED_OFFER]}


def _totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = defaultdict(
        lambda: {"propositions": 0, "impressions": 0, "clicks": 0}
    )
    for row in rows:
        for key in ("propositions", "impressions", "clicks"):
            totals[row["offerId"]][key] += int(row[key])
    return totals


@web.page
async def reports_page(request: Request, visitor: Visitor) -> Response:
    try:
        first, last, rows = await _rows(request, visitor)
    except BadRequest as exc:
        # Dates the form cannot report on (reversed, more than a year apart): the form
        # again with what was typed and why, not an error page without the form.
        params = request.query_params
        return web.render(
            request,
            "reports.html",
            {
                "range_error": exc.detail,
                "from_text": params.get("from", ""),
                "to_text": params.get("to", ""),
            },
            visitor=visitor,
        )
    no = nextoffer(request)
    names = await _names(request, visitor)
    caps = await no.run(no.reports.caps, visitor.principal, visitor.container_id)
    strategies, more_strategies = await no.run(_strategies, request, visitor, first, last)
    totals = sorted(
        (
            {
                "offerId": offer_id,
                "name": names.get(offer_id, offer_id),
                **values,
                "ctr": values["clicks"] / values["impressions"] if values["impressions"] else None,
            }
            for offer_id, values in _totals(rows).items()
        ),
        key=lambda r: (-int(str(r["propositions"])), str(r["offerId"])),
    )
    # The caps nearest their limits first; the rest are counted, not listed.
    caps.sort(key=lambda c: (-c["count"] / max(c["limit"], 1), str(c["offerId"])))
    more_caps = max(len(caps) - CAPS_SHOWN, 0)
    caps = caps[:CAPS_SHOWN]
    for cap in caps:
        cap["name"] = cap["name"] or names.get(cap["offerId"], cap["offerId"])
    query = f"from={first.isoformat()}&to={last.isoformat()}"
    # The charts escape every text they draw (charts.py): safe to inline as markup.
    daily = Markup(_daily_chart(first, last, rows)) if rows else None
    by_offer = Markup(_offers_chart(totals)) if rows else None
    return web.render(
        request,
        "reports.html",
        {
            "range_error": None,
            "from_text": first.isoformat(),
            "to_text": last.isoformat(),
            "first": first,
            "last": last,
            "totals": totals,
            "caps": caps,
            "more_caps": more_caps,
            "query": query,
            "empty": not rows,
            "daily": daily,
            "by_offer": by_offer,
            "strategies": [_strategy_panel(s, names) for s in strategies],
            "more_strategies": more_strategies,
        },
        visitor=visitor,
    )


_SERIES = (
    ("propositions", "Propositions"),
    ("impressions", "Impressions"),
    ("clicks", "Clicks"),
)


def _daily_chart(first: date, last: date, rows: list[dict[str, Any]]) -> str:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    by_day: dict[str, dict[str, int]] = defaultdict(
        lambda: {"propositions": 0, "impressions": 0, "clicks": 0}
    )
    for row in rows:
        for key, _label in _SERIES:
            by_day[row["day"]][key] += int(row[key])
    return charts.line_chart(
        "All offers by day",
        [d.isoformat() for d in days],
        {label: [by_day[d.isoformat()][key] for d in days] for key, label in _SERIES},
    )


def _offers_chart(totals: list[dict[str, Any]]) -> str:
    shown = totals[:CHART_OFFERS]
    return charts.bar_chart(
        "By offer (the busiest)",
        [str(t["name"])[:24] for t in shown],
        {label: [int(t[key]) for t in shown] for key, label in _SERIES},
    )


def _strategies(
    request: Request, visitor: Visitor, first: date, last: date
) -> tuple[list[dict[str, Any]], int]:
    """The reports of the first strategies by name, and how many more there are (blocking)."""
    no = nextoffer(request)
    # Names only (no bodies): a container holds at most 1,000 strategies.
    found = no.repository.names(
        visitor.principal, visitor.container_id, RANKING_STRATEGY, limit=web.MAX_OPTIONS
    )
    reports = []
    for at_id, name in found[:STRATEGIES_SHOWN]:
        report = no.reports.ranking_strategy(
            visitor.principal, visitor.container_id, at_id, first=first, last=last
        )
        reports.append({**report, "name": name or at_id})
    return reports, max(len(found) - STRATEGIES_SHOWN, 0)


def _percent(value: float | None) -> float:
    return 0.0 if value is None else round(100 * value, 3)


def _strategy_panel(report: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """One strategy's panel: its learning curves as charts (none without traffic)."""
    days = report["days"]
    panel: dict[str, Any] = {**report, "charts": []}
    if not days:
        return panel
    labels = [d["day"] for d in days]
    name = str(report["name"])
    panel["charts"] = [
        Markup(
            charts.line_chart(
                f"{name}: CTR per day (%)",
                labels,
                {
                    "Strategy CTR %": [_percent(d["clickThroughRate"]) for d in days],
                    "Random baseline CTR %": [
                        _percent((d["lift"] or {}).get("baselineClickThroughRate")) for d in days
                    ],
                },
            )
        ),
        Markup(
            charts.line_chart(
                f"{name}: impressions and clicks per day",
                labels,
                {
                    "Impressions": [d["impressions"] for d in days],
                    "Clicks": [d["clicks"] for d in days],
                    "Served at random": [d["exploredImpressions"] for d in days],
                },
            )
        ),
    ]
    offers = sorted(report["total"]["offers"], key=lambda o: -int(o["impressions"]))
    shown = offers[:CHART_OFFERS]
    panel["charts"].append(
        Markup(
            charts.bar_chart(
                f"{name}: traffic share per offer (%)",
                [names.get(o["offerId"], o["offerId"])[:24] for o in shown],
                {"Share of impressions %": [_percent(o["trafficShare"]) for o in shown]},
            )
        )
    )
    panel["offers"] = [{**o, "name": names.get(o["offerId"], o["offerId"])} for o in offers]
    return panel


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading ``= + - @`` would start a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@web.page
async def report_csv(request: Request, visitor: Visitor) -> Response:
    first, last, rows = await _rows(request, visitor)
    names = await _names(request, visitor)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", "offerId", "offerName", "propositions", "impressions", "clicks", "ctr"])
    for row in sorted(rows, key=lambda r: (r["day"], r["offerId"])):
        ctr = row["clickThroughRate"]
        writer.writerow(
            [
                row["day"],
                row["offerId"],
                _cell(names.get(row["offerId"], "")),
                row["propositions"],
                row["impressions"],
                row["clicks"],
                "" if ctr is None else f"{ctr:.6f}",
            ]
        )
    filename = f"offers-{first.isoformat()}-{last.isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **web.PRIVATE},
    )


routes = [
    Route("/reports", reports_page, methods=["GET"]),
    Route("/reports.csv", report_csv, methods=["GET"]),
]

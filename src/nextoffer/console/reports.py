"""Reports: propositions, impressions, clicks and CTR per offer and day, as charts, a table
and CSV; cap usage against limits.

Charts are SVG drawn on the server by pygal and served as images (``<img>``): an SVG
image runs no script and the page's Content-Security-Policy needs no inline styles.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pygal
from pygal.style import Style
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.console import web
from nextoffer.console.session import Visitor, nextoffer
from nextoffer.errors import BadRequest
from nextoffer.repository.objects import PERSONALIZED_OFFER

#: Offers drawn in the bar chart (the busiest; the table and CSV list them all).
CHART_OFFERS = 15
_STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#222",
    foreground_strong="#111",
    foreground_subtle="#666",
    colors=("#1f5fbf", "#d9822b", "#2e8540", "#8e44ad"),
    font_family="system-ui, sans-serif",
)
_SVG_HEADERS = {
    # Shown through <img>: no script runs; pygal's own <style> needs inline styles.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _day(request: Request, name: str, default: date) -> date:
    text = request.query_params.get(name)
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a date, YYYY-MM-DD", pointer=name) from exc


def _range(request: Request) -> tuple[date, date]:
    last = _day(request, "to", datetime.now(UTC).date())
    first = _day(request, "from", last - timedelta(days=29))
    return first, last


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
    first, last, rows = await _rows(request, visitor)
    no = nextoffer(request)
    names = await _names(request, visitor)
    caps = await no.run(no.reports.caps, visitor.principal, visitor.container_id)
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
    for cap in caps:
        cap["name"] = cap["name"] or names.get(cap["offerId"], cap["offerId"])
    query = f"from={first.isoformat()}&to={last.isoformat()}"
    return web.render(
        request,
        "reports.html",
        {
            "first": first,
            "last": last,
            "totals": totals,
            "caps": caps,
            "query": query,
            "empty": not rows,
        },
        visitor=visitor,
    )


def _svg(chart: Any) -> Response:
    return Response(chart.render(is_unicode=True), media_type="image/svg+xml", headers=_SVG_HEADERS)


def _chart_config() -> dict[str, Any]:
    return {
        "js": [],  # no script from a CDN (nor any: an <img> runs none)
        "style": _STYLE,
        "width": 900,
        "height": 320,
        "legend_at_bottom": True,
        "x_label_rotation": 30,
        "show_minor_x_labels": False,
    }


@web.page
async def daily_chart(request: Request, visitor: Visitor) -> Response:
    first, last, rows = await _rows(request, visitor)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    by_day: dict[str, dict[str, int]] = defaultdict(
        lambda: {"propositions": 0, "impressions": 0, "clicks": 0}
    )
    for row in rows:
        for key in ("propositions", "impressions", "clicks"):
            by_day[row["day"]][key] += int(row[key])
    chart = pygal.Line(**_chart_config(), title="All offers by day")
    chart.x_labels = [d.isoformat() for d in days]
    chart.x_labels_major_every = max(1, len(days) // 10)
    for key, label in (
        ("propositions", "Propositions"),
        ("impressions", "Impressions"),
        ("clicks", "Clicks"),
    ):
        chart.add(label, [by_day[d.isoformat()][key] for d in days])
    return _svg(chart)


@web.page
async def offers_chart(request: Request, visitor: Visitor) -> Response:
    _first, _last, rows = await _rows(request, visitor)
    names = await _names(request, visitor)
    totals = sorted(_totals(rows).items(), key=lambda item: -item[1]["propositions"])
    shown = totals[:CHART_OFFERS]
    chart = pygal.Bar(**_chart_config(), title="By offer (the busiest)")
    chart.x_labels = [names.get(offer_id, offer_id)[:30] for offer_id, _v in shown]
    for key, label in (
        ("propositions", "Propositions"),
        ("impressions", "Impressions"),
        ("clicks", "Clicks"),
    ):
        chart.add(label, [values[key] for _id, values in shown])
    return _svg(chart)


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
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


routes = [
    Route("/reports", reports_page, methods=["GET"]),
    Route("/reports/daily.svg", daily_chart, methods=["GET"]),
    Route("/reports/offers.svg", offers_chart, methods=["GET"]),
    Route("/reports.csv", report_csv, methods=["GET"]),
]

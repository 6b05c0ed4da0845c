"""Reporting (beyond Adobe): ``GET /data/core/nextoffer/reports/offers``."""

from __future__ import annotations

from datetime import date

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nextoffer.api.context import authenticate, nextoffer
from nextoffer.api.responses import json_response
from nextoffer.errors import BadRequest
from nextoffer.ids import utcnow
from nextoffer.service.reports import report_days


def _window(request: Request) -> tuple[str, date, date]:
    """The report's ``containerId`` (required) and its days (``service.reports.report_days``)."""
    params = request.query_params
    container_id = params.get("containerId")
    if not container_id:
        raise BadRequest("containerId is required", pointer="containerId")
    first, last = report_days(params.get("from"), params.get("to"), today=utcnow().date())
    return container_id, first, last


async def offers_report(request: Request) -> Response:
    principal = authenticate(request)
    no = nextoffer(request)
    container_id, first, last = _window(request)
    rows = await no.run(
        no.reports.offers,
        principal,
        container_id,
        first=first,
        last=last,
        offer_ids=request.query_params.getlist("offerId"),
    )
    return json_response(
        {
            "containerId": container_id,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "rows": rows,
        }
    )


async def ranking_strategy_report(request: Request) -> Response:
    """``GET /data/core/nextoffer/reports/ranking-strategies/{id}?containerId=…``: per
    day, impressions, clicks, CTR and traffic share per offer, and the lift against
    serving at random (``id`` is the strategy's instance id or ``@id``)."""
    principal = authenticate(request)
    no = nextoffer(request)
    container_id, first, last = _window(request)
    report = await no.run(
        no.reports.ranking_strategy,
        principal,
        container_id,
        request.path_params["strategy"],
        first=first,
        last=last,
    )
    return json_response(report)


routes = [
    Route("/data/core/nextoffer/reports/offers", offers_report, methods=["GET"]),
    Route(
        "/data/core/nextoffer/reports/ranking-strategies/{strategy}",
        ranking_strategy_report,
        methods=["GET"],
    ),
]

"""A report's days (``from``, ``to``), the same for the API's two reports and the console's
page (``service.reports.report_days``), down to the calendar's first day: schemathesis
found ``to=0001-01-03`` answered 500 (the default ``from``, 29 days earlier, is before
year 1)."""

from __future__ import annotations

from datetime import date

import pytest

from nextoffer.errors import BadRequest
from nextoffer.service.reports import report_days
from support.ranking import AUTO, Shop

TODAY = date(2026, 12, 6)


@pytest.mark.parametrize(
    ("given", "days"),
    [
        ((None, None), (date(2026, 11, 7), TODAY)),
        ((None, "2026-02-01"), (date(2026, 1, 3), date(2026, 2, 1))),
        (("2026-01-05", None), (date(2026, 1, 5), TODAY)),
        ((None, "0001-01-03"), (date(1, 1, 1), date(1, 1, 3))),
        ((None, "0001-01-01"), (date(1, 1, 1), date(1, 1, 1))),
        ((None, "9999-12-31"), (date(9999, 12, 2), date(9999, 12, 31))),
    ],
)
def test_the_days_of_a_report(given: tuple[str | None, str | None], days: tuple[date, date]):
    assert report_days(*given, today=TODAY) == days


@pytest.mark.parametrize(("given", "name"), [(("x", None), "from"), ((None, "2026-13-01"), "to")])
def test_a_day_that_is_not_one_is_a_400_naming_it(given: tuple[str | None, str | None], name):
    with pytest.raises(BadRequest) as refused:
        report_days(*given, today=TODAY)
    assert refused.value.pointer == name


def test_both_reports_answer_up_to_the_calendars_first_day(tenant):
    shop = Shop(tenant, AUTO)
    for url in (
        "/data/core/nextoffer/reports/offers",
        f"/data/core/nextoffer/reports/ranking-strategies/{shop.strategy}",
    ):
        response = tenant.client.get(
            url,
            params={"containerId": tenant.container, "to": "0001-01-03"},
            headers=tenant.headers,
        )
        assert response.status_code == 200, (url, response.text)
        assert (response.json()["from"], response.json()["to"]) == ("0001-01-01", "0001-01-03")

"""Capping rules: parsing, validation and the calendar periods counters reset on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nextoffer.engine.frequency import CapEvent, cap_rules, period_of
from nextoffer.errors import Unprocessable


def rule(**spec):
    return cap_rules({"xdm:frequencyCappingConstraints": [{"xdm:limit": 3, **spec}]})[0]


def test_legacy_caps_become_proposition_rules():
    rules = cap_rules({"xdm:cappingConstraint": {"xdm:globalCap": 100, "xdm:profileCap": 2}})
    assert [(r.rule_id, r.limit, r.per_profile) for r in rules] == [
        ("globalCap", 100, False),
        ("profileCap", 2, True),
    ]
    assert all(r.events == {CapEvent.DECISIONING} and r.repeat is None for r in rules)


def test_defaults_and_xdm_count_alias():
    only = cap_rules(
        {"xdm:frequencyCappingConstraints": [{"xdm:count": 10, "xdm:scope": "profile"}]}
    )[0]
    assert (only.limit, only.per_profile, only.per_placement, only.events) == (
        10,
        True,
        False,
        {CapEvent.DECISIONING},
    )


def test_the_rule_id_ignores_the_limit_so_counts_survive_a_new_limit():
    assert rule(**{"xdm:limit": 3}).rule_id == rule(**{"xdm:limit": 7}).rule_id
    assert rule(**{"xdm:scope": "profile"}).rule_id != rule(**{"xdm:scope": "global"}).rule_id


def test_disabled_rules_are_ignored():
    assert (
        cap_rules({"xdm:frequencyCappingConstraints": [{"xdm:limit": 1, "xdm:enabled": False}]})
        == ()
    )


@pytest.mark.parametrize(
    ("spec", "pointer"),
    [
        ({"xdm:limit": 0}, "/xdm:frequencyCappingConstraints/0/xdm:limit"),
        ({"xdm:limit": -2}, "/xdm:frequencyCappingConstraints/0/xdm:limit"),
        (
            {"xdm:limit": 1, "xdm:events": ["view"]},
            "/xdm:frequencyCappingConstraints/0/xdm:events/0",
        ),
        (
            {"xdm:limit": 1, "xdm:events": ["custom"]},
            "/xdm:frequencyCappingConstraints/0/xdm:customQuery",
        ),
        ({"xdm:limit": 1, "xdm:scope": "team"}, "/xdm:frequencyCappingConstraints/0/xdm:scope"),
        (
            {"xdm:limit": 1, "xdm:repeat": {"xdm:unit": "month", "xdm:unitCount": 25}},
            "/xdm:frequencyCappingConstraints/0/xdm:repeat/xdm:unitCount",
        ),
        (
            {"xdm:limit": 1, "xdm:repeat": {"xdm:unit": "week", "xdm:unitCount": 105}},
            "/xdm:frequencyCappingConstraints/0/xdm:repeat/xdm:unitCount",
        ),
        (
            {"xdm:limit": 1, "xdm:repeat": {"xdm:unit": "year"}},
            "/xdm:frequencyCappingConstraints/0/xdm:repeat/xdm:unit",
        ),
    ],
)
def test_bad_rules_are_refused_naming_the_field(spec, pointer):
    with pytest.raises(Unprocessable) as caught:
        cap_rules({"xdm:frequencyCappingConstraints": [spec]})
    assert caught.value.pointer == pointer


def test_at_most_ten_rules():
    with pytest.raises(Unprocessable):
        cap_rules({"xdm:frequencyCappingConstraints": [{"xdm:limit": 1}] * 11})


def at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_daily_periods_turn_at_midnight_utc():
    daily = rule(**{"xdm:repeat": {"xdm:unit": "day", "xdm:unitCount": 1}})
    assert period_of(daily, at("2026-03-01T23:59:59.999999")) + 1 == period_of(
        daily, at("2026-03-02T00:00:00")
    )
    # An offset time is the same instant: 01:30+02:00 is still the previous UTC day.
    local = datetime.fromisoformat("2026-03-02T01:30:00+02:00")
    assert period_of(daily, local) == period_of(daily, at("2026-03-01T12:00:00"))


def test_weekly_periods_start_on_sunday():
    weekly = rule(**{"xdm:repeat": {"xdm:unit": "week", "xdm:unitCount": 1}})
    saturday, sunday = at("2026-11-28T23:59:59"), at("2026-11-29T00:00:00")
    assert sunday.weekday() == 6
    assert period_of(weekly, sunday) == period_of(weekly, saturday) + 1
    assert period_of(weekly, sunday + timedelta(days=6, hours=23)) == period_of(weekly, sunday)


def test_monthly_periods_across_month_ends_and_leap_years():
    monthly = rule(**{"xdm:repeat": {"xdm:unit": "month", "xdm:unitCount": 1}})
    assert period_of(monthly, at("2028-02-29T23:59:59")) + 1 == period_of(
        monthly, at("2028-03-01T00:00:00")
    )
    assert period_of(monthly, at("2026-01-31T12:00:00")) + 1 == period_of(
        monthly, at("2026-02-01T00:00:00")
    )
    bimonthly = rule(**{"xdm:repeat": {"xdm:unit": "month", "xdm:unitCount": 2}})
    assert period_of(bimonthly, at("2026-01-15T00:00:00")) == period_of(
        bimonthly, at("2026-02-27T00:00:00")
    )
    assert (
        period_of(bimonthly, at("2026-03-01T00:00:00"))
        == period_of(bimonthly, at("2026-02-27T00:00:00")) + 1
    )


def test_rules_without_repeat_never_change_period():
    forever = rule()
    assert (
        period_of(forever, at("2020-01-01T00:00:00"))
        == period_of(forever, at("2030-06-01T00:00:00"))
        == 0
    )

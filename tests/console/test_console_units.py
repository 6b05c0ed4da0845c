"""Pure parts of the console: the reasons it explains, the charts it draws, the places
its 422 pointers land."""

from __future__ import annotations

from nextoffer.console import charts, kinds
from nextoffer.console.simulate import EXPLANATIONS
from nextoffer.engine import Reason


def test_every_reason_of_the_engine_has_words_in_the_simulation() -> None:
    assert set(EXPLANATIONS) == set(Reason)


def test_charts_escape_their_text_and_scale_to_the_largest_value() -> None:
    svg = charts.bar_chart("By offer", ["<b>x</b>"], {"Clicks & views": [40]})
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert "Clicks &amp; views" in svg
    assert ">50<" in svg  # the axis top: the next 1-2-5 step above 40
    line = charts.line_chart("Days", ["d1", "d2"], {"a": [0, 0]})
    assert line.count("<circle") == 2 and ">1<" in line  # an empty chart still has an axis


def test_repository_pointers_land_on_the_form_row_that_made_them() -> None:
    offers = kinds.KINDS["offers"]
    # The blank row 0 was skipped: body representation 0 came from form row 1.
    rows = {"representations": [1, 2]}
    assert kinds.field_for(offers, "/xdm:representations/0/xdm:placement", rows) == (
        "representations-1-placement"
    )
    assert kinds.field_for(offers, "/xdm:representations/1/xdm:components/0", rows) == (
        "representations-2-content"
    )
    assert kinds.field_for(offers, "/xdm:name", {}) == "name"
    assert kinds.field_for(offers, "/xdm:unknown", {}) is None
    decisions = kinds.KINDS["decisions"]
    assert kinds.field_for(decisions, "/xdm:criteria/0/xdm:optionSelection/xdm:filter", {}) == (
        "criteria-0-collection"
    )


def test_a_strategys_rate_is_sent_as_a_number_only_when_it_is_a_finite_one() -> None:
    # Anything else goes to the repository as text, whose 422 is shown beside the field.
    assert kinds._rate("0.25") == 0.25
    assert kinds._rate("nan") == "nan" and kinds._rate("inf") == "inf"
    assert kinds._rate("ten percent") == "ten percent"
    strategies = kinds.KINDS["ranking-strategies"]
    assert kinds.field_for(strategies, "/xdm:features/3", {}) == "features"
    assert kinds.field_for(strategies, "/xdm:explorationRate", {}) == "explorationRate"

"""The console end to end in a real browser: Playwright drives Debian's chromium against a
live ``nextoffer serve``. Every test also requires zero errors in the browser's console
(messages of type error, uncaught page errors, failed requests)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from nextoffer.cli.demo import DEMO_DECISION_NAME, DEMO_PLACEMENT_NAME
from nextoffer.repository.objects import OM
from support import CREATE_TYPE, schema
from support.console import chromium_path
from support.live import decision_request, headers_of, make_tenant
from support.servers import serve

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WEB = "https://ns.adobe.com/xdm/channel-types/web"


class Live:
    """The server, its tenant (seeded with the demo library) and an API client."""

    def __init__(self, base: str, creds: Any, ids: dict[str, str]) -> None:
        self.base = base
        self.creds = creds
        self.ids = ids
        self.api = httpx.Client(base_url=base, headers=headers_of(creds), timeout=10)

    def instances(self, type_name: str, **params: str) -> list[dict[str, Any]]:
        response = self.api.get(
            f"/data/core/xcore/{self.creds.container_id}/instances",
            params={"schema": schema(type_name, None), **params},
        )
        assert response.status_code == 200, response.text
        return list(response.json()["_embedded"]["results"])

    def create(self, type_name: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.api.post(
            f"/data/core/xcore/{self.creds.container_id}/instances",
            json=body,
            headers={"Content-Type": CREATE_TYPE.format(schema=schema(type_name))},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def one(self, type_name: str, name: str) -> dict[str, Any]:
        [found] = [
            r
            for r in self.instances(type_name, limit="1000")
            if r["_instance"].get("xdm:name") == name
        ]
        return found


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("console")
    db_url = f"sqlite:///{workdir / 'nextoffer.db'}"
    creds, ids = make_tenant(db_url, "ACME@AdobeOrg", "prod", seed=True)
    with serve(db_url, workdir=workdir) as base:
        server = Live(base, creds, ids)
        yield server
        server.api.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=ARGS)
        yield launched
        launched.close()


class Console:
    """A signed-in browser context that records every console error of its pages."""

    def __init__(self, context: BrowserContext, live: Live) -> None:
        self.context = context
        self.live = live
        self.errors: list[str] = []

    def page(self) -> Page:
        page = self.context.new_page()
        page.on(
            "console",
            lambda m: (
                self.errors.append(f"console {m.type}: {m.text} at {m.location['url']}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        # A request cut short by the page navigating away (ERR_ABORTED) is no failure.
        page.on(
            "requestfailed",
            lambda r: (
                self.errors.append(f"request failed: {r.url} {r.failure}")
                if "ERR_ABORTED" not in (r.failure or "")
                else None
            ),
        )
        return page

    def sign_in(self, page: Page) -> None:
        page.goto(f"{self.live.base}/console/login")
        self.submit_sign_in(page)
        expect(page.get_by_role("heading", name="Offers")).to_be_visible()

    def submit_sign_in(self, page: Page) -> None:
        """Fill and send the sign-in form the page shows."""
        creds = self.live.creds
        page.get_by_label("Organization").fill(creds.org)
        page.get_by_label("Sandbox").fill(creds.sandbox)
        page.get_by_label("API key").fill(creds.api_key)
        page.get_by_label("Access token").fill(creds.access_token)
        page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def console(browser: Browser, live: Live) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    session = Console(context, live)
    yield session
    context.close()
    assert session.errors == [], session.errors


@pytest.fixture
def page(console: Console) -> Page:
    page = console.page()
    console.sign_in(page)
    return page


def _select(page: Page, label: str, option: str, *, nth: int = 0) -> None:
    page.get_by_label(label, exact=True).nth(nth).select_option(label=option)


def test_the_printed_link_signs_in_without_typing(console: Console, live: Live) -> None:
    from nextoffer.console import login_link

    creds = live.creds
    page = console.page()
    page.goto(
        login_link(
            live.base,
            org=creds.org,
            sandbox=creds.sandbox,
            api_key=creds.api_key,
            access_token=creds.access_token,
        )
    )
    expect(page.get_by_label("API key")).to_have_value(creds.api_key)
    assert "#" not in page.url  # the token left the address bar
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Offers")).to_be_visible()


def test_build_a_library_through_the_forms_and_read_it_through_the_api(
    page: Page, live: Live
) -> None:
    base = live.base
    # A placement.
    page.goto(f"{base}/console/placements/new")
    page.get_by_label("Name", exact=True).fill("E2E banner")
    _select(page, "Channel", "Web")
    _select(page, "Content type", "HTML")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved E2E banner")
    placement = live.one("offer-placement", "E2E banner")
    assert placement["_instance"]["xdm:channel"] == WEB

    # A rule, checked live as it is typed.
    page.goto(f"{base}/console/rules/new")
    page.get_by_label("Name", exact=True).fill("E2E adults")
    condition = page.get_by_label("Condition (PQL)")
    condition.fill("age >= ")
    expect(page.locator(".pql-status")).to_contain_text("Line 1, column 8")
    condition.fill("age >= 18")
    expect(page.locator(".pql-status")).to_contain_text("Valid rule")
    expect(page.locator(".pql-highlight .tok-num")).to_have_text("18")
    page.locator("#pql-profile").fill('{"age": 20}')
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#pql-test-result")).to_have_text("Result: true")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved E2E adults")
    rule = live.one("eligibility-rule", "E2E adults")
    assert rule["_instance"]["xdm:condition"]["xdm:value"] == "age >= 18"

    # A fallback offer and an offer, each with a representation for the placement.
    page.goto(f"{base}/console/fallback-offers/new")
    page.get_by_label("Name", exact=True).fill("E2E fallback")
    _select(page, "Status", "Approved")
    _select(page, "Placement", "E2E banner")
    page.get_by_label("Content or URL").fill("<p>Come back soon</p>")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved E2E fallback")

    page.goto(f"{base}/console/offers/new")
    page.get_by_label("Name", exact=True).fill("E2E offer")
    _select(page, "Status", "Approved")
    _select(page, "Eligibility rule", "E2E adults")
    page.get_by_label("Priority").fill("5")
    _select(page, "Placement", "E2E banner")
    page.get_by_label("Content or URL").fill("<b>10% off</b>")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved E2E offer")
    # The HTML preview appears in a sandboxed frame.
    expect(page.frame_locator("iframe.content").locator("b")).to_have_text("10% off")
    offer = live.one("personalized-offer", "E2E offer")["_instance"]
    assert offer["xdm:selectionConstraint"]["xdm:eligibilityRule"] == rule["_instance"]["@id"]
    assert offer["xdm:rank"]["xdm:priority"] == 5
    [representation] = offer["xdm:representations"]
    assert representation["xdm:placement"] == placement["_instance"]["@id"]
    assert representation["xdm:components"][0]["xdm:content"] == "<b>10% off</b>"

    # A collection of that offer, and a decision using it.
    page.goto(f"{base}/console/collections/new")
    page.get_by_label("Name", exact=True).fill("E2E collection")
    _select(page, "Offers in the collection", "These offers")
    page.get_by_label("Offers", exact=True).select_option(label="E2E offer")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved E2E collection")
    collection = live.one("offer-filter", "E2E collection")["_instance"]
    assert collection["xdm:ids"] == [offer["@id"]]

    page.goto(f"{base}/console/decisions/new")
    page.get_by_label("Name", exact=True).fill("E2E decision")
    _select(page, "Status", "Live")
    _select(page, "Fallback offer", "E2E fallback")
    page.get_by_label("Placements", exact=True).select_option(label="E2E banner")
    _select(page, "Collection", "E2E collection")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved E2E decision")
    decision = live.one("offer-activity", "E2E decision")["_instance"]
    [criterion] = decision["xdm:criteria"]
    assert criterion["xdm:placements"] == [placement["_instance"]["@id"]]
    assert criterion["xdm:optionSelection"]["xdm:filter"] == collection["@id"]

    # The API decides with what the forms built.
    answer = live.api.post(
        f"/data/core/ode/{live.creds.container_id}/decisions",
        json={
            "xdm:propositionRequests": [
                {
                    "xdm:placementId": placement["_instance"]["@id"],
                    "xdm:activityId": decision["@id"],
                }
            ],
            "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "nobody@example.com"}]}}],
            "xdm:dryRun": True,
        },
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    [proposition] = answer.json()["xdm:propositions"]
    # The rule needs an age; the stored profile has none: the fallback is proposed.
    assert (
        proposition["xdm:fallback"]["xdm:id"]
        == live.one("fallback-offer", "E2E fallback")["_instance"]["@id"]
    )


def test_a_validation_error_is_shown_beside_its_field(page: Page, live: Live) -> None:
    page.goto(f"{live.base}/console/placements/new")
    page.get_by_role("button", name="Create").click()
    errors = page.locator("#name-error")
    expect(errors).to_contain_text("must not be empty")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")


def test_two_tabs_the_second_save_is_a_conflict_with_a_reload(
    console: Console, page: Page, live: Live
) -> None:
    created = live.create("personalized-offer", {"xdm:name": "Two tabs", "xdm:status": "draft"})
    url = f"{live.base}/console/offers/{created['instanceId']}"
    first = page
    second = console.page()
    first.goto(url)
    second.goto(url)
    first.get_by_label("Name", exact=True).fill("Renamed in tab one")
    first.get_by_role("button", name="Save").click()
    expect(first.get_by_role("status").first).to_contain_text("Saved Renamed in tab one")
    second.get_by_label("Name", exact=True).fill("Renamed in tab two")
    second.get_by_role("button", name="Save").click()
    alert = second.get_by_role("alert")
    expect(alert).to_contain_text("someone changed this offer since you opened it")
    expect(second.get_by_label("Name", exact=True)).to_have_value("Renamed in tab two")
    second.get_by_role("link", name="Reload the current version").click()
    expect(second.get_by_label("Name", exact=True)).to_have_value("Renamed in tab one")


def _decision_events(live: Live) -> int:
    response = live.api.get(
        f"/data/core/ode/{live.creds.container_id}/decision-events", params={"limit": "1000"}
    )
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def test_simulate_shows_the_propositions_and_the_trace(page: Page, live: Live) -> None:
    recorded = _decision_events(live)
    page.goto(f"{live.base}/console/simulate")
    decision = live.api.get(
        f"/data/core/xcore/{live.creds.container_id}/instances",
        params={"schema": OM + "offer-activity", "id": live.ids["decision"]},
    ).json()["_embedded"]["results"][0]["_instance"]
    placement = live.api.get(
        f"/data/core/xcore/{live.creds.container_id}/instances",
        params={"schema": OM + "offer-placement", "id": live.ids["placement"]},
    ).json()["_embedded"]["results"][0]["_instance"]
    page.get_by_label("Decision").select_option(label=decision["xdm:name"])
    page.get_by_label("Placements").select_option(label=placement["xdm:name"])
    page.get_by_label("Profile (JSON)").fill('{"person": {"name": {"firstName": "Ada"}}}')
    page.get_by_role("button", name="Simulate").click()
    expect(page.get_by_role("heading", name="Propositions")).to_be_visible()
    trace = page.locator("table.trace")
    expect(trace).to_be_visible()
    rows = {
        row.locator("td").nth(0).inner_text(): row.locator("td code").inner_text()
        for row in trace.locator("tbody tr").all()
    }
    # The demo library: the holiday offer is selected; the gold offer's rule (gold members
    # only) is false for Ada, and the trace says so.
    assert rows["Holiday sale: 10% off"] == "selected", rows
    assert rows["Gold members: 20% off"] == "ruleFalse", rows
    expect(page.locator(".card.selected")).to_contain_text("Holiday sale: 10% off")
    # A dry run records nothing.
    assert _decision_events(live) == recorded


def test_history_shows_the_change_and_reverts(page: Page, live: Live) -> None:
    placement_id = live.ids["placement@instance"]
    url = f"{live.base}/console/placements/{placement_id}"
    page.goto(url)
    old = page.get_by_label("Name", exact=True).input_value()
    page.get_by_label("Name", exact=True).fill(old + " (new)")
    page.get_by_role("button", name="Save").click()
    page.get_by_role("link", name="History").click()
    expect(page.locator("table.changes").first).to_contain_text(old + " (new)")
    page.get_by_role("button", name=re.compile(r"Revert to revision")).first.click()
    expect(page.get_by_role("status").first).to_contain_text("Reverted to revision")
    page.goto(url)
    expect(page.get_by_label("Name", exact=True)).to_have_value(old)


def test_reports_draw_charts_and_download_csv(page: Page, live: Live, tmp_path: Path) -> None:
    for n in range(3):
        sent = live.api.post(
            f"/data/core/ode/{live.creds.container_id}/decisions",
            json=decision_request(live.ids, f"reader{n}@example.com"),
            headers={"Content-Type": "application/json"},
        )
        assert sent.status_code == 200, sent.text
    page.goto(f"{live.base}/console/reports")
    charts = page.locator("figure.chart svg")
    expect(charts).to_have_count(2)
    # Three recorded decisions: the line chart has points, the bar chart bars.
    assert charts.nth(0).locator("circle").count() >= 1
    assert charts.nth(1).locator("rect[height]").count() >= 3
    expect(page.locator("table.numbers tbody tr").first).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    saved = tmp_path / "report.csv"
    download.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0] == "day,offerId,offerName,propositions,impressions,clicks,ctr"
    assert len(lines) >= 2


def test_an_offer_named_script_shows_as_text(page: Page, live: Live) -> None:
    name = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    live.create("personalized-offer", {"xdm:name": name, "xdm:status": "draft"})
    page.goto(f"{live.base}/console/offers?order=-modified")
    expect(page.get_by_role("link", name=name)).to_be_visible()
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(
        "<script>window.__xss = 1</script>"
    )
    assert page.evaluate("window.__xss") is None


def test_a_cross_site_form_post_is_refused(console: Console, page: Page, live: Live) -> None:
    before = len(live.instances("offer-placement", limit="1000"))
    attacker = console.page()
    form = (
        f'<form id="f" method="post" action="{live.base}/console/placements/new">'
        '<input name="name" value="Forged"><input name="channel" value="' + WEB + '">'
        '<input name="componentType" value="x"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    attacker.goto("data:text/html," + form)
    attacker.wait_for_url(re.compile(r"/console/"))
    # SameSite=Lax keeps the session cookie off a cross-site POST: the console asks to sign in.
    expect(attacker.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    # And a same-site forgery without the token is refused outright.
    page.goto(f"{live.base}/console/placements")
    page.evaluate(
        """() => {
            const f = document.createElement('form');
            f.method = 'post'; f.action = '/console/placements/new';
            for (const [k, v] of [['name', 'Forged'], ['channel', 'x'], ['componentType', 'y']]) {
                const i = document.createElement('input');
                i.name = k; i.value = v; f.appendChild(i);
            }
            document.body.appendChild(f); f.submit();
        }"""
    )
    expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    console.errors = [e for e in console.errors if "403" not in e]  # the refusal's own status
    assert len(live.instances("offer-placement", limit="1000")) == before


def test_a_ranking_strategy_made_in_the_forms_ranks_a_decision_and_draws_its_curves(
    page: Page, live: Live
) -> None:
    page.goto(f"{live.base}/console/ranking-strategies/new")
    page.get_by_label("Name", exact=True).fill("Learns the page")
    _select(page, "Strategy", "Auto-optimization (one model for everyone)")
    page.get_by_label("Exploration rate").fill("0.2")
    page.get_by_role("button", name="Create").click()
    # The API's 422: a rate belongs to personalized strategies only, shown beside the field.
    expect(page.locator("#explorationRate-error")).to_be_visible()
    expect(page.get_by_label("Exploration rate")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Exploration rate").fill("")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved Learns the page")
    strategy = live.one("ranking-strategy", "Learns the page")["_instance"]["@id"]
    # The demo decision's first criterion now ranks by it, chosen in the decision's form.
    decision = live.one("offer-activity", DEMO_DECISION_NAME)
    page.goto(f"{live.base}/console/decisions/{decision['instanceId']}")
    _select(page, "Ranking", "ranking strategy: Learns the page")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved")
    saved = live.one("offer-activity", DEMO_DECISION_NAME)["_instance"]
    order = saved["xdm:criteria"][0]["xdm:ranking"]
    assert order["xdm:order"]["xdm:rankingStrategy"] == strategy
    # Traffic: decisions through the API, each displayed, every other one clicked.
    events = []
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for n in range(6):
        answer = live.api.post(
            f"/data/core/ode/{live.creds.container_id}/decisions",
            json=decision_request(
                {**live.ids, "decision": decision["_instance"]["@id"]}, f"learner{n}@example.com"
            ),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        proposition = answer.json()["xdm:propositions"][0]
        offer = proposition["xdm:options"][0]["xdm:id"]
        for kind in ("decisioning.propositionDisplay",) + (
            ("decisioning.propositionInteract",) if n % 2 == 0 else ()
        ):
            events.append(
                {
                    "timestamp": now,
                    "eventType": kind,
                    "https://ns.adobe.com/experience/decisioning/propositions": [
                        {
                            "xdm:id": answer.json()["xdm:propositionId"],
                            "xdm:items": [{"xdm:id": offer}],
                        }
                    ],
                }
            )
    sent = live.api.post("/data/core/nextoffer/events", json={"events": events})
    assert sent.status_code in (200, 207), sent.text
    page.goto(f"{live.base}/console/reports")
    panel = page.locator("section.strategy", has_text="Learns the page")
    expect(panel.get_by_role("heading", name="Learns the page")).to_be_visible()
    expect(panel).to_contain_text("6 impressions, 3 clicks, CTR 50.00 %")
    expect(panel).to_contain_text("95 % interval")
    charts = panel.locator("figure.chart svg")
    expect(charts).to_have_count(3)
    assert charts.nth(0).get_attribute("aria-label") == "Learns the page: CTR per day (%)"
    assert charts.nth(2).locator("rect[height]").count() >= 1  # traffic share bars


_GEOMETRY = """() => {
  const area = document.querySelector(".pql-editor textarea");
  const pre = document.querySelector(".pql-editor .pql-highlight");
  const status = document.querySelector(".pql-status");
  const a = area.getBoundingClientRect(), p = pre.getBoundingClientRect();
  const sa = getComputedStyle(area), sp = getComputedStyle(pre);
  const metrics = ["fontFamily", "fontSize", "lineHeight", "paddingTop", "paddingLeft",
    "borderTopWidth", "borderLeftWidth", "letterSpacing", "whiteSpace", "tabSize",
    "overflowWrap", "fontWeight"];
  const before = area.value.slice(0, area.selectionStart).split("\\n");
  const mark = (sel) => {
    const found = [...pre.querySelectorAll(sel)];
    const r = found[found.length - 1].getBoundingClientRect();
    return {top: r.top, bottom: r.bottom, left: r.left, text: found[found.length - 1].textContent};
  };
  return {
    area: [a.x, a.y, a.width, a.height], pre: [p.x, p.y, p.width, p.height],
    metrics: metrics.map((k) => [k, sa[k], sp[k]]),
    scroll: [area.scrollTop, pre.scrollTop],
    caretLine: before.length, caretColumn: before[before.length - 1].length + 1,
    origin: [p.left + parseFloat(sp.borderLeftWidth) + parseFloat(sp.paddingLeft),
             p.top + parseFloat(sp.borderTopWidth) + parseFloat(sp.paddingTop) - pre.scrollTop],
    lineHeight: parseFloat(sa.lineHeight), textColor: sa.color,
    ident: mark(".tok-ident"), error: pre.querySelector(".tok-error") ? mark(".tok-error") : null,
    num: pre.querySelector(".tok-num") ? mark(".tok-num") : null,
    statusTop: status.getBoundingClientRect().top, editorBottom: a.bottom,
  };
}"""


def test_the_rule_editor_colours_the_text_in_place_and_marks_the_error_on_its_line(
    page: Page, live: Live
) -> None:
    page.goto(f"{live.base}/console/rules/new")
    area = page.get_by_label("Condition (PQL)")
    # Nine lines, then a tenth typed key by key: the textarea scrolls, the colours follow.
    area.fill("".join(f"age > {n} or\n" for n in range(9)))
    area.press("End")
    area.press_sequentially("age >= ", delay=20)
    status = page.locator(".pql-status")
    expect(status).to_have_text(re.compile(r"^Line 10, column 8: "))
    geometry = page.evaluate(_GEOMETRY)
    # One box, one set of metrics: every glyph of the coloured copy lies under its own.
    assert geometry["area"] == geometry["pre"]
    for name, in_area, in_pre in geometry["metrics"]:
        assert in_area == in_pre, (name, in_area, in_pre)
    assert geometry["textColor"] == "rgba(0, 0, 0, 0)"  # only the colours show
    assert geometry["scroll"][0] > 0 and geometry["scroll"][0] == geometry["scroll"][1]
    # The error mark sits at the caret: line 10, column 8, in the visible part.
    assert (geometry["caretLine"], geometry["caretColumn"]) == (10, 8)
    x0, y0 = geometry["origin"]
    height = geometry["lineHeight"]
    ident = geometry["ident"]  # "age" of line 10
    assert ident["text"] == "age"
    assert abs(ident["top"] - (y0 + 9 * height)) < height / 2
    error = geometry["error"]
    assert error is not None and abs(error["top"] - (y0 + 9 * height)) < height / 2
    char = (error["left"] - x0) / 7  # seven characters before column 8
    assert 5 < char < 12  # a monospace cell, not somewhere else on the line
    assert abs(ident["left"] - x0) < 1  # "age" starts the line
    # The message is under the editor.
    assert geometry["statusTop"] >= geometry["editorBottom"]
    # Typing on: the number is coloured where the caret is, and the rule is valid.
    area.press_sequentially("18", delay=20)
    expect(status).to_contain_text("Valid rule")
    geometry = page.evaluate(_GEOMETRY)
    num = geometry["num"]
    assert num is not None and num["text"] == "18"
    x0, y0 = geometry["origin"]
    assert abs(num["top"] - (y0 + 9 * height)) < height / 2
    assert abs(num["left"] - (x0 + 7 * char)) < 2
    assert geometry["error"] is None


def test_the_rule_editor_marks_the_error_after_characters_outside_the_bmp(
    page: Page, live: Live
) -> None:
    # The server counts characters (code points); a string of JavaScript counts an emoji
    # as two units, and the mark and the colours slid one place right per emoji before.
    page.goto(f"{live.base}/console/rules/new")
    area = page.get_by_label("Condition (PQL)")
    area.fill('name = "\U0001f600\U0001f600" and age > 18 and')
    area.press("End")
    area.press_sequentially(" ", delay=20)
    status = page.locator(".pql-status")
    expect(status).to_have_text(re.compile(r"^Line 1, column \d+: "))
    expect(page.locator(".pql-highlight .tok-num")).to_have_count(1)
    # The check of the text with its last space (the status may still be the previous
    # check's, whose mark the typing cleared): its mark is back.
    expect(page.locator(".pql-highlight .tok-error")).to_have_count(1)
    marks = page.evaluate(
        """() => {
      const pre = document.querySelector(".pql-editor .pql-highlight");
      const texts = (sel) => [...pre.querySelectorAll(sel)].map((s) => s.textContent);
      return {ident: texts(".tok-ident"), num: texts(".tok-num"), error: texts(".tok-error")};
    }"""
    )
    assert marks["ident"] == ["name", "age"] and marks["num"] == ["18"], marks
    assert marks["error"] == [" "], marks  # at the end of the text, where the rule stops


def test_a_second_click_while_the_answer_is_on_its_way_sends_the_form_once(
    page: Page, live: Live
) -> None:
    # A slow answer and a second click (or Enter) sent the form twice: two objects.
    held: list[Any] = []
    page.route(
        "**/console/tags/new",
        lambda route: held.append(route) if route.request.method == "POST" else route.continue_(),
    )
    page.goto(f"{live.base}/console/tags/new")
    page.get_by_label("Name", exact=True).fill("Sent once")
    page.evaluate(
        """() => {
          const button = document.querySelector("button.primary");
          setTimeout(() => button.click(), 0);
          setTimeout(() => button.click(), 300);
        }"""
    )
    page.wait_for_timeout(1000)
    assert len(held) == 1
    held[0].continue_()
    expect(page.get_by_role("status").first).to_contain_text("Saved Sent once")
    assert len([t for t in live.instances("tag") if t["_instance"]["xdm:name"] == "Sent once"]) == 1


def test_a_long_name_without_spaces_wraps_instead_of_widening_the_page(
    page: Page, live: Live
) -> None:
    tag = live.create("tag", {"xdm:name": "L" * 200})
    for path in ("/console/tags", f"/console/tags/{tag['instanceId']}"):
        page.goto(live.base + path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1366, (path, width)


def test_saving_a_form_without_changing_it_changes_nothing_the_api_wrote(
    page: Page, live: Live
) -> None:
    # The form rewrote what it shows and dropped what it does not: a language's second
    # component, a component's repo:name and xdm:copyline, the seconds of a date, a
    # characteristic whose key holds "=", a rule's line breaks.
    ids = live.ids
    html = OM + "content-component-html"
    offer = live.create(
        "personalized-offer",
        {
            "xdm:name": "Bilingual",
            "xdm:status": "approved",
            "xdm:representations": [
                {
                    "xdm:placement": ids["placement"],
                    "xdm:channel": WEB,
                    "xdm:components": [
                        {
                            "@type": html,
                            "dc:format": "text/html",
                            "xdm:content": "<p>Hello</p>",
                            "dc:language": ["en"],
                            "repo:name": "en.html",
                            "xdm:copyline": "Hello",
                        },
                        {
                            "@type": html,
                            "dc:format": "text/html",
                            "xdm:content": "<p>Bonjour</p>",
                            "dc:language": ["fr"],
                        },
                    ],
                }
            ],
            "xdm:selectionConstraint": {
                "xdm:startDate": "2026-01-01T16:00:30Z",
                "xdm:endDate": "2030-12-13T16:00:00.123Z",
                "xdm:profileConstraintType": "eligibilityRule",
                "xdm:eligibilityRule": ids["rule"],
            },
            "xdm:rank": {"xdm:priority": 1},
            "xdm:characteristics": {"code": "A", "size=L": "yes"},
        },
    )
    decision = live.create(
        "offer-activity",
        {
            "xdm:name": "Timed",
            "xdm:status": "draft",
            "xdm:startDate": "2026-02-01T08:00:15Z",
            "xdm:fallback": ids["fallback"],
            "xdm:criteria": [
                {
                    "xdm:placements": [ids["placement"]],
                    "xdm:optionSelection": {"xdm:filter": ids["collection"]},
                    "xdm:ranking": {"xdm:priority": 3},
                }
            ],
        },
    )
    # A browser sends a textarea's line breaks as CRLF: the rule gained a "\r".
    rule = live.create(
        "eligibility-rule",
        {
            "xdm:name": "Two lines",
            "xdm:condition": {
                "xdm:type": "PQL",
                "xdm:format": "pql/text",
                "xdm:value": "profile.age > 18\nand profile.age < 65",
            },
        },
    )
    # A collection in the older spelling (ids), in an order of its own.
    tags = [live.create("tag", {"xdm:name": name})["@id"] for name in ("Zebra", "Apple")]
    collection = live.create(
        "offer-filter", {"xdm:name": "Old ids", "xdm:filterType": "anyTags", "ids": tags}
    )
    # Segments the form did not edit, in Adobe's spellings and the export's (xid).
    segmented = live.create(
        "personalized-offer",
        {
            "xdm:name": "Segmented",
            "xdm:status": "approved",
            "xdm:representations": [
                {
                    "xdm:placement": ids["placement"],
                    "xdm:channel": WEB,
                    "xdm:components": [
                        {"@type": html, "dc:format": "text/html", "xdm:content": "<p>VIP</p>"}
                    ],
                }
            ],
            "xdm:selectionConstraint": {
                "xdm:profileConstraintType": "allSegments",
                "xdm:segmentIdentities": [
                    {
                        "@id": "https://data.adobe.io/entities/segmentIdentity/id123",
                        "xdm:namespace": {"xdm:code": "AA12345"},
                    },
                    {"_id": "s-vip", "namespace": {"code": "ups"}, "xid": "x-1"},
                    {"xdm:id": "s-any"},
                ],
            },
        },
    )
    for slug, created in (
        ("offers", offer),
        ("offers", segmented),
        ("decisions", decision),
        ("rules", rule),
        ("collections", collection),
    ):
        before = live.api.get(
            f"/data/core/xcore/{live.creds.container_id}/instances/{created['instanceId']}"
        ).json()["_instance"]
        page.goto(f"{live.base}/console/{slug}/{created['instanceId']}")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("status").first).to_contain_text("Saved")
        after = live.api.get(
            f"/data/core/xcore/{live.creds.container_id}/instances/{created['instanceId']}"
        ).json()["_instance"]
        assert after == before, slug


def test_back_after_create_then_create_again_opens_the_object_made(page: Page, live: Live) -> None:
    page.goto(f"{live.base}/console/tags/new")
    page.get_by_label("Name", exact=True).fill("Made once")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved Made once")
    page.go_back()
    expect(page.get_by_label("Name", exact=True)).to_have_value(
        "Made once"
    )  # the browser refills it
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("This form was sent before")
    made = [t for t in live.instances("tag") if t["_instance"]["xdm:name"] == "Made once"]
    assert len(made) == 1


def test_add_another_representation_before_the_first_save(page: Page, live: Live) -> None:
    # The form had one blank representation: a second placement needed a save first.
    second = live.create(
        "offer-placement",
        {
            "xdm:name": "Second slot",
            "xdm:channel": WEB,
            "xdm:componentType": OM + "content-component-html",
        },
    )
    page.goto(f"{live.base}/console/offers/new")
    page.get_by_label("Name", exact=True).fill("Two slots")
    _select(page, "Placement", "Second slot")
    page.get_by_label("Content or URL").fill("<p>one</p>")
    page.get_by_role("button", name="Add another representation").click()
    expect(page.get_by_label("Placement")).to_have_count(2)
    placement = live.instances("offer-placement")
    first_name = next(
        p["_instance"]["xdm:name"]
        for p in placement
        if p["_instance"]["@id"] == live.ids["placement"]
    )
    _select(page, "Placement", first_name, nth=1)
    page.get_by_label("Content or URL").nth(1).fill("<p>two</p>")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved Two slots")
    offer = live.one("personalized-offer", "Two slots")["_instance"]
    placed = {
        r["xdm:placement"]: r["xdm:components"][0]["xdm:content"]
        for r in offer["xdm:representations"]
    }
    assert placed == {second["@id"]: "<p>one</p>", live.ids["placement"]: "<p>two</p>"}


def test_typing_survives_the_session_ending_before_save(
    console: Console, page: Page, live: Live
) -> None:
    # The session ended while a marketer typed: Save led to the sign-in page, and what
    # was typed was gone.
    page.goto(f"{live.base}/console/offers/new")
    page.get_by_label("Name", exact=True).fill("Typed <b>before</b> the end")
    page.get_by_label("Characteristics").fill("code=LATE")
    page.get_by_label("Content or URL").fill("<p>Long typing</p>")
    console.context.clear_cookies(name="nextoffer_console")  # the session ends
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("nothing was saved yet")
    console.submit_sign_in(page)
    expect(page.get_by_role("alert")).to_contain_text("Not saved yet.")
    assert page.url == f"{live.base}/console/offers/new"  # the form's address, not the sign-in's
    expect(page.get_by_label("Name", exact=True)).to_have_value("Typed <b>before</b> the end")
    expect(page.get_by_label("Characteristics")).to_have_value("code=LATE")
    expect(page.get_by_label("Content or URL")).to_have_value("<p>Long typing</p>")
    assert [
        o
        for o in live.instances("personalized-offer", limit="1000")
        if o["_instance"]["xdm:name"] == "Typed <b>before</b> the end"
    ] == []
    _select(page, "Placement", DEMO_PLACEMENT_NAME)
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved Typed <b>before</b> the end")
    offer = live.one("personalized-offer", "Typed <b>before</b> the end")["_instance"]
    assert offer["xdm:characteristics"] == {"code": "LATE"}
    assert offer["xdm:representations"][0]["xdm:components"][0]["xdm:content"] == (
        "<p>Long typing</p>"
    )


def test_a_delete_pressed_after_the_session_ended_is_pressed_again_on_its_page(
    console: Console, page: Page, live: Live
) -> None:
    # Delete pressed after the session ended led to the sign-in page, then to the
    # placement's page with no word that it was still there: the marketer took it as done.
    html = "https://ns.adobe.com/experience/offer-management/content-component-html"
    made = live.create(
        "offer-placement",
        {"xdm:name": "Doomed slot", "xdm:channel": WEB, "xdm:componentType": html},
    )
    url = f"{live.base}/console/placements/{made['instanceId']}"
    page.on("dialog", lambda dialog: dialog.accept())  # "Delete this placement?"
    page.goto(url)
    console.context.clear_cookies(name="nextoffer_console")  # the session ends
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    expect(page.get_by_role("status").first).to_contain_text("the placement was not deleted")
    console.submit_sign_in(page)
    expect(page.get_by_role("status").first).to_contain_text(
        "Not done: your session had ended when you sent this form, so the placement was "
        "not deleted."
    )
    assert page.url.startswith(url + "?flash=")
    assert live.one("offer-placement", "Doomed slot")["instanceId"] == made["instanceId"]
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status").first).to_contain_text("Deleted Doomed slot.")
    assert [
        p for p in live.instances("offer-placement") if p["instanceId"] == made["instanceId"]
    ] == []


def test_an_offer_is_for_segments_chosen_in_the_form(page: Page, live: Live) -> None:
    # The form had no way to give an offer segments: only a rule, or everyone.
    page.goto(f"{live.base}/console/offers/new")
    page.get_by_label("Name", exact=True).fill("Members only")
    _select(page, "Placement", DEMO_PLACEMENT_NAME)
    page.get_by_label("Content or URL").fill("<p>For members</p>")
    expect(page.get_by_label("Segment id")).to_be_hidden()  # everyone, until segments
    _select(page, "Eligible visitors", "Visitors in segments")
    _select(page, "Visitors must be in", "All of them")
    page.get_by_label("Segment id").fill("s-gold")
    page.get_by_role("button", name="Add another segment").click()
    page.get_by_label("Segment id").nth(1).fill("s-newsletter")
    page.get_by_label("Segment namespace").nth(1).fill("")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved Members only")
    offer = live.one("personalized-offer", "Members only")["_instance"]
    assert offer["xdm:selectionConstraint"] == {
        "xdm:profileConstraintType": "allSegments",
        "xdm:segmentIdentities": [
            {"_id": "s-gold", "xdm:namespace": {"xdm:code": "ups"}},
            {"_id": "s-newsletter"},
        ],
    }
    # Shown again as saved; one removed with its checkbox.
    expect(page.get_by_label("Segment id").first).to_have_value("s-gold")
    page.get_by_label("Remove this segment when saving").first.check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved Members only")
    offer = live.one("personalized-offer", "Members only")["_instance"]
    assert offer["xdm:selectionConstraint"]["xdm:segmentIdentities"] == [{"_id": "s-newsletter"}]
    # Segments chosen without one: refused beside the row, nothing changed.
    page.get_by_label("Remove this segment when saving").first.check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("add a segment id (or choose another audience)")).to_be_visible()
    offer = live.one("personalized-offer", "Members only")["_instance"]
    assert offer["xdm:selectionConstraint"]["xdm:segmentIdentities"] == [{"_id": "s-newsletter"}]

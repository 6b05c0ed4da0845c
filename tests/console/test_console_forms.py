"""The console in-process: sign-in and its cookie, CSRF, escaping, the API's validation
messages beside fields, the conflict on a stale save, tenancy, history, and writes that
the API then reads. (The browser suite drives the same pages in chromium.)"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.testclient import TestClient

from nextoffer.console import login_link
from nextoffer.ids import utcnow
from nextoffer.service.tenants import bootstrap
from nextoffer.storage.store import Store
from support.api import HTML, WEB, Tenant, make_tenant
from support.console import csrf_of, sign_in
from support.ranking import AUTO, Shop, teach

PLACEMENT_FORM = {"channel": WEB, "componentType": HTML}


def _instances(tenant: Tenant, type_name: str) -> list[dict[str, Any]]:
    response = tenant.client.get(
        tenant.url(),
        params={"schema": f"https://ns.adobe.com/experience/offer-management/{type_name}"},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["_embedded"]["results"])


STRATEGY = "https://ns.nextoffer.dev/offer-management/ranking-strategy"


def _instances_of(tenant: Tenant, schema: str) -> list[dict[str, Any]]:
    response = tenant.client.get(tenant.url(), params={"schema": schema}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["_embedded"]["results"])


def _submit(client: TestClient, url: str, **fields: str) -> Any:
    """The form at ``url`` sent with ``fields`` and the CSRF token of its page."""
    page = client.get(url)
    return client.post(
        url, data={"csrf_token": csrf_of(page.text), **fields}, follow_redirects=False
    )


def _create_placement(client: TestClient, name: str) -> str:
    response = _submit(client, "/console/placements/new", name=name, **PLACEMENT_FORM)
    assert response.status_code == 303, response.text
    return response.headers["location"].split("?")[0].rsplit("/", 1)[1]


def test_pages_need_a_session_and_send_to_sign_in(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/console/offers?q=x", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Foffers%3Fq%3Dx"


def test_the_session_cookie_is_httponly_lax_signed_and_ends_with_the_token(
    client: TestClient, tenant: Tenant
) -> None:
    page = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={
            "csrf_token": csrf_of(page.text),
            "org": tenant.creds.org,
            "sandbox": tenant.creds.sandbox,
            "apiKey": tenant.creds.api_key,
            "accessToken": tenant.creds.access_token,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("nextoffer_console=")
    )
    attributes = cookie.lower()
    assert (
        "httponly" in attributes and "samesite=lax" in attributes and "path=/console" in attributes
    )
    max_age = int(re.search(r"max-age=(\d+)", attributes).group(1))  # type: ignore[union-attr]
    assert 86000 < max_age <= 86400  # the bootstrap token lives a day
    # A cookie changed by hand is not a session.
    value = cookie.split(";")[0].split("=", 1)[1]
    client.cookies.clear()
    client.cookies.set("nextoffer_console", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert client.get("/console/offers", follow_redirects=False).status_code == 303


def test_wrong_credentials_are_refused_with_the_gateways_words(
    client: TestClient, tenant: Tenant
) -> None:
    page = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={
            "csrf_token": csrf_of(page.text),
            "org": tenant.creds.org,
            "sandbox": tenant.creds.sandbox,
            "apiKey": "someone-else",
            "accessToken": tenant.creds.access_token,
        },
        follow_redirects=False,
    )
    assert response.status_code == 200  # the form again, with the refusal in it
    assert "Sign-in refused: Api Key is invalid (403003)" in response.text
    assert "nextoffer_console=" not in response.headers.get("set-cookie", "")


def test_the_printed_link_carries_the_credentials_in_the_fragment_only(tenant: Tenant) -> None:
    link = login_link(
        "http://127.0.0.1:8080",
        org=tenant.creds.org,
        sandbox=tenant.creds.sandbox,
        api_key=tenant.creds.api_key,
        access_token=tenant.creds.access_token,
    )
    parts = urlsplit(link)
    assert (parts.path, parts.query) == ("/console/login", "")
    assert parse_qs(parts.fragment)["accessToken"] == [tenant.creds.access_token]


def test_a_form_without_its_csrf_token_changes_nothing(
    client: TestClient, signed_in: Tenant
) -> None:
    for token in (None, "20991231000000##" + "0" * 40):
        data = {"name": "Forged", **PLACEMENT_FORM}
        if token:
            data["csrf_token"] = token
        response = client.post("/console/placements/new", data=data, follow_redirects=False)
        assert response.status_code == 403
        assert "Form refused" in response.text
    assert _instances(signed_in, "offer-placement") == []


def test_user_text_is_escaped_everywhere_it_is_shown(client: TestClient, signed_in: Tenant) -> None:
    name = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    instance_id = _create_placement(client, name)
    for path in ("/console/placements", f"/console/placements/{instance_id}"):
        html = client.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_the_apis_validation_message_is_shown_beside_its_field(
    client: TestClient, signed_in: Tenant
) -> None:
    response = _submit(client, "/console/rules/new", name="Adults", condition="age >= ")
    assert response.status_code == 200  # the form again, with the messages in it
    errors = re.search(r'<ul class="errors" id="condition-error">(.*?)</ul>', response.text, re.S)
    assert errors is not None, response.text
    assert "line 1, column 8" in errors.group(1)
    # What was typed is kept.
    assert "age &gt;= </textarea>" in response.text
    assert _instances(signed_in, "eligibility-rule") == []


def test_a_nul_typed_into_a_field_is_refused_beside_it_on_either_backend(
    client: TestClient, signed_in: Tenant
) -> None:
    # PostgreSQL cannot store one and SQLite would: the library's own check refuses it.
    response = _submit(client, "/console/placements/new", name="a\x00b", **PLACEMENT_FORM)
    assert response.status_code == 200  # the form again, with the message in it
    errors = re.search(r'<ul class="errors" id="name-error">(.*?)</ul>', response.text, re.S)
    assert errors is not None, response.text
    assert "NUL character" in errors.group(1)
    assert _instances(signed_in, "offer-placement") == []


def test_a_stale_save_is_a_conflict_that_keeps_the_typing_and_offers_a_reload(
    client: TestClient, signed_in: Tenant
) -> None:
    instance_id = _create_placement(client, "Banner")
    page = client.get(f"/console/placements/{instance_id}").text
    token = csrf_of(page)
    first = client.post(
        f"/console/placements/{instance_id}",
        data={"csrf_token": token, "etag": "1", "name": "Hero", **PLACEMENT_FORM},
        follow_redirects=False,
    )
    assert first.status_code == 303
    second = client.post(
        f"/console/placements/{instance_id}",
        data={"csrf_token": token, "etag": "1", "name": "Sidebar", **PLACEMENT_FORM},
    )
    assert second.status_code == 200  # the form again: a browser logs 4xx pages as errors
    assert "someone changed this placement" in second.text
    assert 'value="Sidebar"' in second.text
    assert f'href="/console/placements/{instance_id}">Reload the current version' in second.text
    [stored] = _instances(signed_in, "offer-placement")
    assert stored["_instance"]["xdm:name"] == "Hero"


def test_history_lists_each_write_and_revert_restores_one(
    client: TestClient, signed_in: Tenant
) -> None:
    instance_id = _create_placement(client, "Banner")
    token = csrf_of(client.get(f"/console/placements/{instance_id}").text)
    client.post(
        f"/console/placements/{instance_id}",
        data={"csrf_token": token, "etag": "1", "name": "Hero", **PLACEMENT_FORM},
    )
    history = client.get(f"/console/placements/{instance_id}/history")
    assert history.status_code == 200
    assert "Revision 2: updated" in history.text and "Revision 1: created" in history.text
    assert "<code>/xdm:name</code></td><td>Banner</td><td>Hero</td>" in history.text
    reverted = client.post(
        f"/console/placements/{instance_id}/revert",
        data={"csrf_token": token, "revision": "1", "etag": "2"},
        follow_redirects=False,
    )
    assert reverted.status_code == 303
    [stored] = _instances(signed_in, "offer-placement")
    assert (stored["_instance"]["xdm:name"], stored["repo:etag"]) == ("Banner", 3)


def test_another_tenants_object_is_not_found_through_the_console(
    client: TestClient, db_url: str, signed_in: Tenant
) -> None:
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    theirs = other.create(
        "offer-placement", {"xdm:name": "Theirs", "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    response = client.get(f"/console/placements/{theirs['instanceId']}")
    assert response.status_code == 404
    assert "Theirs" not in response.text
    assert "Theirs" not in client.get("/console/placements").text


def test_pql_check_answers_the_repositorys_line_and_column_and_needs_the_token(
    client: TestClient, signed_in: Tenant
) -> None:
    token = csrf_of(client.get("/console/rules/new").text)
    source = "age >= 18 and\n  age >"
    bad = client.post(
        "/console/pql/check",
        json={"source": source, "kind": "rule"},
        headers={"X-CSRF-Token": token},
    )
    assert bad.status_code == 200
    assert bad.json()["ok"] is False
    api = signed_in.create(
        "eligibility-rule",
        {
            "xdm:name": "r",
            "xdm:condition": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": source},
        },
        expect=422,
    )
    error = bad.json()["error"]
    assert (error["line"], error["column"], error["message"]) == (
        api["line"],
        api["column"],
        api["message"],
    )
    assert error["line"] == 2
    good = client.post(
        "/console/pql/check",
        json={"source": "age >= 18", "kind": "rule"},
        headers={"X-CSRF-Token": token},
    ).json()
    assert good["ok"] is True
    assert [kind for _s, _e, kind in good["tokens"]] == ["ident", "op", "num"]
    tested = client.post(
        "/console/pql/test",
        json={"source": "age >= 18", "profile": '{"age": 20}'},
        headers={"X-CSRF-Token": token},
    ).json()
    assert tested == {"ok": True, "result": True}
    refused = client.post("/console/pql/check", json={"source": "age >= 18"})
    assert refused.status_code == 403


def test_the_list_searches_filters_by_status_and_pages(
    client: TestClient, signed_in: Tenant
) -> None:
    for n in range(30):
        signed_in.create(
            "fallback-offer",
            {"xdm:name": f"{'Gold' if n % 2 else 'Plain'} {n:02d}", "xdm:status": "draft"},
        )
    signed_in.create("fallback-offer", {"xdm:name": "Gold approved", "xdm:status": "approved"})

    def names(html: str) -> list[str]:
        return re.findall(
            r'<td><a href="/console/fallback-offers/[^"]+"><bdi>([^<]+)</bdi></a></td>', html
        )

    first = client.get("/console/fallback-offers?order=name")
    assert len(names(first.text)) == 25 and "31 fallback offers" in first.text
    more = re.search(r'<a rel="next" href="([^"]+)">', first.text)
    assert more is not None
    second = client.get(more.group(1).replace("&amp;", "&"))
    assert len(names(second.text)) == 6
    assert set(names(first.text)).isdisjoint(names(second.text))
    gold = client.get("/console/fallback-offers?q=gold&status=draft&order=name")
    assert names(gold.text) == [f"Gold {n:02d}" for n in range(1, 30, 2)]
    approved = client.get("/console/fallback-offers?status=approved")
    assert names(approved.text) == ["Gold approved"]
    nothing = client.get("/console/fallback-offers?q=zebra")
    assert "No fallback offers match this search." in nothing.text


def test_status_changes_and_a_delete_that_others_reference_is_refused(
    client: TestClient, signed_in: Tenant
) -> None:
    placement_id = _create_placement(client, "Banner")
    [placement] = _instances(signed_in, "offer-placement")
    page = client.get("/console/fallback-offers/new")
    created = client.post(
        "/console/fallback-offers/new",
        data={
            "csrf_token": csrf_of(page.text),
            "name": "Welcome",
            "status": "draft",
            "representations-0-placement": placement["_instance"]["@id"],
            "representations-0-kind": "text",
            "representations-0-content": "Hello",
            "representations-0-language": "en",
        },
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    fallback_id = created.headers["location"].split("?")[0].rsplit("/", 1)[1]
    [fallback] = _instances(signed_in, "fallback-offer")
    component = fallback["_instance"]["xdm:representations"][0]["xdm:components"][0]
    assert (component["dc:format"], component["xdm:content"]) == ("text/plain", "Hello")
    token = csrf_of(client.get(f"/console/fallback-offers/{fallback_id}").text)
    approved = client.post(
        f"/console/fallback-offers/{fallback_id}/status",
        data={"csrf_token": token, "status": "approved", "etag": "1"},
        follow_redirects=False,
    )
    assert approved.status_code == 303
    [fallback] = _instances(signed_in, "fallback-offer")
    assert fallback["_instance"]["xdm:status"] == "approved"
    refused = client.post(
        f"/console/placements/{placement_id}/delete", data={"csrf_token": token, "etag": "1"}
    )
    # The placement's page again (a browser logs a 4xx page as an error), saying why and
    # naming what uses it, by name and with a link: a list of @ids helped no one.
    assert refused.status_code == 200
    assert "Not deleted." in refused.text
    assert "This placement is used by 1 other object" in refused.text
    assert f'Fallback offer: <a href="/console/fallback-offers/{fallback_id}">Welcome</a>' in (
        refused.text
    )
    assert len(_instances(signed_in, "offer-placement")) == 1
    deleted = client.post(
        f"/console/fallback-offers/{fallback_id}/delete",
        data={"csrf_token": token, "etag": "2"},
        follow_redirects=False,
    )
    assert deleted.status_code == 303
    assert _instances(signed_in, "fallback-offer") == []


# -- ranking strategies -----------------------------------------------------------------


def test_a_ranking_strategy_is_made_edited_and_refused_with_the_apis_messages(
    client: TestClient, signed_in: Tenant
) -> None:
    url = "/console/ranking-strategies/new"
    fields = {
        "name": "By tier",
        "strategyType": "personalized-optimization",
        "optimizationGoal": "clicks",
    }
    bad_rate = _submit(client, url, **fields, features="loyalty.tier", explorationRate="1.5")
    assert bad_rate.status_code == 200  # the form again
    rate = re.search(
        r'<ul class="errors" id="explorationRate-error">(.*?)</ul>', bad_rate.text, re.S
    )
    assert rate is not None, bad_rate.text
    assert "1.5 is greater than the maximum of 1" in rate.group(1)
    bad_feature = _submit(client, url, **fields, features="loyalty.tier\nperson.age > 3")
    features = re.search(
        r'<ul class="errors" id="features-error">(.*?)</ul>', bad_feature.text, re.S
    )
    assert features is not None, bad_feature.text
    assert "line 1, column" in features.group(1)  # the feature's PQL position
    assert _instances_of(signed_in, STRATEGY) == []
    made = _submit(
        client,
        url,
        **fields,
        features="loyalty.tier\n\n@{context}.device\n",
        explorationRate="0.25",
    )
    assert made.status_code == 303, made.text
    [strategy] = _instances_of(signed_in, STRATEGY)
    body = strategy["_instance"]
    assert body["xdm:features"] == ["loyalty.tier", "@{context}.device"]
    assert body["xdm:explorationRate"] == 0.25
    # Edited back to auto-optimization: the features are gone, the API accepts it.
    instance = made.headers["location"].split("?")[0].rsplit("/", 1)[1]
    edited = _submit(
        client,
        f"/console/ranking-strategies/{instance}",
        name="Everyone",
        strategyType="auto-optimization",
        optimizationGoal="clicks",
        etag="1",
    )
    assert edited.status_code == 303, edited.text
    [strategy] = _instances_of(signed_in, STRATEGY)
    assert "xdm:features" not in strategy["_instance"]
    assert strategy["_instance"]["xdm:strategyType"] == "auto-optimization"
    listed = client.get("/console/ranking-strategies")
    assert "Everyone" in listed.text and "auto-optimization" in listed.text


def test_a_decision_criterion_ranks_by_a_strategy_chosen_in_the_form(
    client: TestClient, signed_in: Tenant
) -> None:
    shop = Shop(signed_in, AUTO)
    [decision] = [d for d in _instances(signed_in, "offer-activity")]
    page = client.get(f"/console/decisions/{decision['instanceId']}")
    # The ranking select offers the strategy, and shows the criterion's choice.
    assert re.search(
        rf'<option selected value="{re.escape(shop.strategy)}">ranking strategy: auto</option>',
        page.text,
    ), page.text
    saved = client.post(
        f"/console/decisions/{decision['instanceId']}",
        data={
            "csrf_token": csrf_of(page.text),
            "name": "d",
            "status": "live",
            "fallback": decision["_instance"]["xdm:fallback"],
            "etag": "1",
            "criteria-0-placements": shop.placement,
            "criteria-0-collection": shop.collection,
            "criteria-0-formula": shop.strategy,
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    [decision] = _instances(signed_in, "offer-activity")
    order = decision["_instance"]["xdm:criteria"][0]["xdm:ranking"]["xdm:order"]
    assert order == {
        "xdm:orderEvaluationType": "rankingStrategy",
        "xdm:rankingStrategy": shop.strategy,
    }


def test_the_reports_page_takes_the_calendars_first_days_and_empty_fields(
    client: TestClient, signed_in: Tenant
) -> None:
    # The default first day is 29 days before the last: never before 0001-01-01.
    assert client.get("/console/reports?to=0001-01-03").status_code == 200
    # A date field left empty is absent, not a bad date.
    assert client.get("/console/reports?from=&to=").status_code == 200


def test_reports_draw_each_strategys_learning_curves_and_lift(
    client: TestClient, signed_in: Tenant
) -> None:
    empty = client.get("/console/reports")
    assert "No ranking strategy yet." in empty.text
    shop = Shop(signed_in, {**AUTO, "xdm:name": "Learner <b>"})
    teach(shop, shop.offers[1], 30)
    page = client.get("/console/reports?from=2026-01-01&to=2026-01-31")
    assert page.status_code == 200
    report = shop.report()
    assert "<title>Reports · nextoffer console</title>" in page.text
    section = page.text.split('id="strategies-title"', 1)[1]
    assert "Learner &lt;b&gt;" in section and "Learner <b>" not in section
    for title in ("CTR per day (%)", "impressions and clicks per day", "traffic share per offer"):
        assert f"Learner &lt;b&gt;: {title}" in section
    lift = report["total"]["lift"]
    assert f"Lift {lift['estimate'] * 100:+.1f} %" in section
    assert f"{lift['low'] * 100:+.1f} % to {lift['high'] * 100:+.1f} %" in section
    assert f"{report['total']['impressions']} impressions" in section
    # The traffic share of the most shown offer, as the table writes it.
    top = max(report["total"]["offers"], key=lambda o: o["impressions"])
    assert f"{top['trafficShare'] * 100:.1f} %" in section


def test_the_banner_shows_only_the_consoles_own_messages(
    client: TestClient, signed_in: Tenant
) -> None:
    # Any link could put its words in the banner of any page (`?flash=`), the sign-in
    # page too: a phishing line in the console's own voice. A redirect now signs it.
    forged = client.get("/console/offers?flash=Your+token+expired:+see+evil.example")
    assert forged.status_code == 200 and "evil.example" not in forged.text
    saved = _submit(client, "/console/placements/new", name="Banner", **PLACEMENT_FORM)
    assert saved.status_code == 303
    assert "Saved Banner." in client.get(saved.headers["location"]).text
    client.cookies.clear()
    login = client.get("/console/login?flash=Your+token+expired:+see+evil.example")
    assert "evil.example" not in login.text


def test_a_sign_out_posted_without_the_session_signs_no_one_out(
    client: TestClient, signed_in: Tenant
) -> None:
    # A form on another site posts without the SameSite cookie: it was answered with the
    # cookie's deletion, which the browser applied to the signed-in session.
    cookies = dict(client.cookies)
    client.cookies.clear()
    answered = client.post("/console/logout", follow_redirects=False)
    assert answered.status_code == 303
    assert "set-cookie" not in answered.headers
    client.cookies.update(cookies)
    token = csrf_of(client.get("/console/offers").text)
    signed_out = client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert "nextoffer_console=" in signed_out.headers["set-cookie"]


def test_a_page_of_one_kind_deletes_or_reverts_no_instance_of_another(
    client: TestClient, signed_in: Tenant
) -> None:
    placement_id = _create_placement(client, "Banner")
    token = csrf_of(client.get("/console/placements").text)
    for action, data in (("delete", {"etag": "1"}), ("revert", {"revision": "1", "etag": "1"})):
        response = client.post(
            f"/console/tags/{placement_id}/{action}",
            data={"csrf_token": token, **data},
            follow_redirects=False,
        )
        assert response.status_code == 404, (action, response.text)
    [stored] = _instances(signed_in, "offer-placement")
    assert (stored["_instance"]["xdm:name"], stored["repo:etag"]) == ("Banner", 1)


def test_csv_and_json_answers_are_kept_by_no_cache(client: TestClient, signed_in: Tenant) -> None:
    csv = client.get("/console/reports.csv")
    token = csrf_of(client.get("/console/rules/new").text)
    checked = client.post(
        "/console/pql/check", json={"source": "age > 1"}, headers={"X-CSRF-Token": token}
    )
    for response in (csv, checked):
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


# -- what a marketer met (functional audit) ----------------------------------------------


def _offer_id(tenant: Tenant, name: str) -> str:
    [found] = [
        r for r in _instances(tenant, "personalized-offer") if r["_instance"]["xdm:name"] == name
    ]
    return str(found["instanceId"])


def test_a_value_the_form_does_not_list_is_offered_and_kept_on_save(
    client: TestClient, signed_in: Tenant
) -> None:
    # An offer the API made "pending" showed as a draft (the select's first option), and
    # saving its description wrote "draft"; a channel the console does not list became Web.
    signed_in.create("personalized-offer", {"xdm:name": "Waiting", "xdm:status": "pending"})
    push = "https://ns.adobe.com/xdm/channel-types/push"
    placement = signed_in.create(
        "offer-placement", {"xdm:name": "Push", "xdm:channel": push, "xdm:componentType": HTML}
    )
    offer_id = _offer_id(signed_in, "Waiting")
    page = client.get(f"/console/offers/{offer_id}").text
    assert '<option selected value="pending">Pending</option>' in page
    saved = client.post(
        f"/console/offers/{offer_id}",
        data={
            "csrf_token": csrf_of(page),
            "etag": "1",
            "name": "Waiting",
            "description": "reviewed",
            "status": "pending",
            "priority": "0",
            "representations-0-kind": "html",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    [offer] = _instances(signed_in, "personalized-offer")
    assert (offer["_instance"]["xdm:status"], offer["_instance"]["xdm:description"]) == (
        "pending",
        "reviewed",
    )
    placement_page = client.get(f"/console/placements/{placement['instanceId']}").text
    assert f'<option selected value="{push}">{push}</option>' in placement_page
    # A decision may be complete, an offer rejected: the buttons offer every status.
    assert 'value="rejected">Mark rejected</button>' in page


def test_a_criterion_has_a_priority_so_a_strategy_and_a_formula_share_a_decision(
    client: TestClient, signed_in: Tenant
) -> None:
    # The API's group rule wants criteria ranked by a strategy in a group of their own;
    # the form had no priority, so no decision could rank one criterion by a strategy
    # and another by a formula.
    shop = Shop(signed_in, AUTO)
    formula = signed_in.create(
        "ranking-function",
        {
            "xdm:name": "f",
            "xdm:expression": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": "1"},
        },
    )["@id"]
    [decision] = _instances(signed_in, "offer-activity")
    page = client.get(f"/console/decisions/{decision['instanceId']}").text
    assert 'id="criteria-0-priority"' in page and 'value="0"' in page
    form = {
        "csrf_token": csrf_of(page),
        "name": "d",
        "status": "live",
        "fallback": decision["_instance"]["xdm:fallback"],
        "etag": "1",
        "criteria-0-placements": shop.placement,
        "criteria-0-collection": shop.collection,
        "criteria-0-formula": shop.strategy,
        "criteria-0-priority": "1",
        "criteria-1-placements": shop.placement,
        "criteria-1-collection": shop.collection,
        "criteria-1-formula": formula,
    }
    saved = client.post(
        f"/console/decisions/{decision['instanceId']}", data=form, follow_redirects=False
    )
    assert saved.status_code == 303, saved.text
    [decision] = _instances(signed_in, "offer-activity")
    rankings = [c["xdm:ranking"] for c in decision["_instance"]["xdm:criteria"]]
    assert rankings[0]["xdm:priority"] == 1
    assert "xdm:priority" not in rankings[1]  # left empty: not written (the API's 0)
    refused = client.post(
        f"/console/decisions/{decision['instanceId']}",
        data={**form, "etag": "2", "criteria-0-priority": "0"},
    )
    # The group rule's message is beside the criterion, under the "Not saved" banner.
    assert refused.status_code == 200
    assert "Not saved:</strong> see the messages beside the fields." in refused.text
    # The strategy by its name, not its @id.
    assert "another uses “auto”" in refused.text.replace("&#34;", '"')


def test_a_message_only_beside_a_representation_still_says_not_saved(
    client: TestClient, signed_in: Tenant
) -> None:
    response = _submit(
        client,
        "/console/offers/new",
        name="No placement",
        status="draft",
        priority="0",
        **{"representations-0-content": "Hello", "representations-0-kind": "text"},
    )
    assert response.status_code == 200
    assert 'id="representations-0-placement-error"' in response.text
    assert "Not saved:</strong> see the messages beside the fields." in response.text


def test_a_button_on_a_page_read_before_someone_saved_shows_the_current_version(
    client: TestClient, signed_in: Tenant
) -> None:
    # Status, delete and revert answered a bare "Conflict" page (409, an error in the
    # browser's console) quoting "If-Match 1 does not match the current repo:etag 2".
    instance_id = _create_placement(client, "Banner")
    token = csrf_of(client.get(f"/console/placements/{instance_id}").text)
    renamed = client.post(
        f"/console/placements/{instance_id}",
        data={"csrf_token": token, "etag": "1", "name": "Hero", **PLACEMENT_FORM},
        follow_redirects=False,
    )
    assert renamed.status_code == 303
    deleted = client.post(
        f"/console/placements/{instance_id}/delete", data={"csrf_token": token, "etag": "1"}
    )
    assert deleted.status_code == 200
    assert "Not deleted." in deleted.text
    assert "Someone changed this placement since you opened the page" in deleted.text
    assert 'value="Hero"' in deleted.text  # the current version, to check
    reverted = client.post(
        f"/console/placements/{instance_id}/revert",
        data={"csrf_token": token, "revision": "1", "etag": "1"},
    )
    assert reverted.status_code == 200
    assert "Not reverted: someone changed this placement" in reverted.text
    assert "Revision 2: updated" in reverted.text
    offer = signed_in.create("personalized-offer", {"xdm:name": "Gold", "xdm:status": "draft"})
    signed_in.client.patch(
        signed_in.url(f"/{offer['instanceId']}"),
        json=[{"op": "replace", "path": "/_instance/xdm:name", "value": "Gold 2"}],
        headers={**signed_in.headers, "If-Match": "1"},
    ).raise_for_status()
    status = client.post(
        f"/console/offers/{offer['instanceId']}/status",
        data={"csrf_token": token, "status": "approved", "etag": "1"},
    )
    assert status.status_code == 200
    assert "Status not changed to approved." in status.text
    assert [p["_instance"]["xdm:name"] for p in _instances(signed_in, "offer-placement")] == [
        "Hero"
    ]
    [stored] = _instances(signed_in, "personalized-offer")
    assert stored["_instance"]["xdm:status"] == "draft"


def test_the_search_box_wants_every_word_and_refuses_beside_itself(
    client: TestClient, signed_in: Tenant
) -> None:
    for n in range(3):
        signed_in.create(
            "fallback-offer", {"xdm:name": f"Bulk offer {n:03d}", "xdm:status": "draft"}
        )
    # The API's default (any word) listed every offer for the name of one.
    found = client.get("/console/fallback-offers?q=Bulk+offer+001").text
    assert "1 fallback offer<" in found and "Bulk offer 001" in found
    assert "Bulk offer 002" not in found
    # A stray quote mark was an error page without the list or the search box.
    quote = client.get('/console/fallback-offers?q="summer')
    assert quote.status_code == 200
    assert "Search not run: a quoted phrase is not closed." in quote.text
    assert 'value="&#34;summer"' in quote.text and 'aria-invalid="true"' in quote.text


def test_reports_refuse_dates_beside_the_form_and_keep_them(
    client: TestClient, signed_in: Tenant
) -> None:
    reversed_ = client.get("/console/reports?from=2026-12-10&to=2026-12-01")
    assert reversed_.status_code == 200  # the form again, not an error page
    assert "No report for these dates: to is before from." in reversed_.text
    assert 'value="2026-12-10"' in reversed_.text and 'value="2026-12-01"' in reversed_.text
    long = client.get("/console/reports?from=2020-01-01&to=2026-12-31")
    assert "at most 366 days" in long.text and 'value="2020-01-01"' in long.text


def test_a_name_of_spaces_is_refused_and_one_made_by_the_api_is_still_a_link(
    client: TestClient, signed_in: Tenant
) -> None:
    response = _submit(client, "/console/tags/new", name="   ")
    assert response.status_code == 200
    assert 'id="name-error"' in response.text
    tag = signed_in.create("tag", {"xdm:name": "   "})
    listed = client.get("/console/tags").text
    assert f"<bdi>{tag['@id']}</bdi>" in listed


def test_an_image_url_that_is_not_absolute_is_not_loaded_from_the_console(
    client: TestClient, signed_in: Tenant
) -> None:
    placement = signed_in.create(
        "offer-placement",
        {
            "xdm:name": "Hero image",
            "xdm:channel": WEB,
            "xdm:componentType": HTML.replace("html", "imagelink"),
        },
    )
    offer = signed_in.create(
        "personalized-offer",
        {
            "xdm:name": "Picture",
            "xdm:status": "draft",
            "xdm:representations": [
                {
                    "xdm:placement": placement["@id"],
                    "xdm:components": [
                        {"@type": HTML.replace("html", "imagelink"), "xdm:deliveryURL": "hero.png"}
                    ],
                }
            ],
        },
    )
    page = client.get(f"/console/offers/{offer['instanceId']}").text
    # <img src="hero.png"> was fetched from /console/offers/hero.png: a 404 on every view.
    assert 'src="hero.png"' not in page
    assert "is not an absolute http(s) address" in page


def test_a_simulation_error_names_the_decision_and_placement(
    client: TestClient, signed_in: Tenant
) -> None:
    shop = Shop(signed_in, AUTO)
    other = signed_in.create(
        "offer-placement", {"xdm:name": "Email slot", "xdm:channel": WEB, "xdm:componentType": HTML}
    )
    response = _submit(
        client,
        "/console/simulate",
        decision=shop.decision,
        placements=other["@id"],
        items="1",
        namespace="ECID",
    )
    assert response.status_code == 200
    assert "has no criterion for placement \u201cEmail slot\u201d" in response.text
    assert other["@id"] not in response.text.split("<form")[0]


def test_duplicate_fills_a_new_form_and_copies_what_the_form_does_not_show(
    client: TestClient, signed_in: Tenant
) -> None:
    # The console had no way to copy an object: a marketer retyped it, and lost what the
    # form does not show.
    condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": "age > 18"}
    defined_on = {"profile": {"xdm:schema": {"$ref": "https://ns.adobe.com/xdm/context/profile"}}}
    rule = signed_in.create(
        "eligibility-rule",
        {"xdm:name": "Adults", "xdm:condition": condition, "xdm:definedOn": defined_on},
    )
    edit = client.get(f"/console/rules/{rule['instanceId']}").text
    assert f'href="/console/rules/new?copy={rule["instanceId"]}">Duplicate</a>' in edit
    page = client.get(f"/console/rules/new?copy={rule['instanceId']}").text
    assert 'value="Adults (copy)"' in page and "age &gt; 18</textarea>" in page
    created = client.post(
        "/console/rules/new",
        data={
            "csrf_token": csrf_of(page),
            "name": "Adults (copy)",
            "condition": "age > 21",
            "copy_of": rule["instanceId"],
        },
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    rules = _instances(signed_in, "eligibility-rule")
    by_name = {r["_instance"]["xdm:name"]: r["_instance"] for r in rules}
    copied = by_name["Adults (copy)"]
    assert copied["xdm:definedOn"] == defined_on
    assert copied["xdm:condition"]["xdm:value"] == "age > 21"
    assert copied["@id"] != rule["@id"]
    assert by_name["Adults"]["xdm:condition"] == condition  # the original is untouched
    # A duplicate of an offer starts as a draft.
    offer = signed_in.create("personalized-offer", {"xdm:name": "Gold", "xdm:status": "approved"})
    copy_page = client.get(f"/console/offers/new?copy={offer['instanceId']}").text
    assert '<option selected value="draft">Draft</option>' in copy_page


def test_a_rules_error_beside_its_field_keeps_the_caret_under_the_fault(
    client: TestClient, signed_in: Tenant
) -> None:
    # The message's excerpt ran into its first line ("found '>' age >> 30 ^"), the caret
    # pointing nowhere.
    response = _submit(
        client, "/console/rules/new", name="Adults", condition="a = 1 and\n  age >> 30"
    )
    errors = re.search(r'<ul class="errors" id="condition-error">(.*?)</ul>', response.text, re.S)
    assert errors is not None, response.text
    assert "<li>line 2, column 8: expected an expression, found &#39;&gt;&#39;<pre" in errors.group(
        1
    )
    # The caret under the second ">" (column 9 of the indented excerpt).
    assert '<pre class="excerpt">    age &gt;&gt; 30\n         ^</pre>' in errors.group(1)


def test_a_number_past_64_bits_is_refused_beside_its_field_not_a_500(
    client: TestClient, signed_in: Tenant
) -> None:
    response = _submit(
        client,
        "/console/offers/new",
        name="Huge",
        status="draft",
        priority="99999999999999999999999",
        **{"representations-0-kind": "html"},
    )
    assert response.status_code == 200, response.text
    errors = re.search(r'<ul class="errors" id="priority-error">(.*?)</ul>', response.text, re.S)
    assert errors is not None and "9223372036854775807" in errors.group(1)
    assert _instances(signed_in, "personalized-offer") == []


def test_a_date_before_the_year_1000_shows_in_its_field_and_survives_a_save(
    client: TestClient, signed_in: Tenant
) -> None:
    offer = signed_in.create(
        "personalized-offer",
        {
            "xdm:name": "Always",
            "xdm:status": "draft",
            "xdm:selectionConstraint": {"xdm:startDate": "0001-01-01T00:00:00Z"},
        },
    )
    page = client.get(f"/console/offers/{offer['instanceId']}").text
    # "1-01-01T00:00" is no datetime-local value: the browser showed nothing, and the
    # next save dropped the date.
    assert 'name="startDate" type="datetime-local" value="0001-01-01T00:00"' in page
    saved = client.post(
        f"/console/offers/{offer['instanceId']}",
        data={
            "csrf_token": csrf_of(page),
            "etag": "1",
            "name": "Always",
            "status": "draft",
            "priority": "0",
            "startDate": "0001-01-01T00:00",
            "representations-0-kind": "html",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    [stored] = _instances(signed_in, "personalized-offer")
    assert stored["_instance"]["xdm:selectionConstraint"]["xdm:startDate"] == (
        "0001-01-01T00:00:00Z"
    )


def test_a_form_sent_after_the_session_ended_says_nothing_was_saved_and_leads_back(
    client: TestClient, signed_in: Tenant
) -> None:
    # The sign-in page was reached with next=<the form's address>, which answers only
    # POST: signing in ended on a 405, and nothing said the change was not made.
    instance_id = _create_placement(client, "Banner")
    page = f"http://testserver/console/placements/{instance_id}"
    token = csrf_of(client.get(page).text)
    client.cookies.clear()
    sent = client.post(
        f"/console/placements/{instance_id}/delete",
        data={"csrf_token": token, "etag": "1"},
        headers={"Referer": page + "?flash=old"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    location = urlsplit(sent.headers["location"])
    assert location.path == "/console/login"
    assert parse_qs(location.query)["next"] == [f"/console/placements/{instance_id}"]
    login = client.get(sent.headers["location"])
    assert "Your session ended before this form was sent: nothing was saved." in login.text
    assert f'name="next" value="/console/placements/{instance_id}"' in login.text
    assert len(_instances(signed_in, "offer-placement")) == 1


def test_a_new_object_form_sent_twice_creates_once(client: TestClient, signed_in: Tenant) -> None:
    # The browser's Back after Create shows the filled form again; Create then made a
    # second placement.
    page = client.get("/console/placements/new").text
    once = re.search(r'name="once" type="hidden" value="([^"]+)"', page)
    assert once is not None, page
    form = {"csrf_token": csrf_of(page), "once": once.group(1), "name": "Banner"}
    first = client.post("/console/placements/new", data={**form, **PLACEMENT_FORM})
    again = client.post(
        "/console/placements/new", data={**form, **PLACEMENT_FORM}, follow_redirects=False
    )
    assert first.status_code == 200 and "Saved Banner." in first.text
    [placement] = _instances(signed_in, "offer-placement")
    assert again.status_code == 303
    assert again.headers["location"].startswith(f"/console/placements/{placement['instanceId']}?")
    assert (
        "This form was sent before: it created Banner" in client.get(again.headers["location"]).text
    )
    # Another new form is another object.
    other = _submit(client, "/console/placements/new", name="Banner", **PLACEMENT_FORM)
    assert other.status_code == 303
    assert len(_instances(signed_in, "offer-placement")) == 2


def test_two_tags_of_one_name_are_two_choices_a_marketer_can_tell_apart(
    client: TestClient, signed_in: Tenant
) -> None:
    first = signed_in.create("tag", {"xdm:name": "Summer"})["@id"]
    second = signed_in.create("tag", {"xdm:name": "Summer"})["@id"]
    signed_in.create("tag", {"xdm:name": "Winter"})
    page = client.get("/console/offers/new").text
    assert f'<option value="{first}">Summer ({first})</option>' in page
    assert f'<option value="{second}">Summer ({second})</option>' in page
    assert ">Winter</option>" in page


def test_a_stale_save_says_so_without_the_apis_if_match_words(
    client: TestClient, signed_in: Tenant
) -> None:
    instance_id = _create_placement(client, "Banner")
    token = csrf_of(client.get(f"/console/placements/{instance_id}").text)
    for name in ("Hero", "Sidebar"):
        answer = client.post(
            f"/console/placements/{instance_id}",
            data={"csrf_token": token, "etag": "1", "name": name, **PLACEMENT_FORM},
        )
    assert "someone changed this placement since you opened it" in answer.text
    assert "If-Match" not in answer.text and "repo:etag" not in answer.text


def test_a_representation_is_removed_with_its_checkbox(
    client: TestClient, signed_in: Tenant
) -> None:
    # Removing one meant choosing "— choose —" and emptying its content: no one guessed.
    slots = [
        signed_in.create(
            "offer-placement", {"xdm:name": name, "xdm:channel": WEB, "xdm:componentType": HTML}
        )["@id"]
        for name in ("Top", "Side")
    ]
    component = {"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>x</p>"}
    offer = signed_in.create(
        "personalized-offer",
        {
            "xdm:name": "Two",
            "xdm:status": "draft",
            "xdm:representations": [
                {"xdm:placement": slot, "xdm:components": [component]} for slot in slots
            ],
        },
    )
    page = client.get(f"/console/offers/{offer['instanceId']}").text
    assert 'name="representations-0-remove"' in page
    assert 'name="representations-2-remove"' not in page  # not on the blank row
    rows = {
        f"representations-{n}-{key}": value
        for n, slot in enumerate(slots)
        for key, value in (("placement", slot), ("kind", "html"), ("content", "<p>x</p>"))
    }
    saved = client.post(
        f"/console/offers/{offer['instanceId']}",
        data={
            "csrf_token": csrf_of(page),
            "etag": "1",
            "name": "Two",
            "status": "draft",
            "priority": "0",
            **rows,
            "representations-0-remove": "y",
            "representations-2-kind": "html",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    [stored] = _instances(signed_in, "personalized-offer")
    assert [r["xdm:placement"] for r in stored["_instance"]["xdm:representations"]] == [slots[1]]


def _login_data(tenant: Tenant, page: str, **extra: str) -> dict[str, str]:
    return {
        "csrf_token": csrf_of(page),
        "org": tenant.creds.org,
        "sandbox": tenant.creds.sandbox,
        "apiKey": tenant.creds.api_key,
        "accessToken": tenant.creds.access_token,
        **extra,
    }


SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


OWNER = re.compile(r'name="owner" value="([^"]+)"')


def _page_fields(html: str) -> dict[str, str]:
    """The CSRF token and the signed owner every console form of ``html`` carries."""
    owner = OWNER.search(html)
    assert owner is not None, "the page's forms carry no owner"
    return {"csrf_token": csrf_of(html), "owner": owner.group(1)}


def _draft_in(html: str) -> str:
    draft = re.search(r'name="draft" value="([^"]+)"', html)
    assert draft is not None, html
    return draft.group(1)


def _tenant_user(client: TestClient, db_url: str, tenant: Tenant, user: str) -> Tenant:
    """Another user of ``tenant``'s org and sandbox (its own token)."""
    store = Store.open(db_url)
    try:
        creds = bootstrap(
            store, org=tenant.creds.org, sandbox=tenant.creds.sandbox, now=utcnow(), user=user
        )
    finally:
        store.close()
    return Tenant(client, creds)


def _sign_in_with(client: TestClient, tenant: Tenant, draft: str, target: str) -> Any:
    """A fresh sign-in page sent with ``tenant``'s credentials and a kept ``draft``."""
    client.cookies.clear()
    login = client.get("/console/login").text
    return client.post(
        "/console/login",
        data=_login_data(tenant, login, draft=draft, next=target),
        follow_redirects=False,
    )


def test_typing_sent_after_the_session_ended_comes_back_after_signing_in(
    client: TestClient, signed_in: Tenant
) -> None:
    # The session ended while a marketer typed; Save led to the sign-in page and
    # everything typed was gone.
    tag = signed_in.create("tag", {"xdm:name": "Summer"})["@id"]
    slot = signed_in.create(
        "offer-placement", {"xdm:name": "Top", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]
    page = client.get("/console/offers/new").text
    name = '<script>alert("x")</script> Spring sale'
    typed = {
        **_page_fields(page),
        "name": name,
        "status": "draft",
        "tags": tag,
        "characteristics": "code=SPRING",
        "representations-0-placement": slot,
        "representations-0-kind": "html",
        "representations-0-content": "<p>Spring</p>",
    }
    client.cookies.clear()
    ended = client.post("/console/offers/new", data=typed, headers=SAME_ORIGIN)
    # The sign-in page itself answers, carrying the values (signed) back: none is shown.
    assert ended.status_code == 200
    assert "Sign in to the console" in ended.text and "nothing was saved yet" in ended.text
    draft = re.search(r'name="draft" value="([^"]+)"', ended.text)
    assert draft is not None
    assert "Spring" not in ended.text and "<script>alert" not in ended.text
    assert _instances(signed_in, "personalized-offer") == []
    # A mistyped token: refused, and the values still ride along.
    wrong = client.post(
        "/console/login",
        data={**_login_data(signed_in, ended.text, draft=draft.group(1)), "accessToken": "x"},
    )
    assert "Sign-in refused" in wrong.text
    assert f'name="draft" value="{draft.group(1)}"' in wrong.text
    back = client.post(
        "/console/login",
        data=_login_data(signed_in, wrong.text, draft=draft.group(1)),
        follow_redirects=False,
    )
    assert back.status_code == 200, back.headers
    assert "nextoffer_console=" in back.headers.get("set-cookie", "")
    assert "Not saved yet." in back.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; Spring sale" in back.text
    assert "<script>alert" not in back.text
    assert f'<option selected value="{tag}">Summer</option>' in back.text
    assert "&lt;p&gt;Spring&lt;/p&gt;</textarea>" in back.text
    assert 'action="/console/offers/new"' in back.text
    assert _instances(signed_in, "personalized-offer") == []  # shown, not saved
    # Its Save, with the new session's token, saves them.
    saved = client.post(
        "/console/offers/new",
        data={**typed, "csrf_token": csrf_of(back.text)},
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    [offer] = _instances(signed_in, "personalized-offer")
    assert offer["_instance"]["xdm:name"] == name
    assert offer["_instance"]["xdm:tags"] == [tag]


def test_a_kept_form_needs_this_consoles_page_and_this_servers_signature(
    client: TestClient, signed_in: Tenant
) -> None:
    instance_id = _create_placement(client, "Banner")
    url = f"/console/placements/{instance_id}"
    token = csrf_of(client.get(url).text)
    client.cookies.clear()
    form = {"csrf_token": token, "etag": "1", "name": "Forged", **PLACEMENT_FORM}
    # Another site's form (or a client that says nothing of its origin) is not kept: the
    # sign-in would otherwise show a form filled with its values. Nor is one that does
    # not carry the owner this server signed into its page: whose it is, no one knows.
    forged = "WyJBQ01FQEFkb2JlT3JnIiwicHJvZCIsImFkbWluQEFDTUVAQWRvYmVPcmciXQ.x.y"
    for headers, owner in (
        ({"Sec-Fetch-Site": "cross-site"}, {}),
        ({"Origin": "https://evil.example"}, {}),
        ({}, {}),
        (SAME_ORIGIN, {}),
        (SAME_ORIGIN, {"owner": forged}),
    ):
        sent = client.post(url, data={**form, **owner}, headers=headers, follow_redirects=False)
        assert sent.status_code == 303, (headers, owner)
        assert sent.headers["location"].startswith("/console/login?next=")
    # A draft this server did not sign (or signed over an hour ago) restores nothing.
    login = client.get("/console/login").text
    signed = client.post(
        "/console/login",
        data=_login_data(signed_in, login, draft="eyJwYXRoIjoiL2NvbnNvbGUvIn0.x.y", next=url),
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"].startswith(url + "?flash=")
    assert (
        "kept for an hour, and that hour has passed" in client.get(signed.headers["location"]).text
    )
    [placement] = _instances(signed_in, "offer-placement")
    assert placement["_instance"]["xdm:name"] == "Banner"


def test_a_form_of_an_earlier_session_is_shown_again_with_what_was_typed(
    client: TestClient, signed_in: Tenant
) -> None:
    # Signed in again (a new session, a new CSRF secret): every form still open in
    # another tab was refused, and its typing lost.
    instance_id = _create_placement(client, "Banner")
    url = f"/console/placements/{instance_id}"
    fields = _page_fields(client.get(url).text)
    old = fields["csrf_token"]
    client.cookies.clear()
    sign_in(client, signed_in)
    form = {**fields, "etag": "1", "name": "Hero <b>", **PLACEMENT_FORM}
    again = client.post(url, data=form, headers=SAME_ORIGIN)
    assert again.status_code == 200
    assert "Not saved yet." in again.text and "earlier session" in again.text
    assert 'value="Hero &lt;b&gt;"' in again.text
    assert csrf_of(again.text) != old
    [placement] = _instances(signed_in, "offer-placement")
    assert placement["_instance"]["xdm:name"] == "Banner"
    # The same post from another site is refused, as before.
    refused = client.post(url, data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and "Form refused" in refused.text
    saved = client.post(
        url, data={**form, "csrf_token": csrf_of(again.text)}, follow_redirects=False
    )
    assert saved.status_code == 303
    [placement] = _instances(signed_in, "offer-placement")
    assert placement["_instance"]["xdm:name"] == "Hero <b>"


def test_a_kept_form_comes_back_only_to_its_user_org_and_sandbox(
    client: TestClient, db_url: str, signed_in: Tenant
) -> None:
    # The kept values named only the form's address: signing in to another org (or
    # sandbox, or as another user) in the same browser showed ACME's typing in its form.
    others = {
        "another org": make_tenant(client, db_url, "OTHER@AdobeOrg", "prod"),
        "another sandbox": make_tenant(client, db_url, signed_in.creds.org, "dev"),
        "another user": _tenant_user(client, db_url, signed_in, "ann@ACME"),
    }
    placement = signed_in.create(
        "offer-placement", {"xdm:name": "Banner", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["instanceId"]
    for url in ("/console/placements/new", f"/console/placements/{placement}"):
        sign_in(client, signed_in)
        page = client.get(url).text
        client.cookies.clear()
        typed = {**_page_fields(page), "etag": "1", "name": "Typed in ACME", **PLACEMENT_FORM}
        ended = client.post(url, data=typed, headers=SAME_ORIGIN)
        assert ended.status_code == 200 and "nothing was saved yet" in ended.text
        draft = _draft_in(ended.text)
        for who, other in others.items():
            signed = _sign_in_with(client, other, draft, url)
            assert signed.status_code == 303, (url, who, signed.text)
            assert "Typed in ACME" not in signed.text
            location = signed.headers["location"]
            assert location.startswith("/console/offers?flash="), (url, who)
            landing = client.get(location).text
            assert "Typed in ACME" not in landing and placement not in landing
            assert "so it was not brought back" in landing, (url, who)
        back = _sign_in_with(client, signed_in, draft, url)
        assert back.status_code == 200 and "Not saved yet." in back.text
        assert 'value="Typed in ACME"' in back.text
    [stored] = _instances(signed_in, "offer-placement")
    assert stored["_instance"]["xdm:name"] == "Banner"
    assert _instances(others["another org"], "offer-placement") == []
    assert _instances(others["another sandbox"], "offer-placement") == []


def test_a_form_of_another_users_page_is_not_shown_to_whoever_signed_in_since(
    client: TestClient, db_url: str, signed_in: Tenant
) -> None:
    # A page of ACME left open; another org signed in in the same browser: ACME's form,
    # sent with its old token, came back filled in the other org's console.
    page = client.get("/console/placements/new").text
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    client.cookies.clear()
    sign_in(client, other)
    form = {**_page_fields(page), "name": "Typed in ACME", **PLACEMENT_FORM}
    sent = client.post("/console/placements/new", data=form, headers=SAME_ORIGIN)
    assert sent.status_code == 403 and "Form refused" in sent.text
    assert "Typed in ACME" not in sent.text
    assert _instances(other, "offer-placement") == []
    assert _instances(signed_in, "offer-placement") == []


def test_a_button_sent_after_the_session_ended_leads_back_to_press_it_again(
    client: TestClient, db_url: str, signed_in: Tenant
) -> None:
    # Delete, a status or revert sent when the session had ended led to the sign-in
    # page, whose 60-second banner went with the first mistyped token; signing in then
    # showed the page (or the list, without a Referer) as if the button had worked.
    placement = _create_placement(client, "Banner")
    renamed = _submit(
        client, f"/console/placements/{placement}", etag="1", name="Hero", **PLACEMENT_FORM
    )
    assert renamed.status_code == 303
    fallback = signed_in.create("fallback-offer", {"xdm:name": "Plain", "xdm:status": "draft"})
    other = make_tenant(client, db_url, "OTHER@AdobeOrg", "prod")
    buttons = [
        (
            f"/console/fallback-offers/{fallback['instanceId']}",
            "status",
            {"status": "approved", "etag": "1"},
            "the status of the fallback offer was not changed to approved",
        ),
        (
            f"/console/placements/{placement}/history",
            "revert",
            {"revision": "1", "etag": "2"},
            "the placement was not reverted to revision 1",
        ),
        (
            f"/console/placements/{placement}",
            "delete",
            {"etag": "3"},  # the revert's revision
            "the placement was not deleted",
        ),
    ]
    for url, button, data, undone in buttons:
        action = url.removesuffix("/history") + f"/{button}"
        page = client.get(url).text
        old = {**_page_fields(page), **data}
        client.cookies.clear()
        ended = client.post(action, data=old, headers=SAME_ORIGIN, follow_redirects=False)
        assert ended.status_code == 200, (button, ended.headers)
        assert "Sign in to the console" in ended.text
        assert f"Your session ended before this form was sent: {undone}." in ended.text
        assert f'name="next" value="{url}"' in ended.text
        draft = _draft_in(ended.text)
        # Said again after a mistyped token; another org's sign-in is not led there.
        wrong = client.post(
            "/console/login",
            data={**_login_data(signed_in, ended.text, draft=draft, next=url), "accessToken": "x"},
        )
        assert "Sign-in refused" in wrong.text and undone in wrong.text
        elsewhere = _sign_in_with(client, other, draft, url)
        assert elsewhere.headers["location"].startswith("/console/offers?flash=")
        assert undone not in client.get(elsewhere.headers["location"]).text
        back = _sign_in_with(client, signed_in, draft, url)
        assert back.status_code == 303 and back.headers["location"].startswith(f"{url}?flash=")
        shown = client.get(back.headers["location"])
        assert shown.status_code == 200
        assert (
            f"Not done: your session had ended when you sent this form, so {undone}. "
            "Press its button again if you still want to." in shown.text
        )
        # Nothing was done from what was kept, and the old form's token still holds nothing.
        assert client.post(action, data=old, follow_redirects=False).status_code == 403
        again = client.post(
            action, data={**old, "csrf_token": csrf_of(shown.text)}, follow_redirects=False
        )
        assert again.status_code == 303, (button, again.text)
    assert _instances(signed_in, "offer-placement") == []
    [offer] = _instances(signed_in, "fallback-offer")
    assert offer["_instance"]["xdm:status"] == "approved"


def _offer_form(slot: str, **fields: str) -> dict[str, str]:
    return {
        "name": "Gold",
        "status": "draft",
        "priority": "0",
        "representations-0-placement": slot,
        "representations-0-kind": "html",
        "representations-0-content": "<p>Gold</p>",
        **fields,
    }


def _constraint(tenant: Tenant) -> dict[str, Any]:
    [offer] = _instances(tenant, "personalized-offer")
    return dict(offer["_instance"]["xdm:selectionConstraint"])


def test_an_offers_segments_are_chosen_edited_and_removed_in_the_form(
    client: TestClient, signed_in: Tenant
) -> None:
    # The form could not give an offer segments, nor change those the API gave it.
    slot = signed_in.create(
        "offer-placement", {"xdm:name": "Top", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]
    blank = client.get("/console/offers/new").text
    assert '<option value="segments">Visitors in segments</option>' in blank
    assert 'name="segments-0-segment"' in blank and 'name="segments-0-remove"' not in blank
    made = _submit(
        client,
        "/console/offers/new",
        **_offer_form(
            slot,
            audience="segments",
            segmentsMatch="allSegments",
            **{
                "segments-0-segment": " s-vip ",
                "segments-0-namespace": "ups",
                "segments-1-segment": "s-gold",
                "segments-1-namespace": "",
                "segments-2-namespace": "ups",  # a blank row
            },
        ),
    )
    assert made.status_code == 303, made.text
    assert _constraint(signed_in) == {
        "xdm:profileConstraintType": "allSegments",
        "xdm:segmentIdentities": [
            {"_id": "s-vip", "xdm:namespace": {"xdm:code": "ups"}},
            {"_id": "s-gold"},
        ],
    }
    url = made.headers["location"].split("?")[0]
    page = client.get(url).text
    assert '<option selected value="segments">' in page
    assert '<option selected value="allSegments">' in page
    assert 'name="segments-0-segment" type="text" value="s-vip"' in page
    assert 'name="segments-1-remove"' in page and 'name="segments-2-remove"' not in page
    # The first removed with its checkbox, the second edited, any of them.
    edited = client.post(
        url,
        data={
            "csrf_token": csrf_of(page),
            "etag": "1",
            **_offer_form(
                slot,
                audience="segments",
                segmentsMatch="anySegments",
                **{
                    "segments-0-segment": "s-vip",
                    "segments-0-namespace": "ups",
                    "segments-0-remove": "y",
                    "segments-1-segment": "s-platinum",
                    "segments-1-namespace": "ups",
                },
            ),
        },
        follow_redirects=False,
    )
    assert edited.status_code == 303, edited.text
    assert _constraint(signed_in) == {
        "xdm:profileConstraintType": "anySegments",
        "xdm:segmentIdentities": [{"_id": "s-platinum", "xdm:namespace": {"xdm:code": "ups"}}],
    }
    # All visitors: the segments go with the audience.
    everyone = client.post(
        url,
        data={
            "csrf_token": csrf_of(page),
            "etag": "2",
            **_offer_form(slot, audience="none", **{"segments-0-segment": "s-platinum"}),
        },
        follow_redirects=False,
    )
    assert everyone.status_code == 303, everyone.text
    assert _constraint(signed_in) == {"xdm:profileConstraintType": "none"}


def test_an_offers_audience_is_refused_beside_its_field(
    client: TestClient, signed_in: Tenant
) -> None:
    slot = signed_in.create(
        "offer-placement", {"xdm:name": "Top", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]

    def errors_of(html: str, field: str) -> str:
        found = re.search(rf'<ul class="errors" id="{field}-error">(.*?)</ul>', html, re.S)
        assert found is not None, html
        return found.group(1)

    # Segments without one, a rule's audience without the rule: no body means that.
    none = _submit(client, "/console/offers/new", **_offer_form(slot, audience="segments"))
    assert none.status_code == 200
    assert "add a segment id" in errors_of(none.text, "segments-0-segment")
    ruleless = _submit(
        client, "/console/offers/new", **_offer_form(slot, audience="eligibilityRule")
    )
    assert "choose the decision rule" in errors_of(ruleless.text, "rule")
    # The API's own refusal of an identity lands beside its row (the row sent, not the
    # body's index: the blank first row is not written).
    nul = _submit(
        client,
        "/console/offers/new",
        **_offer_form(
            slot,
            audience="segments",
            **{"segments-0-segment": "", "segments-1-segment": "vip\x00"},
        ),
    )
    assert nul.status_code == 200
    assert "a NUL character (U+0000) cannot be stored" in errors_of(nul.text, "segments-1-segment")
    assert 'value="vip' in nul.text
    assert _instances(signed_in, "personalized-offer") == []


def test_an_api_offers_segments_survive_an_unchanged_save_and_an_edit(
    client: TestClient, signed_in: Tenant
) -> None:
    slot = signed_in.create(
        "offer-placement", {"xdm:name": "Top", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]
    uri = "https://data.adobe.io/entities/segmentIdentity/id123"
    constraint = {
        "xdm:profileConstraintType": "anySegments",
        "xdm:segmentIdentities": [
            {"@id": uri, "namespace": {"code": "AA12345"}, "xid": "x-1"},
            {"xdm:id": "s-2"},
        ],
    }
    offer = signed_in.create(
        "personalized-offer",
        {
            "xdm:name": "Adobe's",
            "xdm:status": "approved",
            "xdm:representations": [
                {
                    "xdm:placement": slot,
                    "xdm:components": [
                        {"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>x</p>"}
                    ],
                }
            ],
            "xdm:selectionConstraint": constraint,
        },
    )
    url = f"/console/offers/{offer['instanceId']}"
    page = client.get(url).text
    assert f'value="{uri}"' in page and 'value="AA12345"' in page
    form = {
        "csrf_token": csrf_of(page),
        "etag": "1",
        **_offer_form(slot, name="Adobe's", status="approved", audience="segments"),
        "representations-0-content": "<p>x</p>",
        "segmentsMatch": "anySegments",
        "segments-0-segment": uri,
        "segments-0-namespace": "AA12345",
        "segments-1-segment": "s-2",
        "segments-1-namespace": "",
        "segments-2-namespace": "ups",
    }
    assert client.post(url, data=form, follow_redirects=False).status_code == 303
    assert _constraint(signed_in) == constraint
    # An edit of a row keeps its spellings and its other members.
    form = {**form, "etag": "2", "segments-0-segment": uri + "b", "segments-0-namespace": "ups"}
    assert client.post(url, data=form, follow_redirects=False).status_code == 303
    assert _constraint(signed_in)["xdm:segmentIdentities"][0] == {
        "@id": uri + "b",
        "namespace": {"code": "ups"},
        "xid": "x-1",
    }


def test_an_unchanged_save_adds_no_channel_rank_or_constraint_the_api_left_out(
    client: TestClient, signed_in: Tenant
) -> None:
    # All optional in the API's body; the form wrote the placement's channel into each
    # representation, a rank of 0 and an "all visitors" constraint on every save.
    slot = signed_in.create(
        "offer-placement", {"xdm:name": "Top", "xdm:channel": WEB, "xdm:componentType": HTML}
    )["@id"]
    component = {"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>x</p>"}
    offer = signed_in.create(
        "personalized-offer",
        {
            "xdm:name": "Bare",
            "xdm:status": "draft",
            "xdm:representations": [{"xdm:placement": slot, "xdm:components": [component]}],
        },
    )
    [before] = _instances(signed_in, "personalized-offer")
    url = f"/console/offers/{offer['instanceId']}"
    page = client.get(url).text
    form = {
        "csrf_token": csrf_of(page),
        "etag": "1",
        **_offer_form(slot, name="Bare", audience="none"),
        "representations-0-content": "<p>x</p>",
        "representations-0-language": "",
    }
    assert client.post(url, data=form, follow_redirects=False).status_code == 303
    [after] = _instances(signed_in, "personalized-offer")
    assert after["_instance"] == before["_instance"]

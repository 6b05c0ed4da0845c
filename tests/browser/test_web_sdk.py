"""Adobe's Web SDK, unchanged, against nextoffer: a real ``nextoffer serve``, Debian's
chromium, the SDK from the npm registry (``support/websdk.py``).

The shop page asks for a decision scope, renders the proposition, sends the display
event and, on a click, the interact event, all built by the SDK. The test then reads the
offers report and the caps through nextoffer's API, reloads the page and checks that the
visitor kept their ECID — through the first-party cookie when the edge domain is the
shop's own, through ``meta.state`` when it is another site's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nextoffer.ids import utcnow
from nextoffer.service.tenants import Credentials, bootstrap
from nextoffer.storage.store import Store
from support.edge import Library
from support.live import headers_of
from support.servers import serve
from support.websdk import (
    BASE_CODE,
    PAGE_ORIGIN,
    EdgeForwarder,
    fetch_alloy,
    page_html,
)

ORG = "SHOP0123456789ABCDEF0123@AdobeOrg"
IDENTITY_COOKIE = "kndctr_SHOP0123456789ABCDEF0123_AdobeOrg_identity"


@pytest.fixture(scope="module")
def alloy_js(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return fetch_alloy(tmp_path_factory.mktemp("alloy")).read_bytes()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Credentials]]:
    db_url = f"sqlite:///{tmp_path / 'nextoffer.db'}"
    store = Store.open(db_url)
    try:
        creds = bootstrap(store, org=ORG, sandbox="prod", now=utcnow())
    finally:
        store.close()
    with serve(db_url, workdir=tmp_path) as base:
        yield base, creds


class Shop:
    """The library, the datastream opened to the shop's origin, and a browser context
    whose shop page talks to ``edge_domain``."""

    def __init__(
        self,
        base: str,
        creds: Credentials,
        browser: Any,
        alloy_js: bytes,
        edge_domain: str,
        origins: list[str],
    ) -> None:
        self.api = httpx.Client(base_url=base, timeout=30)
        self.library = Library(
            self.api,
            headers_of(creds),
            creds.container_id,
            [{"xdm:limit": 1, "xdm:scope": "profile", "xdm:events": ["impression"]}],
        )
        patched = self.api.patch(
            f"/data/core/nextoffer/datastreams/{creds.datastream_id}",
            json={"allowedOrigins": origins},
            headers=headers_of(creds),
        )
        assert patched.status_code == 200, patched.text
        self.forwarder = EdgeForwarder(base)
        self.context = browser.new_context(ignore_https_errors=True)
        html = page_html(
            datastream=creds.datastream_id,
            org=creds.org,
            edge_domain=edge_domain,
            scope=self.library.scope,
        )
        self.context.route(
            f"{PAGE_ORIGIN}/",
            lambda route: route.fulfill(status=200, content_type="text/html", body=html),
        )
        self.context.route(
            f"{PAGE_ORIGIN}/alloy.js",
            lambda route: route.fulfill(
                status=200, content_type="application/javascript", body=alloy_js
            ),
        )
        self.context.route(f"https://{edge_domain}/**", self.forwarder)
        self.errors: list[str] = []

    def visit(self) -> tuple[Any, dict[str, str]]:
        """Load the page; wait until the offer is shown and its display event answered."""
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(f"{PAGE_ORIGIN}/")
        offer_id = page.evaluate("window.done")
        box = page.locator("#offer")
        data = {
            "offer": offer_id,
            "text": box.inner_text(),
            "ecid": box.get_attribute("data-ecid") or "",
        }
        assert not self.errors, self.errors
        return page, data

    def close(self) -> None:
        self.context.close()
        self.forwarder.close()
        self.api.close()


@pytest.fixture
def shop_factory(server: tuple[str, Credentials], browser: Any, alloy_js: bytes) -> Iterator[Any]:
    base, creds = server
    opened: list[Shop] = []

    def make(edge_domain: str, origins: list[str] = [PAGE_ORIGIN]) -> Shop:  # noqa: B006
        shop = Shop(base, creds, browser, alloy_js, edge_domain, origins)
        opened.append(shop)
        return shop

    yield make
    for shop in opened:
        shop.close()


def interacts(shop: Shop) -> list[dict[str, Any]]:
    return [json.loads(body) for path, _, body in shop.forwarder.seen if path.endswith("/interact")]


def test_web_sdk_renders_counts_display_and_click_and_keeps_the_visitor(shop_factory: Any) -> None:
    shop = shop_factory("edge.shop.test")  # first-party: the shop's own site
    library = shop.library
    page, first = shop.visit()
    assert first["offer"] == library.a and first["text"] == "A"
    assert len(first["ecid"]) == 38 and first["ecid"].isdigit()
    page.locator("#offer").click()
    page.wait_for_function("document.getElementById('offer').dataset.state === 'clicked'")
    report = library.report()
    assert (report[library.a]["impressions"], report[library.a]["clicks"]) == (1, 1)
    # The impression cap (1 per profile) now holds A back for this visitor.
    trace = library.explain("ECID", first["ecid"])
    assert any(
        c["offerId"] == library.a and c["reason"] == "profileCapReached"
        for c in trace["nextoffer:explain"]["candidates"]
    ), trace
    page.close()
    # The next page load: same visitor (the identity cookie), so B instead of A.
    cookies = {c["name"]: c for c in shop.context.cookies(f"{PAGE_ORIGIN}/")}
    assert IDENTITY_COOKIE in cookies and cookies[IDENTITY_COOKIE]["domain"] == ".shop.test"
    page, second = shop.visit()
    assert second["ecid"] == first["ecid"]
    assert second["offer"] == library.b and second["text"] == "B"
    # First party: the identity travelled as a cookie, not in meta.state.
    later = [h for path, h, _ in shop.forwarder.seen[3:] if path.endswith("/interact")]
    assert later and all(IDENTITY_COOKIE in h.get("cookie", "") for h in later)
    assert not any(
        (body.get("meta", {}).get("state", {}).get("entries")) for body in interacts(shop)
    )
    report = library.report()
    assert report[library.a]["impressions"] == 1 and report[library.b]["impressions"] == 1


def test_third_party_edge_domain_keeps_the_visitor_through_meta_state(shop_factory: Any) -> None:
    shop = shop_factory("edge.offers.test")  # another site: the SDK sends its state
    _, first = shop.visit()
    _, second = shop.visit()
    assert second["ecid"] == first["ecid"]
    sent = interacts(shop)
    entries = [body.get("meta", {}).get("state", {}).get("entries") or [] for body in sent]
    assert not entries[0]  # the first visit had no identity yet
    assert any(e["key"] == IDENTITY_COOKIE for later in entries[1:] for e in later)
    for _, headers, _ in shop.forwarder.seen:
        assert IDENTITY_COOKIE not in headers.get("cookie", "")


def test_a_page_on_an_origin_the_datastream_does_not_allow_gets_nothing(
    shop_factory: Any,
) -> None:
    shop = shop_factory("edge.shop.test", ["https://elsewhere.test"])
    page = shop.context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{PAGE_ORIGIN}/")
    assert page.evaluate("window.done") is None
    assert page.locator("#offer").get_attribute("data-state") == "none"
    # nextoffer answered 403 without CORS headers, so the browser withheld the answer.
    assert [h.get("origin") for _, h, _ in shop.forwarder.seen] == [PAGE_ORIGIN]
    assert any("Failed to fetch" in text or "CORS" in text for text in console), console
    assert shop.library.report().get(shop.library.a, {}).get("propositions", 0) == 0


def sdk_page(creds: Credentials, scope: str, script: str, **config: Any) -> str:
    """A page that configures the SDK (with ``config``) and runs ``script``, whose value
    (or ``"timeout"`` after 10 s: a call the SDK holds forever) is ``window.done``."""
    configured = {
        "datastreamId": creds.datastream_id,
        "orgId": creds.org,
        "edgeDomain": "edge.shop.test",
        **config,
    }
    return f"""<!doctype html><html><head><script>{BASE_CODE}</script>
<script src="/alloy.js" async></script></head><body><script>
const scope = {json.dumps(scope)};
const run = async () => {{ await alloy("configure", {json.dumps(configured)}); {script} }};
const late = new Promise((resolve) => setTimeout(() => resolve("timeout"), 10000));
window.done = Promise.race([run(), late]);
</script></body></html>"""


def run_page(shop: Shop, html: str) -> Any:
    # Registered last, so this page is served instead of the shop's (Playwright tries
    # routes in the reverse order of their registration).
    shop.context.route(
        f"{PAGE_ORIGIN}/",
        lambda route: route.fulfill(status=200, content_type="text/html", body=html),
    )
    page = shop.context.new_page()
    page.goto(f"{PAGE_ORIGIN}/")
    try:
        return page.evaluate("window.done")
    finally:
        page.close()


def test_get_identity_first_and_set_consent_under_pending_consent_work(
    shop_factory: Any, server: tuple[str, Credentials]
) -> None:
    # getIdentity as a page's first call posts to identity/acquire; setConsent to
    # privacy/set-consent, and with defaultConsent "pending" the SDK sends no event
    # until that answer has stored the consent state. Both were 404s: getIdentity
    # failed, and every sendEvent of such a page waited forever.
    _, creds = server
    shop = shop_factory("edge.shop.test")
    first = run_page(
        shop,
        sdk_page(
            creds,
            shop.library.scope,
            """const before = await alloy("getIdentity", { namespaces: ["ECID"] });
            const sent = await alloy("sendEvent", { personalization: { decisionScopes: [scope] } });
            const after = await alloy("getIdentity", { namespaces: ["ECID"] });
            return [before.identity.ECID, after.identity.ECID, sent.propositions.length];""",
        ),
    )
    assert first[0] == first[1] and len(first[0]) == 38 and first[2] == 1, first
    paths = [path for path, _, _ in shop.forwarder.seen]
    assert paths[0] == "/ee/v1/identity/acquire", paths
    pending = shop_factory("edge.shop.test")
    second = run_page(
        pending,
        sdk_page(
            creds,
            pending.library.scope,
            """await alloy("setConsent", {
              consent: [{ standard: "Adobe", version: "2.0", value: { collect: { val: "y" } } }],
            });
            const sent = await alloy("sendEvent", { personalization: { decisionScopes: [scope] } });
            return sent.propositions[0].items[0].id;""",
            defaultConsent="pending",
        ),
    )
    assert second == pending.library.a
    cookies = {c["name"]: c["value"] for c in pending.context.cookies(f"{PAGE_ORIGIN}/")}
    assert cookies[f"kndctr_{creds.org.replace('@', '_')}_consent"] == "general=in"


#: TC strings of IAB Tech Lab's reference encoder (``@iabtcf/core`` 1.5.6): purposes 1
#: and 10 and vendor 565 (Adobe) consented; the same without vendor 565.
TC_CONSENTED = "CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAEawAQEagAAAA.YAAAAAAAAAAA"
TC_NOT_ADOBE = "CQujIwAQujIwAAKABAENCWCgAIBAAAAAAAAAF5wAQF5gAAAA.YAAAAAAAAAAA"


def test_a_cmp_s_iab_tcf_consent_alone_lets_the_sdk_send_or_holds_it_back(
    shop_factory: Any, server: tuple[str, Credentials]
) -> None:
    # A site with a CMP calls setConsent with the TC string only: that was a 400, so
    # under defaultConsent "pending" the SDK never sent an event.
    _, creds = server
    consent_cookie = f"kndctr_{creds.org.replace('@', '_')}_consent"
    for tc_string, general in ((TC_CONSENTED, "in"), (TC_NOT_ADOBE, "out")):
        shop = shop_factory("edge.shop.test")
        done = run_page(
            shop,
            sdk_page(
                creds,
                shop.library.scope,
                f"""await alloy("setConsent", {{
                  consent: [{{ standard: "IAB TCF", version: "2.0",
                               value: {json.dumps(tc_string)}, gdprApplies: true }}],
                }});
                try {{
                  const sent = await alloy("sendEvent",
                    {{ personalization: {{ decisionScopes: [scope] }} }});
                  return (sent.propositions || []).map((p) => p.items[0].id);
                }} catch (error) {{
                  return "refused: " + error.message;
                }}""",
                defaultConsent="pending",
            ),
        )
        cookies = {c["name"]: c["value"] for c in shop.context.cookies(f"{PAGE_ORIGIN}/")}
        assert cookies[consent_cookie] == f"general={general}", (general, done)
        paths = [path for path, _, _ in shop.forwarder.seen]
        assert paths[0] == "/ee/v1/privacy/set-consent", paths
        if general == "in":
            assert done == [shop.library.a], done
        else:
            # Consent refused: the SDK sends no event at all.
            assert not any(p.endswith("/interact") for p in paths), (paths, done)

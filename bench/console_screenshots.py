"""The screenshots of docs/console.md, taken by Playwright with Debian's chromium.

Starts ``nextoffer serve`` on a fresh database with the demo library, records a few
decisions and events (for the reports), signs in through the printed link, and saves one
PNG per main page into ``docs/img/console-*.png``.

    .venv/bin/python bench/console_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from httpbench import free_port
from playwright.sync_api import sync_playwright

from nextoffer.cli.demo import seed_library
from nextoffer.console import login_link
from nextoffer.ids import format_datetime, utcnow
from nextoffer.repository.objects import DECISION, RANKING_STRATEGY
from nextoffer.root import NextOffer
from nextoffer.settings import Settings

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DECIDE = "application/json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{Path(tmp) / 'shots.db'}"
        with NextOffer.open(Settings(db_url=db_url)) as no:
            creds = no.bootstrap(org="ACME@AdobeOrg", sandbox="prod")
            ids = seed_library(no.repository, creds.principal, creds.container_id)
            with no.store.session() as session:
                found = session.instances_by_at_id(creds.container_id, list(ids.values()))
            # A copy of the demo decision ranked by an AI strategy: its learning curves.
            who, cid = creds.principal, creds.container_id
            strategy = no.create(
                who,
                cid,
                RANKING_STRATEGY,
                {"xdm:name": "Homepage learner", "xdm:strategyType": "auto-optimization"},
            ).at_id
            learning = {
                k: v for k, v in found[ids["decision"]].body.items() if not k.startswith("@")
            }
            learning["xdm:name"] = "Homepage (AI ranked)"
            learning["xdm:criteria"] = [
                {
                    **c,
                    "xdm:ranking": {
                        "xdm:order": {
                            "xdm:orderEvaluationType": "rankingStrategy",
                            "xdm:rankingStrategy": strategy,
                        }
                    },
                }
                for c in learning["xdm:criteria"][:1]
            ]
            ids["learning"] = no.create(who, cid, DECISION, learning).at_id
        port = free_port()
        exe = Path(sys.executable).with_name("nextoffer")
        server = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--db", db_url, "--no-access-log"],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            headers = {
                "Authorization": f"Bearer {creds.access_token}",
                "x-api-key": creds.api_key,
                "x-gw-ims-org-id": creds.org,
                "x-sandbox-name": creds.sandbox,
                "Content-Type": DECIDE,
            }
            for n in range(80):
                decision = ids["decision"] if n % 2 else ids["learning"]
                body = {
                    "xdm:propositionRequests": [
                        {"xdm:placementId": ids["placement"], "xdm:activityId": decision}
                    ],
                    "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": f"p{n}@x.com"}]}}],
                }
                answer = httpx.post(
                    f"{base}/data/core/ode/{creds.container_id}/decisions",
                    json=body,
                    headers=headers,
                ).json()
                # Most propositions are seen, some clicked: the report then has a CTR.
                kinds = ["decisioning.propositionDisplay"] * (n % 4 != 0)
                kinds += ["decisioning.propositionInteract"] * (n % 5 == 0)
                for kind in kinds:
                    option = answer["xdm:propositions"][0].get("xdm:options", [{}])[0]
                    event = {
                        "xdm:timestamp": format_datetime(utcnow()),
                        "xdm:eventType": kind,
                        "https://ns.adobe.com/experience/decisioning/propositions": [
                            {
                                "xdm:id": answer["xdm:propositionId"],
                                "xdm:items": [{"xdm:id": option.get("xdm:id", "")}],
                            }
                        ],
                    }
                    httpx.post(
                        f"{base}/data/core/nextoffer/events",
                        json={"events": [event]},
                        headers=headers,
                    )
            shoot(base, creds, ids, found, args.out)
        finally:
            server.terminate()
            server.wait(timeout=20)


def shoot(base: str, creds: object, ids: dict[str, str], found: dict, out: Path) -> None:  # type: ignore[type-arg]
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{base}/console/login")
        page.screenshot(path=out / "console-login.png")
        page.goto(
            login_link(
                base,
                org=creds.org,  # type: ignore[attr-defined]
                sandbox=creds.sandbox,  # type: ignore[attr-defined]
                api_key=creds.api_key,  # type: ignore[attr-defined]
                access_token=creds.access_token,  # type: ignore[attr-defined]
            )
        )
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/console/offers")
        page.screenshot(path=out / "console-offers.png", full_page=True)
        offer = found[ids["gold_offer"]].instance_id
        page.goto(f"{base}/console/offers/{offer}")
        page.wait_for_timeout(500)  # the sandboxed HTML previews paint after load
        page.screenshot(path=out / "console-offer-edit.png", full_page=True)
        rule = found[ids["rule"]].instance_id
        page.goto(f"{base}/console/rules/{rule}")
        area = page.get_by_label("Condition (PQL)")
        area.fill('loyalty.tier = "gold" and age >')
        page.wait_for_selector(".pql-status.bad")
        page.locator("#pql-profile").fill('{"loyalty": {"tier": "gold"}}')
        page.screenshot(path=out / "console-rule-editor.png", full_page=True)
        page.goto(f"{base}/console/simulate")
        page.get_by_label("Decision").select_option(value=ids["decision"])
        page.get_by_label("Placements").select_option(value=ids["placement"])
        page.get_by_label("Profile (JSON)").fill('{"loyalty": {"tier": "silver"}}')
        page.get_by_role("button", name="Simulate").click()
        page.wait_for_selector("table.trace")
        page.wait_for_timeout(500)
        page.screenshot(path=out / "console-simulate.png", full_page=True)
        placement = found[ids["placement"]].instance_id
        page.goto(f"{base}/console/placements/{placement}")
        page.get_by_label("Name").fill("Homepage hero banner")
        page.get_by_role("button", name="Save").click()
        page.goto(f"{base}/console/placements/{placement}/history")
        page.screenshot(path=out / "console-history.png", full_page=True)
        page.goto(f"{base}/console/reports")
        page.screenshot(path=out / "console-reports.png", full_page=True)
        page.locator("section.strategy").first.screenshot(path=out / "console-strategy.png")
        browser.close()


if __name__ == "__main__":
    main()

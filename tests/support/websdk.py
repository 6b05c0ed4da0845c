"""Adobe's Web SDK (``@adobe/alloy``) in Debian's chromium, driven by Playwright.

The SDK comes from the npm registry at test time (``npm pack``: the published tarball,
nothing vendored) and is served to a page on ``https://www.shop.test``. The SDK always
calls ``https://{edgeDomain}``: Playwright's request routing hands those requests to the
real ``nextoffer serve`` process over HTTP — body, headers and the cookies the browser
attaches, unchanged — and gives the browser nextoffer's response, headers included, so
the browser itself applies CORS and the SDK its cookies. Without npm, the registry or
chromium the tests are skipped, saying why; under ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

#: The Web SDK release the tests run (override with ``NEXTOFFER_ALLOY_VERSION``).
ALLOY_VERSION = os.environ.get("NEXTOFFER_ALLOY_VERSION", "2.33.1")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_ORIGIN = "https://www.shop.test"
#: The SDK's loader snippet (Adobe's documented base code, in spirit): queue calls to
#: ``alloy`` until the library has loaded.
BASE_CODE = """
window.__alloyNS = ["alloy"];
window.alloy = function () {
  var args = arguments;
  return new Promise(function (resolve, reject) { window.alloy.q.push([resolve, reject, args]); });
};
window.alloy.q = [];
"""


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {reason}", pytrace=False)
    pytest.skip(reason)


def fetch_alloy(into: Path) -> Path:
    """``dist/alloy.js`` of the pinned release, fetched with ``npm pack``."""
    npm = shutil.which("npm")
    if npm is None:
        missing("npm is not installed (Debian: apt-get install npm)")
    assert npm is not None
    into.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "pack", f"@adobe/alloy@{ALLOY_VERSION}", "--pack-destination", str(into), "--silent"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=into,
    )
    tarballs = sorted(into.glob("adobe-alloy-*.tgz"))
    if result.returncode != 0 or not tarballs:
        missing(f"npm pack @adobe/alloy@{ALLOY_VERSION} failed: {result.stderr.strip()[-500:]}")
    with tarfile.open(tarballs[-1]) as archive:
        member = archive.extractfile("package/dist/alloy.js")
        assert member is not None
        target = into / "alloy.js"
        target.write_bytes(member.read())
    return target


def page_html(*, datastream: str, org: str, edge_domain: str, scope: str) -> str:
    """A shop page: configures the SDK, asks for the scope, renders the first item, sends
    the display event and, on a click of the offer, the interact event — each built by
    the SDK from the proposition it returned (``id``, ``scope``, ``scopeDetails``)."""
    config = {
        "datastreamId": datastream,
        "orgId": org,
        "edgeDomain": edge_domain,
        "debugEnabled": True,
    }
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>shop</title>
<script>{BASE_CODE}</script>
<script src="/alloy.js" async></script>
</head><body>
<div id="offer" data-state="waiting"></div>
<script>
const scope = {json.dumps(scope)};
function meta(p) {{ return {{ id: p.id, scope: p.scope, scopeDetails: p.scopeDetails }}; }}
window.done = (async () => {{
  await alloy("configure", {json.dumps(config)});
  const result = await alloy("sendEvent", {{ personalization: {{ decisionScopes: [scope] }} }});
  const proposition = (result.propositions || []).find((p) => p.scope === scope);
  const box = document.getElementById("offer");
  if (!proposition) {{
    box.dataset.state = "none";
    return null;
  }}
  const item = proposition.items[0];
  box.innerHTML = item.data.content;
  box.dataset.offer = item.id;
  await alloy("sendEvent", {{
    xdm: {{
      eventType: "decisioning.propositionDisplay",
      _experience: {{ decisioning: {{
        propositions: [meta(proposition)], propositionEventType: {{ display: 1 }} }} }},
    }},
  }});
  box.addEventListener("click", async () => {{
    await alloy("sendEvent", {{
      xdm: {{
        eventType: "decisioning.propositionInteract",
        _experience: {{ decisioning: {{
          propositions: [meta(proposition)], propositionEventType: {{ interact: 1 }} }} }},
      }},
    }});
    box.dataset.state = "clicked";
  }});
  const identity = await alloy("getIdentity", {{ namespaces: ["ECID"] }});
  box.dataset.ecid = identity.identity.ECID;
  box.dataset.state = "shown";
  return item.id;
}})();
</script></body></html>"""


class EdgeForwarder:
    """Hands the browser's requests to ``https://{edge host}`` to the nextoffer server."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = httpx.Client(timeout=30)
        #: What the SDK sent: (path, headers, body) of each request.
        self.seen: list[tuple[str, dict[str, str], str]] = []

    def __call__(self, route: Any) -> None:
        request = route.request
        url = urlsplit(request.url)
        headers = {
            k: v
            for k, v in request.all_headers().items()
            if not k.startswith(":") and k not in ("host", "content-length", "connection")
        }
        body = request.post_data or ""
        self.seen.append((url.path, headers, body))
        response = self.http.request(
            request.method,
            f"{self.base}{url.path}" + (f"?{url.query}" if url.query else ""),
            headers=headers,
            content=body.encode(),
        )
        route.fulfill(
            status=response.status_code,
            headers={k: v for k, v in response.headers.items() if k != "content-length"},
            body=response.content,
        )

    def close(self) -> None:
        self.http.close()

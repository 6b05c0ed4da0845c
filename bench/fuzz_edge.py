"""Hypothesis-generated Edge Network requests against a live ``nextoffer serve``: the bodies
``openapi.json`` leaves loose (``events`` of any object), built from the fields the Edge
reads, with any JSON value in any place, sent to a real datastream.

Every answer must be a status the document lists for ``/ee/...`` (200, 204 for collect,
400, 403, 404, 413, 415, 429) with a JSON body (problem+json for the errors), and the
server log must hold no traceback. Prints the figures as JSON; exits non-zero on a
failure.

    python bench/fuzz_edge.py --count 10000 --seed 1
    NEXTOFFER_REDIS=redis://… python bench/fuzz_edge.py --db-url postgresql://…/empty_db
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.live import LiveServer, make_tenant

DOCUMENTED = {200, 204, 400, 403, 404, 413, 415, 429}

# Values the JSON reader takes: other refusals (NUL, NaN, integers past 64 bits) come before the
# Edge reads the body and have their own tests.
text = st.text(st.characters(blacklist_characters="\x00"), max_size=20)
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
any_json = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field as the Edge expects it, most of the time; any JSON value otherwise."""
    return st.integers(0, 7).flatmap(lambda roll: any_json if roll == 0 else strategy)


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def make_strategies(ids: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    good_scope = b64({"activityId": ids["decision"], "placementId": ids["placement"]})
    scope = st.one_of(
        st.just(good_scope),
        st.just(b64({"xdm:activityId": ids["decision"], "xdm:placementId": ids["placement"]})),
        any_json.map(b64),
        st.dictionaries(
            st.sampled_from(["activityId", "placementId", "itemCount", "xdm:activityId"]),
            any_json,
        ).map(b64),
        st.text(max_size=30),
        st.sampled_from(["__view__", "#x", "web://shop.test/", ""]),
        any_json,
    )
    identity = st.fixed_dictionaries(
        {"id": maybe(st.text(max_size=20))},
        optional={"primary": any_json, "authenticatedState": any_json},
    )
    identity_map = st.dictionaries(
        st.sampled_from(["ECID", "Email", "CRMID", "", "x"]) | st.text(max_size=6),
        maybe(st.lists(maybe(identity), max_size=3)),
        max_size=3,
    )
    proposition = st.fixed_dictionaries(
        {},
        optional={
            "id": any_json,
            "scope": maybe(st.just(good_scope)),
            "items": maybe(st.lists(maybe(st.fixed_dictionaries({"id": any_json})), max_size=2)),
            "scopeDetails": any_json,
        },
    )
    xdm = st.fixed_dictionaries(
        {},
        optional={
            "eventType": maybe(
                st.sampled_from(
                    [
                        "decisioning.propositionDisplay",
                        "decisioning.propositionInteract",
                        "decisioning.propositionFetch",
                        "web.webpagedetails.pageViews",
                    ]
                )
            ),
            "timestamp": maybe(
                st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-40T99:00:00Z", "now", ""])
            ),
            "identityMap": maybe(identity_map),
            "_id": any_json,
            "_experience": maybe(
                st.fixed_dictionaries(
                    {
                        "decisioning": maybe(
                            st.fixed_dictionaries(
                                {"propositions": maybe(st.lists(proposition, max_size=3))}
                            )
                        )
                    }
                )
            ),
            "web": any_json,
        },
    )
    query = st.fixed_dictionaries(
        {},
        optional={
            "personalization": maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "decisionScopes": maybe(st.lists(scope, max_size=4)),
                        "surfaces": maybe(st.lists(st.text(max_size=20), max_size=2)),
                        "schemas": any_json,
                    },
                )
            ),
            "identity": any_json,
        },
    )
    event = st.fixed_dictionaries(
        {},
        optional={
            "xdm": maybe(xdm),
            "query": maybe(query),
            "data": maybe(st.dictionaries(text, any_json, max_size=3)),
        },
    )
    consent_value = st.fixed_dictionaries(
        {},
        optional={
            "general": maybe(st.sampled_from(["in", "out", "pending"])),
            "collect": maybe(st.fixed_dictionaries({"val": maybe(st.sampled_from(["y", "n"]))})),
        },
    )
    consent = st.fixed_dictionaries(
        {
            "standard": maybe(st.sampled_from(["Adobe", "IAB TCF"])),
            "version": maybe(st.sampled_from(["1.0", "2.0"])),
            "value": st.one_of(consent_value, st.text(max_size=40), any_json),
        },
        optional={"gdprApplies": any_json},
    )
    meta = st.fixed_dictionaries(
        {},
        optional={
            "state": maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "entries": maybe(
                            st.lists(
                                maybe(
                                    st.fixed_dictionaries(
                                        {"key": maybe(st.text(max_size=40)), "value": any_json}
                                    )
                                ),
                                max_size=3,
                            )
                        ),
                        "domain": any_json,
                        "cookiesEnabled": any_json,
                    },
                )
            ),
            "konductorConfig": any_json,
        },
    )
    return st.fixed_dictionaries(
        {"events": maybe(st.lists(maybe(event), min_size=1, max_size=3))},
        optional={
            "event": maybe(event),
            "query": maybe(query),
            "meta": maybe(meta),
            "consent": maybe(st.lists(maybe(consent), max_size=2)),
            "identityMap": maybe(identity_map),
            "xdm": maybe(xdm),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="requests to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db-url", help="an empty database (default: SQLite in the workdir)")
    parser.add_argument("--keep", type=Path, help="a directory to keep the server log in")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="nextoffer-fuzz-edge-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = args.db_url or f"sqlite:///{workdir / 'fuzz.db'}"
    creds, ids = make_tenant(db_url, "EDGE@AdobeOrg", "prod", seed=True)
    server = LiveServer(db_url, workdir=workdir).start()
    statuses: dict[str, int] = {}
    failures: list[str] = []
    reasons: dict[str, int] = {}
    rng = random.Random(args.seed)
    started = time.monotonic()
    paths = [
        "/ee/v1/interact",
        "/ee/v2/interact",
        "/ee/v1/collect",
        "/ee/v2/collect",
        "/ee/or2/v1/interact",
        "/ee/irl1/v2/interact",
    ]
    try:
        client = httpx.Client(base_url=server.base, timeout=30)

        @settings(
            max_examples=args.count,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            body=make_strategies(ids),
            cookie=st.one_of(
                st.none(),
                # Printable ASCII: anything else is refused by the HTTP parser, not the app.
                st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60),
            ),
        )
        def one(body: dict[str, Any], cookie: str | None) -> None:
            path = rng.choice(paths)
            config = rng.choice([creds.datastream_id] * 8 + ["nope", ""])
            content_type = rng.choice(
                ["application/json"] * 6 + ["text/plain", "text/plain;charset=UTF-8"]
            )
            headers = {"Content-Type": content_type}
            if cookie is not None:
                name = f"kndctr_{creds.org.replace('@', '_')}_identity"
                headers["Cookie"] = f"{name}={cookie}"
            if rng.random() < 0.1:
                headers["Origin"] = rng.choice(["https://www.shop.test", "null", "x"])
            try:
                response = client.post(
                    path,
                    params={"configId": config, "requestId": "fuzz"},
                    content=json.dumps(body),
                    headers=headers,
                )
            except httpx.HTTPError as exc:
                failures.append(f"{path} {exc!r} {json.dumps(body)[:500]}")
                return
            status = response.status_code
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            problem = None
            if status >= 400:
                try:
                    title = str(response.json().get("detail"))[:70]
                except (ValueError, AttributeError):
                    title = "?"
                reasons[f"{status} {title}"] = reasons.get(f"{status} {title}", 0) + 1
            if status not in DOCUMENTED:
                problem = "undocumented status"
            elif status == 204:
                problem = "body on 204" if response.content else None
            else:
                try:
                    response.json()
                except ValueError:
                    problem = "body is not JSON"
                if status >= 400 and not response.headers.get("content-type", "").startswith(
                    "application/problem+json"
                ):
                    problem = f"content-type {response.headers.get('content-type')}"
            if problem:
                failures.append(
                    f"{problem}: {status} {path} {json.dumps(body)[:800]} -> {response.text[:300]}"
                )

        hseed(args.seed)(one)()
        client.close()
    finally:
        server.stop()
    log = "\n".join(p.read_text(errors="replace") for p in workdir.glob("server-*.log"))
    tracebacks = log.count("Traceback")
    summary = {
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "refusals": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:12]),
        "failures": len(failures),
        "failure_samples": failures[:10],
        "tracebacks_in_server_log": tracebacks,
        "seconds": round(time.monotonic() - started, 1),
        "seed": args.seed,
    }
    print(json.dumps(summary, indent=1))
    sys.exit(1 if failures or tracebacks else 0)


if __name__ == "__main__":
    main()

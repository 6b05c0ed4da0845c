"""Decisions over HTTP next to the server stack's ceiling, 1 and 2 workers, 1/10/50 connections.

    .venv/bin/python bench/http_decisions.py [--seconds 5] [--repeats 3] \
        [--plot docs/img/http-decisions.png]
    .venv/bin/python bench/http_decisions.py --plot-from rows.json --plot out.png  # redraw
    .venv/bin/python bench/http_decisions.py --observability   # cost of /metrics + JSON access logs
    .venv/bin/python bench/http_decisions.py --compare 'a:NEXTOFFER_X=1;b:NEXTOFFER_X=0'
    .venv/bin/python bench/http_decisions.py --compare \
        'this:;main:PYTHONPATH=MAIN/src,BENCH_SCHEMA=0011_profile_seq'  # an older schema
    .venv/bin/python bench/http_decisions.py --stacks          # uvicorn vs granian (vs h11)
    .venv/bin/python bench/http_decisions.py --stacks --stack-names uvicorn,granian-st
    .venv/bin/python bench/http_decisions.py --server granian  # any mode above under granian
    .venv/bin/python bench/http_decisions.py --dry-run  # any mode above with dry runs
    .venv/bin/python bench/http_decisions.py --exchange [--plot PNG]  # a decision's exchange
    .venv/bin/python bench/http_decisions.py --rsgi [--plot PNG] [--json ROWS]
        # decisions with no framework over granian's RSGI (bench/rsgi_decide.py)

The library: one live decision with one placement over a 100-offer collection; each offer
has its own 5-condition PQL rule and a priority in 0-100; a third carry caps
(``xdm:cappingConstraint`` with a global and a per-profile cap far above what a run
reaches) and 10,000 profiles whose attributes make about half the offers eligible. Every
decision is recorded (not a dry run): it reads the profile and its events, reads the
counters of the capped candidates, reserves the ones it proposes and writes the decision
event — the production path.

Per server (1 worker, 2 workers; both run at once, idle when not driven) and per
connection count, wrk drives for ``--seconds``: ``GET /asgi`` (a plain ASGI callable ahead
of the app: a bare uvicorn ASGI app), ``GET /bare`` (a constant body from a route of the
same app, through its middleware and router — the ceiling), the IO floor
(``io_floor.py``: the same request body, only the profile read and a record of the same
shape, group-committed — what any recorded decision costs before it decides anything),
``POST …/decisions`` (a Lua ``request`` function picks one of the 10,000 identities at
random per request), ``GET`` of one offer and a search. Every repeat runs every row
once, so the machine's other load hits all rows alike; the tables report medians over
repeats. Other load on the machine is printed (load average before and after).

``--exchange`` measures a decision's exchange with nothing behind it: the plain ASGI
callable reads a decision's request and answers as many bytes as a decision does, under a
decision's headers (``POST /asgi/exchange``), beside ``GET /asgi``, the IO floor and
decisions on one 2-worker server, with the server's and wrk's CPU per request.

``--rsgi`` runs two 2-worker servers at once, the usual one and ``rsgi_decide.py`` under
granian's RSGI interface (a bare RSGI app, and decisions with no framework: a bound, what a
Python-hosted decision costs with nothing but the use case between a Rust HTTP server and
the answer), and drives, interleaved at 10 and 50 connections: the bare ASGI app, the bare
route, the bare RSGI app, the app's decisions and the RSGI decisions; each row's ratio to
the bare ASGI app and to the bare route, and its server's CPU per request.

``--stacks`` runs the same app under each server stack of ``httpbench.STACKS`` (uvicorn
with httptools + uvloop, uvicorn with h11 + asyncio, granian's ASGI interface), 2 workers
each, and compares the ceiling and decisions at 10 and 50 connections, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpbench import STACKS, Result, Server, machine, wrk
from scratch import scratch_dir

from nextoffer.ids import utcnow
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
    SchemaRef,
)
from nextoffer.root import NextOffer
from nextoffer.settings import Settings

OM = "https://ns.adobe.com/experience/offer-management/"
HTML = OM + "content-component-html"
DECIDE_TYPE = f'application/vnd.adobe.xdm+json; schema="{OM}decision-request;version=1.0"'
PROFILES = 10_000
CONNECTIONS = (1, 10, 50)
CEILING = "bare endpoint (ceiling)"
#: ``GET /asgi``: a plain ASGI callable ahead of the app (``httpbench.SERVER``).
BARE_ASGI = "bare ASGI app"
FLOOR = "IO floor (profile read + record)"
#: ``POST /asgi/exchange``: the plain ASGI callable, for a decision's request and answer.
EXCHANGE = "bare ASGI app, a decision's exchange"
#: ``--rsgi``: ``GET /rsgi`` and decisions of ``rsgi_decide.py`` under granian's RSGI.
BARE_RSGI = "bare RSGI app (granian)"
RSGI_DECISIONS = "decisions, RSGI with no framework (granian)"
ENDPOINTS = (BARE_ASGI, CEILING, FLOOR, "POST decisions", "GET offer", "search")


def build(db_url: str) -> dict[str, Any]:
    """Bootstrap a tenant, create the library through the service, load the profiles."""
    no = NextOffer.open(Settings(db_url=db_url))
    store = no.store
    creds = no.bootstrap(org="BENCH@AdobeOrg", sandbox="prod")
    principal = creds.principal
    repo = no.repository
    container = creds.container_id

    def make(object_type: Any, body: dict[str, Any]) -> Any:
        return repo.create(principal, container, SchemaRef(object_type, None, ""), body)

    rng = random.Random(7)
    placement = make(
        PLACEMENT,
        {
            "xdm:name": "Banner",
            "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
            "xdm:componentType": HTML,
        },
    ).at_id
    reps = [
        {
            "xdm:placement": placement,
            "xdm:components": [
                {
                    "@type": HTML,
                    "dc:format": "text/html",
                    "dc:language": ["en"],
                    "xdm:content": "<p>offer</p>",
                }
            ],
        }
    ]
    offers = []
    for n in range(100):
        rule = make(
            RULE,
            {
                "xdm:name": f"rule {n}",
                "xdm:condition": {
                    "xdm:type": "PQL",
                    "xdm:format": "pql/text",
                    "xdm:value": (
                        f"age >= {rng.randint(18, 40)} "
                        'and country in ["US", "CA", "GB"] and tier = "gold" '
                        f"and loyaltyPoints > {rng.randint(0, 6000)} and optIn = true"
                    ),
                },
            },
        ).at_id
        body: dict[str, Any] = {
            "xdm:name": f"Offer {n} spring sale",
            "xdm:status": "approved",
            "xdm:representations": reps,
            "xdm:rank": {"xdm:priority": rng.randint(0, 100)},
            "xdm:selectionConstraint": {"xdm:eligibilityRule": rule},
        }
        if n % 3 == 0:
            body["xdm:cappingConstraint"] = {"xdm:globalCap": 10**9, "xdm:profileCap": 10**6}
        offer = make(PERSONALIZED_OFFER, body)
        offers.append(offer)
    fallback = make(
        FALLBACK_OFFER,
        {"xdm:name": "Welcome", "xdm:status": "approved", "xdm:representations": reps},
    ).at_id
    collection = make(
        COLLECTION,
        {
            "xdm:name": "All offers",
            "xdm:filterType": "offers",
            "xdm:ids": [o.at_id for o in offers],
        },
    ).at_id
    decision = make(
        DECISION,
        {
            "xdm:name": "Home",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [
                {"xdm:placements": [placement], "xdm:optionSelection": {"xdm:filter": collection}}
            ],
        },
    ).at_id
    stamp = utcnow().isoformat()
    with store.session(write=True) as session:
        runtime = session.runtime
        for n in range(PROFILES):
            attributes = {
                "age": rng.randint(16, 70),
                "country": rng.choice(["US", "CA", "GB", "FR"]),
                "tier": rng.choice(["gold", "gold", "silver"]),
                "loyaltyPoints": rng.randint(0, 9000),
                "optIn": rng.random() < 0.9,
            }
            profile_id = f"bench-profile-{n}"
            runtime.insert_profile(creds.org, creds.sandbox, profile_id, attributes, now=stamp)
            runtime.add_identities(
                creds.org, creds.sandbox, profile_id, [("Email", f"user{n}@example.com")]
            )
    no.close()
    headers = {
        "Authorization": f"Bearer {creds.access_token}",
        "x-api-key": creds.api_key,
        "x-gw-ims-org-id": creds.org,
        "x-sandbox-name": creds.sandbox,
    }
    request = {
        "xdm:propositionRequests": [
            {"xdm:placementId": placement, "xdm:activityId": decision, "xdm:itemCount": 3}
        ],
        "xdm:profiles": [{"xdm:identityMap": {"Email": [{"xdm:id": "user__N__@example.com"}]}}],
        "xdm:responseFormat": {
            "xdm:includeContent": True,
            "xdm:includeMetadata": {"xdm:option": ["name"]},
        },
    }
    return {
        "container": container,
        "headers": headers,
        "request": json.dumps(request),
        "offer": offers[0].instance_id,
        "schema": f"{OM}personalized-offer;version=0.5",
    }


#: Each request names one of the profiles, drawn at random (each wrk thread seeds its own).
VARY_IDENTITY = f"""
local template = wrk.body
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
request = function()
  local body = template:gsub("__N__", tostring(math.random(0, {PROFILES - 1})))
  return wrk.format(nil, nil, nil, body)
end
"""


#: Every server of the run: a row waits until all of them are idle (see :func:`drain`).
SERVERS: list[Server] = []


def drain() -> None:
    """Wait until requests still queued from earlier rows are answered, on every server of
    the run (a slow endpoint leaves up to ``connections`` requests behind when wrk stops)."""
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=60) as client:
        for server in SERVERS:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                client.get(server.base + server.bare_path)
                if time.perf_counter() - start < 0.01:
                    break
                time.sleep(0.2)


def run_row(
    server: Server, lib: dict[str, Any], endpoint: str, connections: int, seconds: int
) -> Result:
    drain()
    kw: dict[str, Any] = {"seconds": seconds, "connections": connections}
    base = f"{server.base}/data/core"
    headers = lib["headers"]
    if endpoint == CEILING:
        return wrk(endpoint, server.base + "/bare", **kw)
    if endpoint == BARE_ASGI:
        return wrk(endpoint, server.base + "/asgi", **kw)
    if endpoint == BARE_RSGI:
        return wrk(endpoint, server.base + "/rsgi", **kw)
    if endpoint in ("POST decisions", RSGI_DECISIONS, FLOOR, EXCHANGE):
        decisions = f"{base}/ode/{lib['container']}/decisions"
        url = {
            "POST decisions": decisions,
            RSGI_DECISIONS: decisions,
            FLOOR: f"{server.base}/floor/{lib['container']}",
            EXCHANGE: f"{server.base}/asgi/exchange?bytes={lib.get('answer_bytes', 0)}",
        }[endpoint]
        return wrk(
            endpoint,
            url,
            method="POST",
            headers={**headers, "Content-Type": DECIDE_TYPE},
            body=lib["request"],
            lua=VARY_IDENTITY,
            **kw,
        )
    if endpoint == "GET offer":
        return wrk(
            endpoint,
            f"{base}/xcore/{lib['container']}/instances/{lib['offer']}",
            headers=headers,
            **kw,
        )
    schema = quote(lib["schema"], safe="")
    url = f"{base}/xcore/{lib['container']}/queries/core/search?schema={schema}&q=spring&limit=10"
    return wrk(endpoint, url, headers=headers, **kw)


def median_result(results: list[Result]) -> dict[str, float]:
    return {
        "rps": statistics.median(r.requests_per_s for r in results),
        "p50": statistics.median(r.p50_ms for r in results),
        "p99": statistics.median(r.p99_ms for r in results),
        "p999": statistics.median(r.p999_ms for r in results),
        "errors": sum(r.errors for r in results),
        "spread": (max(r.requests_per_s for r in results) - min(r.requests_per_s for r in results))
        / max(statistics.median(r.requests_per_s for r in results), 1e-9),
    }


def main_table(args: argparse.Namespace, db_url: str, lib: dict[str, Any]) -> None:
    servers: dict[int, Server] = {}
    raw: dict[tuple[int, int, str], list[Result]] = {}
    try:
        for workers in (1, 2):  # inside the try: a server that fails to start stops the others
            servers[workers] = Server(db_url, workers=workers, stack=args.server)
        SERVERS[:] = servers.values()
        for server in servers.values():  # warm every worker: snapshot, caches, pools
            run_row(server, lib, "POST decisions", 10, 2)
        for repeat in range(args.repeats):
            for workers, server in servers.items():
                for connections in CONNECTIONS:
                    for endpoint in ENDPOINTS:
                        result = run_row(server, lib, endpoint, connections, args.seconds)
                        raw.setdefault((workers, connections, endpoint), []).append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    rows = {key: median_result(values) for key, values in raw.items()}
    print(
        "\n| workers | connections | endpoint | requests/s | p50 ms | p99 ms | p99.9 ms | errors "
        "| ratio to ceiling | ratio to bare ASGI | spread |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (workers, connections, endpoint), row in rows.items():
        ceiling = rows[(workers, connections, CEILING)]["rps"]
        asgi = rows[(workers, connections, BARE_ASGI)]["rps"]
        print(
            f"| {workers} | {connections} | {endpoint} | {row['rps']:,.0f} | {row['p50']:.2f} "
            f"| {row['p99']:.2f} | {row['p999']:.2f} | {row['errors']} "
            f"| {row['rps'] / ceiling:.2f} | {row['rps'] / asgi:.2f} | {row['spread']:.0%} |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {"workers": w, "connections": c, "endpoint": e, **row}
                    for (w, c, e), row in rows.items()
                ],
                indent=1,
            )
        )
    if args.plot:
        plot(rows, Path(args.plot))


def plot(rows: dict[tuple[int, int, str], dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for column, workers in enumerate((1, 2)):
        for endpoint, style in zip(
            ENDPOINTS, ("k-.", "k--", "k:", "C0-o", "C1-s", "C2-^"), strict=True
        ):
            xs = list(CONNECTIONS)
            top[column].plot(
                xs, [rows[(workers, c, endpoint)]["rps"] for c in xs], style, label=endpoint
            )
            bottom[column].plot(
                xs, [rows[(workers, c, endpoint)]["p99"] for c in xs], style, label=endpoint
            )
        top[column].set_title(f"{workers} worker{'s' if workers > 1 else ''}")
        top[column].set_ylabel("requests/s")
        bottom[column].set_ylabel("p99 latency (ms, log scale)")
        bottom[column].set_yscale("log")
        bottom[column].set_xlabel("connections")
        bottom[column].axhline(15, color="grey", linewidth=0.8, linestyle=":")
        for ax in (top[column], bottom[column]):
            ax.set_xscale("log")
            ax.set_xticks(list(CONNECTIONS), [str(c) for c in CONNECTIONS])
            ax.grid(True, alpha=0.3)
    top[0].legend(fontsize=8)
    fig.suptitle(
        "nextoffer over HTTP (wrk on loopback, same 2-core box), medians of interleaved repeats"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


#: ``--observability``: the same server with /metrics and JSON access logs on, then off.
OBSERVABILITY = {
    "metrics and access log on": {"NEXTOFFER_METRICS": "1", "NEXTOFFER_ACCESS_LOG": "1"},
    "both off": {"NEXTOFFER_METRICS": "0", "NEXTOFFER_ACCESS_LOG": "0"},
}


#: A ``--compare`` variant's setting: its server runs on a copy of the database downgraded
#: to this revision (a tree whose schema is older than this one's refuses the newer).
SCHEMA = "BENCH_SCHEMA"


def on_schema(env: dict[str, str], db_url: str, copy: Path) -> dict[str, str]:
    """The variant's environment; with :data:`SCHEMA`, ``NEXTOFFER_DB`` names a copy of
    the database (the same library, profiles and credentials) at that revision."""
    if SCHEMA not in env:
        return env
    from sqlalchemy.engine import make_url

    from nextoffer.storage import migrations
    from nextoffer.storage.database import open_engine

    env = dict(env)
    revision = env.pop(SCHEMA)
    with sqlite3.connect(make_url(db_url).database or "") as source, sqlite3.connect(copy) as to:
        source.backup(to)
    url = f"sqlite:///{copy}"
    engine = open_engine(url)
    try:
        migrations.downgrade(engine, revision)
    finally:
        engine.dispose()
    return {**env, "NEXTOFFER_DB": url}


def compare(
    args: argparse.Namespace,
    db_url: str,
    lib: dict[str, Any],
    workdir: Path,
    variants: dict[str, dict[str, str]],
) -> None:
    """Decisions, the bare route and the bare ASGI app on one 2-worker server per variant
    (its environment), interleaved; per variant the median over repeats of decisions/s ÷
    the same server's bare (and bare ASGI) requests/s in that repeat, and the first
    variant's decisions/s over the others', per repeat, then the median."""
    servers: dict[str, Server] = {}
    raw: dict[tuple[str, str, int], list[Result]] = {}
    #: The server's CPU µs per request of each row (all its processes; wrk excluded).
    cpu: dict[tuple[str, str, int], list[float]] = {}
    endpoints = (BARE_ASGI, CEILING, "POST decisions")
    try:
        for n, (name, env) in enumerate(variants.items()):
            env = on_schema(env, db_url, workdir / f"bench-{n}.db")
            servers[name] = Server(
                db_url, workers=2, env=env, log=workdir / f"server-{n}.log", stack=args.server
            )
        SERVERS[:] = servers.values()
        for server in servers.values():
            run_row(server, lib, "POST decisions", 10, 2)
        for repeat in range(args.repeats):
            order = list(servers.items())[:: -1 if repeat % 2 else 1]
            for connections in (10, 50):
                for endpoint in endpoints:
                    for name, server in order:
                        before = server.cpu_seconds()
                        result = run_row(server, lib, endpoint, connections, args.seconds)
                        spent = server.cpu_seconds() - before
                        cpu.setdefault((name, endpoint, connections), []).append(
                            spent / max(result.requests, 1) * 1e6
                        )
                        raw.setdefault((name, endpoint, connections), []).append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    first = next(iter(variants))
    print(
        "\n| connections | variant | bare ASGI/s | bare/s | decisions/s | decisions ÷ bare ASGI "
        "| decisions ÷ bare | p50 ms | p99 ms | errors | decisions ÷ the first's "
        "| CPU µs per bare ASGI | CPU µs per bare | CPU µs per decision | bare ÷ decision CPU |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for connections in (10, 50):
        for name in variants:
            decided = raw[(name, "POST decisions", connections)]
            bare = raw[(name, CEILING, connections)]
            asgi = raw[(name, BARE_ASGI, connections)]
            row = median_result(decided)
            to_bare = statistics.median(
                a.requests_per_s / b.requests_per_s for a, b in zip(decided, bare, strict=True)
            )
            to_asgi = statistics.median(
                a.requests_per_s / b.requests_per_s for a, b in zip(decided, asgi, strict=True)
            )
            ratio = statistics.median(
                a.requests_per_s / b.requests_per_s
                for a, b in zip(decided, raw[(first, "POST decisions", connections)], strict=True)
            )
            print(
                f"| {connections} | {name} | {median_result(asgi)['rps']:,.0f} "
                f"| {median_result(bare)['rps']:,.0f} | {row['rps']:,.0f} | {to_asgi:.3f} "
                f"| {to_bare:.3f} | {row['p50']:.2f} | {row['p99']:.2f} "
                f"| {row['errors']} | {ratio:.3f} "
                f"| {statistics.median(cpu[(name, BARE_ASGI, connections)]):.1f} "
                f"| {statistics.median(cpu[(name, CEILING, connections)]):.1f} "
                f"| {statistics.median(cpu[(name, 'POST decisions', connections)]):.1f} "
                f"| {cpu_ratio(cpu, name, connections):.3f} |"
            )
    print(
        "CPU: the server's processes (user + system) during the row ÷ requests, median of"
        " repeats; 'bare ÷ decision CPU' is the median of per-repeat ratios: the rate ratio"
        " a saturated server would reach, less sensitive than requests/s to other load."
    )


def cpu_ratio(cpu: dict[tuple[str, str, int], list[float]], name: str, connections: int) -> float:
    return statistics.median(
        b / d
        for b, d in zip(
            cpu[(name, CEILING, connections)],
            cpu[(name, "POST decisions", connections)],
            strict=True,
        )
    )


def stacks(args: argparse.Namespace, db_url: str, lib: dict[str, Any]) -> None:
    """The ceiling and decisions at 10 and 50 connections on one 2-worker server per stack.

    Rows alternate between the stacks (their order reversed every other repeat); the ratio
    is each stack's requests/s over uvicorn's in the same repeat, then the median."""
    servers: dict[str, Server] = {}
    raw: dict[tuple[int, str, str], list[Result]] = {}
    #: The server's CPU µs per request of each row (all its processes; wrk excluded).
    cpu: dict[tuple[int, str, str], list[float]] = {}
    try:
        for name in args.stack_names.split(","):
            servers[name] = Server(db_url, workers=2, stack=name)
        SERVERS[:] = servers.values()
        for server in servers.values():
            run_row(server, lib, "POST decisions", 10, 2)
        for repeat in range(args.repeats):
            order = list(servers.items())[:: -1 if repeat % 2 else 1]
            for connections in (10, 50):
                for endpoint in (CEILING, "POST decisions"):
                    for name, server in order:
                        before = server.cpu_seconds()
                        result = run_row(server, lib, endpoint, connections, args.seconds)
                        spent = server.cpu_seconds() - before
                        cpu.setdefault((connections, endpoint, name), []).append(
                            spent / max(result.requests, 1) * 1e6
                        )
                        raw.setdefault((connections, endpoint, name), []).append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    print(
        "\n| connections | endpoint | stack | requests/s | p50 ms | p99 ms | errors | spread "
        "| ratio to uvicorn | server CPU µs per request | CPU ÷ uvicorn's |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for connections, endpoint, name in raw:
        row = median_result(raw[(connections, endpoint, name)])
        base = raw[(connections, endpoint, "uvicorn")]
        ratio = statistics.median(
            a.requests_per_s / b.requests_per_s
            for a, b in zip(raw[(connections, endpoint, name)], base, strict=True)
        )
        cpu_to_base = statistics.median(
            a / b
            for a, b in zip(
                cpu[(connections, endpoint, name)],
                cpu[(connections, endpoint, "uvicorn")],
                strict=True,
            )
        )
        print(
            f"| {connections} | {endpoint} | {name} | {row['rps']:,.0f} | {row['p50']:.2f} | "
            f"{row['p99']:.2f} | {row['errors']} | {row['spread']:.0%} | {ratio:.3f} "
            f"| {statistics.median(cpu[(connections, endpoint, name)]):.1f} "
            f"| {cpu_to_base:.3f} |"
        )


def children_cpu_seconds() -> float:
    """CPU time (user + system) of this process's finished children: the wrk runs so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def answer_bytes(server: Server, lib: dict[str, Any]) -> int:
    """The length of one decision's answer on ``server`` (every profile's is about the same:
    three options with their content)."""
    body = lib["request"].replace("__N__", "0")
    headers = {**lib["headers"], "Content-Type": DECIDE_TYPE}
    url = f"{server.base}/data/core/ode/{lib['container']}/decisions"
    response = httpx.post(url, content=body, headers=headers, timeout=30)
    response.raise_for_status()
    return len(response.content)


def to_bare_asgi(
    raw: dict[tuple[str, int], list[Result]],
    endpoint: str,
    connections: int,
    reference: str = BARE_ASGI,
) -> float:
    """The endpoint's requests/s ÷ the bare ASGI app's (or ``reference``'s), per repeat,
    then the median."""
    pairs = zip(raw[(endpoint, connections)], raw[(reference, connections)], strict=True)
    return float(statistics.median(a.requests_per_s / b.requests_per_s for a, b in pairs))


def exchange(args: argparse.Namespace, db_url: str, lib: dict[str, Any]) -> None:
    """What a decision's exchange costs the server before any of nextoffer runs.

    One 2-worker server; rows interleaved at 10 and 50 connections: the bare ASGI app, the
    same callable for a decision's exchange (the decision's request and headers, read to the
    end; an answer as long as a decision's, with its headers), the IO floor and decisions.
    Each row's requests/s ÷ the bare ASGI app's in the same repeat, then the median; the
    server's CPU per request likewise, and wrk's (it shares the machine's cores)."""
    server = Server(db_url, workers=2, stack=args.server)
    SERVERS[:] = [server]
    endpoints = (BARE_ASGI, EXCHANGE, FLOOR, "POST decisions")
    raw: dict[tuple[str, int], list[Result]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    #: wrk's CPU per request: the run's finished children are its wrk processes.
    load: dict[tuple[str, int], list[float]] = {}
    try:
        run_row(server, lib, "POST decisions", 10, 2)
        lib = {**lib, "answer_bytes": answer_bytes(server, lib)}
        print(f"a decision's answer: {lib['answer_bytes']:,} bytes", flush=True)
        for repeat in range(args.repeats):
            for connections in (10, 50):
                for endpoint in endpoints:
                    before, wrk_before = server.cpu_seconds(), children_cpu_seconds()
                    result = run_row(server, lib, endpoint, connections, args.seconds)
                    spent = server.cpu_seconds() - before
                    requests = max(result.requests, 1)
                    cpu.setdefault((endpoint, connections), []).append(spent / requests * 1e6)
                    load.setdefault((endpoint, connections), []).append(
                        (children_cpu_seconds() - wrk_before) / requests * 1e6
                    )
                    raw.setdefault((endpoint, connections), []).append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        server.stop()
    print(
        "\n| connections | endpoint | requests/s | ÷ bare ASGI app | p50 ms | p99 ms | errors "
        "| server CPU µs per request | ÷ bare ASGI app's CPU | wrk CPU µs per request |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for connections in (10, 50):
        asgi_cpu = cpu[(BARE_ASGI, connections)]
        for endpoint in endpoints:
            row = median_result(raw[(endpoint, connections)])
            to_asgi = to_bare_asgi(raw, endpoint, connections)
            cpu_ratio = statistics.median(
                a / b for a, b in zip(cpu[(endpoint, connections)], asgi_cpu, strict=True)
            )
            print(
                f"| {connections} | {endpoint} | {row['rps']:,.0f} | {to_asgi:.3f} "
                f"| {row['p50']:.2f} | {row['p99']:.2f} | {row['errors']} "
                f"| {statistics.median(cpu[(endpoint, connections)]):.1f} | {cpu_ratio:.2f} "
                f"| {statistics.median(load[(endpoint, connections)]):.1f} |"
            )
    print(
        "Medians of repeats; the ratios are medians of per-repeat ratios. Server CPU: its"
        " processes (user + system) during the row ÷ requests; wrk CPU: the row's wrk"
        " process (getrusage of finished children) ÷ requests."
    )
    if args.plot:
        plot_exchange(endpoints, raw, cpu, load, Path(args.plot))


def plot_exchange(
    endpoints: tuple[str, ...],
    raw: dict[tuple[str, int], list[Result]],
    cpu: dict[tuple[str, int], list[float]],
    load: dict[tuple[str, int], list[float]],
    path: Path,
) -> None:
    """``--exchange --plot``: each endpoint's rate ÷ the bare ASGI app's, and the CPU of
    one request on the server and in wrk, at 10 and 50 connections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, costs) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.38
    xs = range(len(endpoints))
    for n, connections in enumerate((10, 50)):
        shift = [x + (n - 0.5) * width for x in xs]
        rates.bar(
            shift,
            [to_bare_asgi(raw, e, connections) for e in endpoints],
            width,
            color=f"C{n}",
            label=f"{connections} connections",
        )
        server = [statistics.median(cpu[(e, connections)]) for e in endpoints]
        costs.bar(shift, server, width, color=f"C{n}", label=f"server, {connections} connections")
        costs.bar(
            shift,
            [statistics.median(load[(e, connections)]) for e in endpoints],
            width,
            bottom=server,
            color=f"C{n}",
            alpha=0.35,
            hatch="//",
            label=f"wrk, {connections} connections",
        )
    rates.axhline(0.30, color="grey", linewidth=0.8, linestyle=":")
    rates.set_ylabel("requests/s ÷ the bare ASGI app's (same repeat)")
    costs.set_ylabel("CPU µs per request")
    labels = [e.replace(", ", ",\n").replace(" (", "\n(") for e in endpoints]
    for ax in (rates, costs):
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("A decision's exchange, bare: 2 workers, wrk on the same 2-core box")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


#: ``--rsgi``'s rows, in the order each repeat runs them, and which server answers each.
RSGI_ROWS = (
    (BARE_ASGI, "app"),
    (CEILING, "app"),
    (BARE_RSGI, "rsgi"),
    ("POST decisions", "app"),
    (RSGI_DECISIONS, "rsgi"),
)


def rsgi(args: argparse.Namespace, db_url: str, lib: dict[str, Any]) -> None:
    """The app's decisions beside decisions with no framework over granian's RSGI.

    Two 2-worker servers at once: httpbench's (the bare ASGI app, the bare route and the
    app's decisions, under ``--server``: uvicorn unless told) and ``rsgi_decide.py`` under
    granian's RSGI interface (its bare app and its decisions: the fastest a Python-hosted
    decision gets, see that module). Rows interleaved at 10 and 50 connections; each row's
    requests/s ÷ the bare ASGI app's and ÷ the bare route's in the same repeat, then the
    median; the CPU per request of the row's server likewise (the other one idles)."""
    servers: dict[str, Server] = {}
    raw: dict[tuple[str, int], list[Result]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        servers["app"] = Server(db_url, workers=2, stack=args.server)
        servers["rsgi"] = Server(db_url, workers=2, stack="granian-rsgi")
        SERVERS[:] = servers.values()
        sizes = {name: answer_bytes(server, lib) for name, server in servers.items()}
        print(
            f"a decision's answer: {sizes['app']:,} bytes from the app, "
            f"{sizes['rsgi']:,} from the RSGI route",
            flush=True,
        )
        run_row(servers["app"], lib, "POST decisions", 10, 2)  # warm every worker
        run_row(servers["rsgi"], lib, RSGI_DECISIONS, 10, 2)
        for repeat in range(args.repeats):
            for connections in (10, 50):
                for endpoint, name in RSGI_ROWS:
                    server = servers[name]
                    before = server.cpu_seconds()
                    result = run_row(server, lib, endpoint, connections, args.seconds)
                    spent = server.cpu_seconds() - before
                    cpu.setdefault((endpoint, connections), []).append(
                        spent / max(result.requests, 1) * 1e6
                    )
                    raw.setdefault((endpoint, connections), []).append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        for server in servers.values():
            server.stop()
    stack_of = {"app": args.server, "rsgi": "granian-rsgi"}
    rows = []
    for connections in (10, 50):
        asgi_cpu = cpu[(BARE_ASGI, connections)]
        for endpoint, name in RSGI_ROWS:
            rows.append(
                {
                    "connections": connections,
                    "endpoint": endpoint,
                    "stack": stack_of[name],
                    **median_result(raw[(endpoint, connections)]),
                    "to_bare_asgi": to_bare_asgi(raw, endpoint, connections),
                    "to_bare": to_bare_asgi(raw, endpoint, connections, CEILING),
                    "cpu_us": statistics.median(cpu[(endpoint, connections)]),
                    "cpu_to_bare_asgi": statistics.median(
                        a / b for a, b in zip(cpu[(endpoint, connections)], asgi_cpu, strict=True)
                    ),
                }
            )
    print(
        "\n| connections | endpoint | stack | requests/s | ÷ bare ASGI app | ÷ bare route "
        "| p50 ms | p99 ms | errors | server CPU µs per request | ÷ bare ASGI app's CPU |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['connections']} | {row['endpoint']} | {row['stack']} | {row['rps']:,.0f} "
            f"| {row['to_bare_asgi']:.3f} | {row['to_bare']:.3f} | {row['p50']:.2f} "
            f"| {row['p99']:.2f} | {row['errors']} | {row['cpu_us']:.1f} "
            f"| {row['cpu_to_bare_asgi']:.2f} |"
        )
    print(
        "Medians of repeats; the ratios are medians of per-repeat ratios. Server CPU: the"
        " row's server's processes (user + system) during the row ÷ requests. Errors:"
        " non-2xx answers and socket errors, summed over repeats."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.plot:
        plot_rsgi(rows, Path(args.plot))


def plot_rsgi(rows: list[dict[str, Any]], path: Path) -> None:
    """``--rsgi --plot``: each row's requests/s ÷ the bare ASGI app's, at 10 and 50
    connections, with issue 16's 0.30."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = [endpoint for endpoint, _ in RSGI_ROWS]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.38
    xs = range(len(endpoints))
    for n, connections in enumerate((10, 50)):
        ratio = {r["endpoint"]: r["to_bare_asgi"] for r in rows if r["connections"] == connections}
        ax.bar(
            [x + (n - 0.5) * width for x in xs],
            [ratio[e] for e in endpoints],
            width,
            color=f"C{n}",
            label=f"{connections} connections",
        )
    ax.axhline(0.30, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylabel("requests/s ÷ the bare ASGI app's (same repeat)")
    stack = {r["endpoint"]: r["stack"] for r in rows}
    labels = [e if "(" in e else f"{e} ({stack[e]})" for e in endpoints]
    ax.set_xticks(list(xs), [e.replace(" (", "\n(").replace(", ", ",\n") for e in labels])
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Decisions with no framework over RSGI: 2 workers each, wrk on the same box")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def parse_variants(text: str) -> dict[str, dict[str, str]]:
    """``name:KEY=V,KEY=V;name:…`` → {name: environment}."""
    variants = {}
    for part in text.split(";"):
        name, _, assignments = part.partition(":")
        variants[name] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", help="write the matplotlib PNG here")
    parser.add_argument("--json", help="write the median rows here")
    parser.add_argument(
        "--plot-from", metavar="JSON", help="only draw --plot from rows an earlier --json wrote"
    )
    parser.add_argument(
        "--observability", action="store_true", help="measure metrics + access log cost instead"
    )
    parser.add_argument(
        "--compare",
        metavar="NAME:K=V,…;NAME:…",
        help="decisions on one 2-worker server per environment",
    )
    parser.add_argument(
        "--server", choices=list(STACKS), default="uvicorn", help="server stack of the other modes"
    )
    parser.add_argument(
        "--stacks", action="store_true", help="compare the server stacks (2 workers each)"
    )
    parser.add_argument(
        "--stack-names",
        default=",".join(STACKS),
        help="with --stacks: which of httpbench.STACKS, comma-separated (uvicorn first)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="decision requests are dry runs (not recorded)"
    )
    parser.add_argument(
        "--exchange",
        action="store_true",
        help="the bare ASGI app for a decision's exchange beside the floor and decisions",
    )
    parser.add_argument(
        "--rsgi",
        action="store_true",
        help="decisions with no framework over granian's RSGI beside the app's",
    )
    args = parser.parse_args()
    if args.plot_from:
        if not args.plot:
            parser.error("--plot-from needs --plot")
        saved = json.loads(Path(args.plot_from).read_text())
        rows = {(r["workers"], r["connections"], r["endpoint"]): r for r in saved}
        plot(rows, Path(args.plot))
        return
    workdir = scratch_dir("nextoffer-bench-")
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    started = time.monotonic()
    lib = build(db_url)
    if args.dry_run:
        lib["request"] = json.dumps({**json.loads(lib["request"]), "xdm:dryRun": True})
    print(
        f"machine: {machine()}; load average {os.getloadavg()}; library built in "
        f"{time.monotonic() - started:.1f} s; {args.seconds} s per row, {args.repeats} repeats",
        flush=True,
    )
    if args.stacks:
        stacks(args, db_url, lib)
    elif args.exchange:
        exchange(args, db_url, lib)
    elif args.rsgi:
        rsgi(args, db_url, lib)
    elif args.observability or args.compare:
        variants = OBSERVABILITY if args.observability else parse_variants(args.compare)
        compare(args, db_url, lib, workdir, variants)
    else:
        main_table(args, db_url, lib)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

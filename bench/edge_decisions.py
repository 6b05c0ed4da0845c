"""Edge Network decisions next to the Decisioning API's, on the same server, interleaved.

    .venv/bin/python bench/edge_decisions.py [--seconds 5] [--repeats 5] [--workers 2] \
        [--plot docs/img/edge-decisions.png]

The library and the 10,000 profiles of ``http_decisions.py`` (100 offers with 5-condition
rules, a third capped; every decision recorded). The two requests ask the same thing for
the same profile, drawn at random per request by wrk's Lua:

* Decisioning API: ``POST /data/core/ode/{container}/decisions`` with the profile's
  Email identity, ``xdm:itemCount`` 3, content and option names;
* Edge Network: ``POST /ee/v1/interact?configId=…`` (the Server API form) with one event
  whose ``identityMap`` names the same Email identity (primary) and the visitor's ECID, and
  the decision scope of the same activity and placement with ``itemCount`` 3.

Per repeat and connection count, the two rows run back to back (their order alternating)
on one server; the table reports medians over repeats and the median of the per-repeat
ratios Edge / Decisioning API. Beside requests/s, each row reports the server's CPU time
per request (all its processes, from psutil): on a machine shared with other work the
rate moves with everyone else's load, the CPU a request costs much less. The
datastream's rate limit is raised for the run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
from http_decisions import DECIDE_TYPE, PROFILES, SERVERS, build, drain, median_result
from httpbench import Result, Server, machine, wrk
from scratch import scratch_dir

from nextoffer.root import NextOffer
from nextoffer.settings import Settings

API = "Decisioning API"
EDGE = "Edge interact"
CONNECTIONS = (10, 50)

#: Each request names one profile drawn at random: its Email identity and its ECID. Both
#: rows run this same script (the Decisioning API's body has no ``__ECID__``), so wrk,
#: which shares the machine's two cores with the server, does the same work for each.
VARY = f"""
local template = wrk.body
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
request = function()
  local n = math.random(0, {PROFILES - 1})
  local body = template:gsub("__N__", tostring(n)):gsub("__ECID__", string.format("%038d", n))
  return wrk.format(nil, nil, nil, body)
end
"""


def edge_setup(db_url: str, lib: dict[str, Any]) -> dict[str, Any]:
    """The tenant's datastream (its rate raised) and the Edge form of the same request."""
    decide = json.loads(lib["request"])
    wanted = decide["xdm:propositionRequests"][0]
    scope = base64.b64encode(
        json.dumps(
            {
                "activityId": wanted["xdm:activityId"],
                "placementId": wanted["xdm:placementId"],
                "itemCount": wanted["xdm:itemCount"],
            }
        ).encode()
    ).decode()
    with NextOffer.open(Settings(db_url=db_url)) as no:
        creds = no.bootstrap(org="BENCH@AdobeOrg", sandbox="prod")
        no.datastreams.update(creds.principal, creds.datastream_id, {"rateLimit": 1_000_000})
    body = {
        "events": [
            {
                "xdm": {
                    "identityMap": {
                        "Email": [{"id": "user__N__@example.com", "primary": True}],
                        "ECID": [{"id": "__ECID__"}],
                    }
                },
                "query": {"personalization": {"decisionScopes": [scope]}},
            }
        ]
    }
    return {"datastream": creds.datastream_id, "body": json.dumps(body)}


def cpu_seconds(server: Server) -> float:
    """User + system CPU of the server's processes (the supervisor and its workers)."""
    root = psutil.Process(server.process.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def run(
    server: Server, lib: dict[str, Any], edge: dict[str, Any], which: str, c: int, s: int
) -> tuple[Result, float]:
    """The row's result and the server's CPU microseconds per answered request."""
    drain()
    before = cpu_seconds(server)
    result = _wrk(server, lib, edge, which, c, s)
    spent = cpu_seconds(server) - before
    return result, spent * 1e6 / max(result.requests, 1)


def _wrk(
    server: Server, lib: dict[str, Any], edge: dict[str, Any], which: str, c: int, s: int
) -> Result:
    if which == API:
        return wrk(
            which,
            f"{server.base}/data/core/ode/{lib['container']}/decisions",
            method="POST",
            headers={**lib["headers"], "Content-Type": DECIDE_TYPE},
            body=lib["request"],
            lua=VARY,
            seconds=s,
            connections=c,
        )
    return wrk(
        which,
        # As the Web SDK calls it: with a request id.
        f"{server.base}/ee/v1/interact?configId={edge['datastream']}&requestId=bench",
        method="POST",
        headers={"Content-Type": "text/plain; charset=UTF-8"},
        body=edge["body"],
        lua=VARY,
        seconds=s,
        connections=c,
    )


def plot(
    rows: dict[tuple[int, str], dict[str, float]], ratios: dict[int, float], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for offset, which in ((-width / 2, API), (width / 2, EDGE)):
        xs = [i + offset for i in range(len(CONNECTIONS))]
        ax.bar(xs, [rows[(c, which)]["rps"] for c in CONNECTIONS], width, label=which)
    for i, c in enumerate(CONNECTIONS):
        top = max(rows[(c, w)]["rps"] for w in (API, EDGE))
        ax.text(
            i, top * 1.02, f"median per-repeat Edge / API {ratios[c]:.2f}", ha="center", fontsize=9
        )
    ax.set_xticks(range(len(CONNECTIONS)), [f"{c} connections" for c in CONNECTIONS])
    ax.set_ylabel("recorded decisions/s (median of repeats)")
    ax.set_title("Edge interact vs Decisioning API, same server, interleaved")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plot", help="write the matplotlib PNG here")
    args = parser.parse_args()
    workdir = scratch_dir("nextoffer-bench-")
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    started = time.monotonic()
    lib = build(db_url)
    edge = edge_setup(db_url, lib)
    print(
        f"machine: {machine()}; load average {os.getloadavg()}; library built in "
        f"{time.monotonic() - started:.1f} s; {args.seconds} s per row, {args.repeats} repeats, "
        f"{args.workers} workers",
        flush=True,
    )
    raw: dict[tuple[int, str], list[Result]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    server = Server(db_url, workers=args.workers)
    SERVERS[:] = [server]
    try:
        for which in (API, EDGE):  # warm every worker: snapshot, caches, pools
            run(server, lib, edge, which, 10, 2)
        for repeat in range(args.repeats):
            order = (API, EDGE) if repeat % 2 == 0 else (EDGE, API)
            for connections in CONNECTIONS:
                for which in order:
                    result, per_request = run(server, lib, edge, which, connections, args.seconds)
                    raw.setdefault((connections, which), []).append(result)
                    cpu.setdefault((connections, which), []).append(per_request)
            print(
                f"repeat {repeat + 1}/{args.repeats} done; load average {os.getloadavg()}",
                flush=True,
            )
    finally:
        server.stop()
    rows = {key: median_result(values) for key, values in raw.items()}
    ratios = {
        c: statistics.median(
            e.requests_per_s / a.requests_per_s
            for e, a in zip(raw[(c, EDGE)], raw[(c, API)], strict=True)
        )
        for c in CONNECTIONS
    }
    cpu_ratios = {
        c: statistics.median(a / e for e, a in zip(cpu[(c, EDGE)], cpu[(c, API)], strict=True))
        for c in CONNECTIONS
    }
    print(
        "\n| connections | request | requests/s | p50 ms | p99 ms | errors | spread "
        "| server CPU µs/request |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for (connections, which), row in rows.items():
        print(
            f"| {connections} | {which} | {row['rps']:,.0f} | {row['p50']:.2f} "
            f"| {row['p99']:.2f} | {row['errors']} | {row['spread']:.0%} "
            f"| {statistics.median(cpu[(connections, which)]):.0f} |"
        )
    print(
        "\n| connections | Edge / Decisioning API, requests/s | the same from CPU per request "
        "(API µs / Edge µs) |"
    )
    print("|---:|---:|---:|")
    for connections, ratio in ratios.items():
        print(f"| {connections} | {ratio:.3f} | {cpu_ratios[connections]:.3f} |")
    print("(medians of the per-repeat ratios)")
    if args.plot:
        plot(rows, ratios, Path(args.plot))
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Repository throughput over HTTP on SQLite: create, get and patch, next to the bare
endpoint of the same server stack measured in the same run; each also through the dps form
(``/data/core/dps``, a mapping over the same library), so its cost shows as a ratio.

    .venv/bin/python bench/repository.py [--seconds 10] [--connections 10] [--runs 1]
        [--plot docs/img/dps-form.png]

With ``--runs N`` every endpoint is driven N times, the rounds interleaved (each round runs
all endpoints once), and the table shows medians; then the dps form's requests/s as a
ratio of the same operation through xcore, per round and as a median.
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

import httpx
from httpbench import Result, Server, machine, wrk
from scratch import scratch_dir

from nextoffer.service.tenants import Credentials, bootstrap
from nextoffer.storage.store import Store

OM = "https://ns.adobe.com/experience/offer-management/"
#: The documented create Content-Type (two spaces before ``schema=``, as on Adobe's pages).
CREATE = 'application/schema-instance+json; version=1;  schema="{}"'


def one_round(server: Server, creds: Credentials, args: argparse.Namespace) -> list[Result]:
    """Every endpoint once, in a sandbox of its own (creates stay under the guardrail of
    10,000 offers per container)."""
    headers = {
        "Authorization": f"Bearer {creds.access_token}",
        "x-api-key": creds.api_key,
        "x-gw-ims-org-id": creds.org,
        "x-sandbox-name": creds.sandbox,
    }
    base = f"{server.base}/data/core/xcore/{creds.container_id}/instances"
    create_headers = {
        **headers,
        "Content-Type": CREATE.format(f"{OM}offer-placement;version=0.4"),
    }
    placement = {
        "xdm:name": "Bench placement",
        "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
        "xdm:componentType": OM + "content-component-html",
    }
    created = httpx.post(base, json=placement, headers=create_headers).json()
    patch_headers = {
        **headers,
        "Content-Type": "application/vnd.adobe.platform.xcore.patch.hal+json",
    }
    patch_body = json.dumps(
        [{"op": "add", "path": "/_instance/xdm:description", "value": "patched"}]
    )
    # Creates make personalized offers: the container may hold 10,000 (a guardrail).
    offer_headers = {
        **headers,
        "Content-Type": CREATE.format(f"{OM}personalized-offer;version=0.5"),
    }
    offer = {
        "xdm:name": "Bench offer",
        "xdm:status": "approved",
        "xdm:rank": {"xdm:priority": 1},
        "xdm:representations": [
            {
                "xdm:placement": created["@id"],
                "xdm:components": [
                    {
                        "@type": OM + "content-component-html",
                        "dc:format": "text/html",
                        "xdm:content": "<p>hi</p>",
                    }
                ],
            }
        ],
    }
    dps_base = f"{server.base}/data/core/dps"
    dps_headers = {**headers, "Content-Type": "application/json"}
    dps_offer = {
        "name": "Bench offer",
        "status": "approved",
        "rank": {"priority": 1},
        "representations": [
            {
                "placement": created["@id"],
                "components": [{"type": "html", "format": "text/html", "content": "<p>hi</p>"}],
            }
        ],
    }
    dps_patch = json.dumps([{"op": "add", "path": "/description", "value": "patched"}])
    kw = {"seconds": args.seconds, "connections": args.connections}

    return [
        wrk("bare endpoint (ceiling)", server.base + "/bare", **kw),
        wrk("GET instance", f"{base}/{created['instanceId']}", headers=headers, **kw),
        wrk(
            "POST create offer",
            base,
            method="POST",
            headers=offer_headers,
            body=json.dumps(offer),
            **kw,
        ),
        wrk(
            "PATCH instance",
            f"{base}/{created['instanceId']}",
            method="PATCH",
            headers=patch_headers,
            body=patch_body,
            **kw,
        ),
        wrk(
            "GET (dps form)",
            f"{dps_base}/placements/{created['@id']}",
            headers=headers,
            **kw,
        ),
        wrk(
            "POST create offer (dps form)",
            f"{dps_base}/offers?offer-type=personalized",
            method="POST",
            headers=dps_headers,
            body=json.dumps(dps_offer),
            **kw,
        ),
        wrk(
            "PATCH (dps form)",
            f"{dps_base}/placements/{created['@id']}",
            method="PATCH",
            headers=dps_headers,
            body=dps_patch,
            **kw,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--plot", type=Path, help="write a matplotlib PNG of the dps ratios")
    args = parser.parse_args()
    workdir = scratch_dir("nextoffer-bench-")
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    store = Store.open(db_url)
    tenants = [
        bootstrap(store, org="BENCH@AdobeOrg", sandbox=f"round{n}", now=datetime.now(UTC))
        for n in range(args.runs)
    ]
    store.close()
    server = Server(db_url)
    try:
        rounds = [one_round(server, creds, args) for creds in tenants]
    finally:
        server.stop()
    names = [r.name for r in rounds[0]]

    def median(name: str, field: str) -> float:
        values = [float(getattr(r, field)) for rnd in rounds for r in rnd if r.name == name]
        return statistics.median(values)

    ceiling = median(names[0], "requests_per_s")
    print(
        f"machine: {machine()}; {args.connections} connections, {args.seconds} s each, "
        f"1 worker, {args.runs} round(s), medians\n"
    )
    print("| endpoint | requests/s | p50 ms | p99 ms | errors | ratio to bare |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        rps = median(name, "requests_per_s")
        errors = sum(r.errors for rnd in rounds for r in rnd if r.name == name)
        print(
            f"| {name} | {rps:,.0f} | {median(name, 'p50_ms'):.2f} | "
            f"{median(name, 'p99_ms'):.2f} | {errors} | {rps / ceiling:.2f} |"
        )
    pairs = {
        "GET": ("GET instance", "GET (dps form)"),
        "create": ("POST create offer", "POST create offer (dps form)"),
        "PATCH": ("PATCH instance", "PATCH (dps form)"),
    }
    ratios: dict[str, list[float]] = {}
    for op, (xcore, dps) in pairs.items():
        for rnd in rounds:
            by = {r.name: r.requests_per_s for r in rnd}
            ratios.setdefault(op, []).append(by[dps] / by[xcore])
    print("\n| operation | dps / xcore requests/s, per round | median |")
    print("|---|---|---:|")
    for op, values in ratios.items():
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {op} | {listed} | {statistics.median(values):.2f} |")
    if args.plot:
        plot(ratios, args, args.plot)
        print(f"\nplot: {args.plot}")


def plot(ratios: dict[str, list[float]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6))
    ops = list(ratios)
    medians = [statistics.median(ratios[op]) for op in ops]
    axes.bar(ops, medians, color="#4c72b0", label="median")
    for i, op in enumerate(ops):
        axes.plot([i] * len(ratios[op]), ratios[op], "k.", label="rounds" if i == 0 else None)
    axes.axhline(1.0, color="grey", linewidth=1, linestyle="--")
    axes.set_ylabel("dps form / xcore (requests/s)")
    axes.set_title(
        f"The dps form beside xcore, same server ({args.runs} rounds, {args.seconds} s each)"
    )
    axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

"""``nextoffer import library`` throughput on SQLite, against one-by-one creates.

    .venv/bin/python bench/library_import.py [--offers 9000] [--single 300] [--repeats 3] \
        [--jobs N] [--compare OLD_CHECKOUT/src] [--writes]

The file: JSON lines as ``GET`` answers them — one placement, one collection qualifier
(tag), N decision rules (a distinct 5-condition rule each), N personalized offers (each
with its rule and the tag), a fallback, an ``anyTags`` collection and a live decision:
2N + 5 instances, within Adobe's guardrails. Each repeat imports the file into a new
SQLite database with the CLI (a child process: start-up and the whole check included),
once with the checks in the import's own process (``--jobs 1``) and once in ``--jobs``
worker processes (default: the CPUs), each into a folder of its own, so that the
compiled-rule cache beside the database starts cold (a migration from Adobe), and times
it: wall clock, and instances per CPU second of the import and its workers, which a
loaded machine disturbs less. The reference, in the same repeat, creates ``--single``
offers with their rules one at a time through the same repository (``Repository.create``,
one transaction each).
The figures are instances per second, and the ratio to the reference.

``--writes`` times the write stage alone instead: the file's instances stored by
``Session.insert_instances`` in transactions of 1,000 (rows, references, revisions,
search index), in a child process per checkout, as ms of wall and CPU per instance.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from httpbench import machine
from scratch import scratch_dir

from nextoffer.ids import IdFactory, utcnow
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RULE,
    TAG,
    ObjectType,
    SchemaRef,
)
from nextoffer.root import NextOffer
from nextoffer.settings import Settings

OM = "https://ns.adobe.com/experience/offer-management/"
HTML = OM + "content-component-html"
ORG, SANDBOX = "IMPORT@AdobeOrg", "prod"
NEXTOFFER = Path(sys.executable).with_name("nextoffer")


def rule_body(n: int) -> dict[str, Any]:
    source = (
        f'age >= {n % 40} and country in ["US", "CA", "C{n}"] and tier = "gold" '
        f"and loyaltyPoints > {n % 6000} and optIn = true"
    )
    return {
        "xdm:name": f"rule {n}",
        "xdm:condition": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": source},
    }


def offer_body(n: int, placement: str, rule: str, tag: str) -> dict[str, Any]:
    return {
        "xdm:name": f"Offer {n}",
        "xdm:status": "approved",
        "xdm:representations": [
            {
                "xdm:placement": placement,
                "xdm:components": [
                    {"@type": HTML, "dc:format": "text/html", "xdm:content": f"<p>{n}</p>"}
                ],
            }
        ],
        "xdm:rank": {"xdm:priority": n % 100},
        "xdm:selectionConstraint": {"xdm:eligibilityRule": rule},
        "xdm:tags": [tag],
    }


def export(path: Path, offers: int) -> int:
    """Write the library's JSON lines; how many instances."""
    ids = IdFactory(worker=5)
    lines: list[tuple[ObjectType, dict[str, Any]]] = []

    def add(kind: ObjectType, body: dict[str, Any]) -> str:
        at_id = ids.at_id(kind.name, utcnow())
        lines.append((kind, {**body, "@id": at_id}))
        return at_id

    placement = add(
        PLACEMENT,
        {
            "xdm:name": "Banner",
            "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
            "xdm:componentType": HTML,
        },
    )
    tag = add(TAG, {"xdm:name": "all"})
    for n in range(offers):
        rule = add(RULE, rule_body(n))
        add(PERSONALIZED_OFFER, offer_body(n, placement, rule, tag))
    reps = [
        {
            "xdm:placement": placement,
            "xdm:components": [
                {"@type": HTML, "dc:format": "text/html", "xdm:content": "<p>welcome</p>"}
            ],
        }
    ]
    fallback = add(
        FALLBACK_OFFER,
        {"xdm:name": "Welcome", "xdm:status": "approved", "xdm:representations": reps},
    )
    collection = add(COLLECTION, {"xdm:name": "All", "xdm:filterType": "anyTags", "xdm:ids": [tag]})
    add(
        DECISION,
        {
            "xdm:name": "Home",
            "xdm:status": "live",
            "xdm:fallback": fallback,
            "xdm:criteria": [
                {"xdm:placements": [placement], "xdm:optionSelection": {"xdm:filter": collection}}
            ],
        },
    )
    with path.open("wb") as out:
        for kind, body in lines:
            out.write(orjson.dumps({"schemas": [kind.versioned_schema], "_instance": body}) + b"\n")
    return len(lines)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh(folder: Path, name: str) -> tuple[str, NextOffer]:
    db_url = f"sqlite:///{folder / name}"
    no = NextOffer.open(Settings(db_url=db_url))
    no.bootstrap(org=ORG, sandbox=SANDBOX)
    return db_url, no


def one_by_one(folder: Path, count: int, repeat: int) -> float:
    """Instances per second created one at a time (an offer and its rule per step)."""
    (folder / f"single-{repeat}").mkdir()  # a compiled-rule cache of its own: cold
    _, no = fresh(folder / f"single-{repeat}", "single.db")
    with no:
        creds = no.bootstrap(org=ORG, sandbox=SANDBOX)
        principal, container = creds.principal, creds.container_id

        def make(kind: ObjectType, body: dict[str, Any]) -> str:
            return no.repository.create(principal, container, SchemaRef(kind, None, ""), body).at_id

        placement = make(
            PLACEMENT,
            {
                "xdm:name": "Banner",
                "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
                "xdm:componentType": HTML,
            },
        )
        tag = make(TAG, {"xdm:name": "all"})
        began = time.perf_counter()
        for n in range(count):
            rule = make(RULE, rule_body(n))
            make(PERSONALIZED_OFFER, offer_body(n, placement, rule, tag))
        return 2 * count / (time.perf_counter() - began)


def import_once(
    folder: Path, path: Path, total: int, jobs: int | None, src: Path | None = None
) -> tuple[float, float]:
    """(instances/s wall, instances per CPU second) of one import into a new database in
    ``folder`` (its own compiled-rule cache: cold); ``src``: run the checkout whose
    ``src`` folder that is (an older one, without ``--jobs``: ``jobs`` None)."""
    folder.mkdir(parents=True)
    db_url = f"sqlite:///{folder / 'bulk.db'}"
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    # The database is made by the code that imports into it (its own migrations).
    bootstrap = [str(NEXTOFFER), "admin", "bootstrap", "--db", db_url]
    subprocess.run(
        [*bootstrap, "--org", ORG, "--sandbox", SANDBOX],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    command = [str(NEXTOFFER), "import", "library", str(path), "--db", db_url]
    command += ["--org", ORG, "--sandbox", SANDBOX]
    if jobs is not None:
        command += ["--jobs", str(jobs)]
    began = time.perf_counter()
    cpu = _children_cpu()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return total / (time.perf_counter() - began), total / (_children_cpu() - cpu)


def write_stage(path: Path, folder: Path) -> None:
    """The writes alone (child process of :func:`writes_once`): the file's instances
    stored by ``Session.insert_instances`` in transactions of 1,000, as the import does
    once everything is checked; prints the CPU and wall seconds as JSON."""
    from nextoffer.cli.library_import import read_lines
    from nextoffer.ids import epoch_micros, format_datetime
    from nextoffer.repository import references
    from nextoffer.repository.records import Audit, InstanceRecord

    _, no = fresh(folder, "writes.db")
    with no:
        container = no.bootstrap(org=ORG, sandbox=SANDBOX).container_id
        items, _ = read_lines(path)
        now = utcnow()
        stamp, micros = format_datetime(now), epoch_micros(now)
        audit = Audit(stamp, stamp, "bench", "bench", "bench", "bench")
        ids = IdFactory(worker=6)
        records = [
            (
                InstanceRecord(
                    instance_id=ids.instance_id(now),
                    container_id=container,
                    schema_id=kind.schema_id,
                    at_id=body["@id"],
                    etag=1,
                    audit=audit,
                    body=body,
                    created_us=micros,
                    modified_us=micros,
                ),
                [r.at_id for r in references.references(body)],
            )
            for kind, body in items
        ]
        cpu, began = time.process_time(), time.perf_counter()
        for start in range(0, len(records), 1000):
            with no.store.session(write=True) as session:
                session.insert_instances(records[start : start + 1000])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - began
    print(orjson.dumps({"cpu": cpu, "wall": wall}).decode())


def writes_once(folder: Path, path: Path, src: Path | None) -> tuple[float, float]:
    """(wall, CPU) ms per instance of :func:`write_stage` in a child process, on this
    checkout or on ``src``."""
    folder.mkdir(parents=True)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--write-stage", str(path), str(folder)]
    out = subprocess.run(command, check=True, capture_output=True, env=env).stdout
    figures = orjson.loads(out.splitlines()[-1])
    count = sum(1 for line in path.read_bytes().splitlines() if line.strip())
    return figures["wall"] / count * 1e3, figures["cpu"] / count * 1e3


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--write-stage":
        write_stage(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--offers", type=int, default=9000)
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--compare", type=Path, help="an older checkout's src/: its import in every repeat too"
    )
    parser.add_argument(
        "--writes",
        action="store_true",
        help="only the write stage (Session.insert_instances), here and in --compare",
    )
    args = parser.parse_args()
    folder = scratch_dir("nextoffer-import-")
    path = folder / "library.jsonl"
    total = export(path, args.offers)
    if args.writes:
        stages: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        load = [os.getloadavg()[0]]
        for repeat in range(args.repeats):
            if args.compare is not None:
                stages["before"].append(writes_once(folder / f"wb-{repeat}", path, args.compare))
            stages["after"].append(writes_once(folder / f"wa-{repeat}", path, None))
            load.append(os.getloadavg()[0])
        print(
            f"{machine()}; writes of {total:,} instances; median of {args.repeats}; "
            f"1-minute load average {min(load):.1f}-{max(load):.1f}"
        )
        print()
        print("| code | wall ms per instance | CPU ms per instance |")
        print("|---|---:|---:|")
        for name, runs_of in stages.items():
            if runs_of:
                wall = statistics.median(w for w, _ in runs_of)
                cpu = statistics.median(c for _, c in runs_of)
                label = f"before ({args.compare})" if name == "before" else "this checkout"
                print(f"| {label} | {wall:.3f} | {cpu:.3f} |")
        return
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "serial": [], "parallel": []}
    single = []
    load = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        if args.compare is not None:
            before = import_once(folder / f"before-{repeat}", path, total, None, args.compare)
            runs["before"].append(before)
        runs["serial"].append(import_once(folder / f"serial-{repeat}", path, total, 1))
        runs["parallel"].append(import_once(folder / f"parallel-{repeat}", path, total, args.jobs))
        single.append(one_by_one(folder, args.single, repeat))
        load.append(os.getloadavg()[0])
    print(
        f"{machine()}; {total:,} instances per import; median of {args.repeats}; "
        f"1-minute load average {min(load):.1f}-{max(load):.1f}"
    )
    print()
    print("| path | instances/s | ratio | instances per CPU second |")
    print("|---|---:|---:|---:|")
    s = statistics.median(single)
    for name, label in (
        ("before", f"before: `nextoffer import library` of {args.compare}"),
        ("serial", "`nextoffer import library --jobs 1` (start-up, checks, writes)"),
        ("parallel", f"`nextoffer import library --jobs {args.jobs}`"),
    ):
        if not runs[name]:
            continue
        wall = statistics.median(w for w, _ in runs[name])
        cpu = statistics.median(c for _, c in runs[name])
        print(f"| {label} | {wall:,.0f} | {wall / s:.1f}× | {cpu:,.0f} |")
    print(f"| reference: `Repository.create` one at a time | {s:,.0f} | 1.0× | – |")


if __name__ == "__main__":
    main()

"""What moving a deployment's database costs (``nextoffer db copy``, ``storage/copy.py``).

    .venv/bin/python bench/db_copy.py --db postgresql://user@host/postgres [--events 1000000] \
        [--repeats 3] [--plot docs/img/db-copy.png]

Builds once a SQLite database of a deployment that has run for a while: one tenant,
``--events`` decision events (bodies of a stored decision's size, three offers each), a
tenth as many profiles (one identity each), experience events and cap counters, and the
offers report of 100 offers over 30 days. Then, per repeat, interleaved:

* into a new PostgreSQL database on the server of ``--db`` (migrated first, not timed):
  ``copy_database``, and the reference: the same rows read from the same file and loaded
  by PostgreSQL's ``COPY FROM STDIN`` (psycopg's ``copy``), every table in one transaction:
  the fastest a client loads them;
* into a new SQLite file: ``copy_database``, and the reference: SQLite's online backup of
  the source (``nextoffer db backup``), a copy of its pages.

Then, from the PostgreSQL database just filled, ``copy_database`` into another one, and
the check after it that names what the source wrote meanwhile (``changed_since``: each
table's row count and the mark of its rows' ``xmin``), its time ÷ that copy's.

Prints the wall time and the rows a second of each, and ours ÷ the reference, medians over
repeats; ``--plot`` draws them (each repeat a dot).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
from scratch import scratch_dir
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from nextoffer.ids import utcnow
from nextoffer.service.tenants import bootstrap
from nextoffer.storage import copy as copying
from nextoffer.storage import migrations
from nextoffer.storage import tables as t
from nextoffer.storage.backup import backup_sqlite
from nextoffer.storage.database import open_engine
from nextoffer.storage.store import Store

CHUNK = 20_000
OFFERS = [f"xcore:personalized-offer:{n:016x}" for n in range(100)]


def build(path: Path, events: int) -> int:
    """The source database; returns its rows in the tables a copy writes."""
    url = f"sqlite:///{path}"
    store = Store.open(url)
    try:
        creds = bootstrap(store, org="BENCH@AdobeOrg", sandbox="prod", now=utcnow())
    finally:
        store.close()
    container, org = creds.container_id, creds.org
    engine = open_engine(url)
    people = max(events // 10, 1)
    try:
        with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
            for start in range(0, events, CHUNK):
                conn.execute(
                    insert(t.decision_events),
                    [_decision(container, n) for n in range(start, min(start + CHUNK, events))],
                )
            for start in range(0, people, CHUNK):
                part = range(start, min(start + CHUNK, people))
                conn.execute(insert(t.profiles), [_profile(org, n) for n in part])
                conn.execute(
                    insert(t.profile_identities),
                    [
                        {
                            "org_id": org,
                            "sandbox": "prod",
                            "namespace": "Email",
                            "identity": f"u{n}@example.com",
                            "profile_id": _pid(n),
                        }
                        for n in part
                    ],
                )
                conn.execute(insert(t.experience_events), [_event(org, n) for n in part])
                conn.execute(
                    insert(t.cap_counters),
                    [
                        {
                            "counter_key": f"{container}|{OFFERS[n % 100]}|0|p:{_pid(n)}",
                            "container_id": container,
                            "count": 1 + n % 3,
                        }
                        for n in part
                    ],
                )
            conn.execute(
                insert(t.offer_daily),
                [
                    {
                        "container_id": container,
                        "day": f"2026-11-{day:02d}",
                        "offer_id": offer,
                        "propositions": 100,
                        "impressions": 40,
                        "clicks": 4,
                    }
                    for day in range(1, 31)
                    for offer in OFFERS
                ],
            )
        with engine.connect() as conn:
            return sum(copying._count(conn, table) for table in copying.copied_tables())
    finally:
        engine.dispose()


def _pid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def _decision(container: str, n: int) -> dict[str, Any]:
    offers = [OFFERS[(n + k) % 100] for k in range(3)]
    body = {
        "identity": {"namespace": "Email", "id": f"u{n % 100_000}@example.com"},
        "requestId": str(uuid.UUID(int=n)),
        "propositions": [
            {
                "activity": "xcore:offer-activity:1a2b3c4d5e6f",
                "placement": "xcore:offer-placement:1a2b3c4d5e6f",
                "options": [{"id": o, "etag": 1, "score": 0.5} for o in offers],
            }
        ],
    }
    return {
        "proposition_id": str(uuid.uuid4()),
        "container_id": container,
        "created": "2026-11-15T12:00:00.000000Z",
        "created_us": 1_763_208_000_000_000 + n,
        "profile_key": _pid(n % 100_000),
        "body": orjson.dumps(body).decode(),
        "offers": orjson.dumps(offers).decode(),
    }


def _profile(org: str, n: int) -> dict[str, Any]:
    attributes = {"tier": ["gold", "silver", "bronze"][n % 3], "age": 20 + n % 50, "score": n}
    return {
        "profile_id": _pid(n),
        "org_id": org,
        "sandbox": "prod",
        "attributes": orjson.dumps(attributes).decode(),
        "created": "2026-11-01T00:00:00.000Z",
        "modified": "2026-11-01T00:00:00.000Z",
    }


def _event(org: str, n: int) -> dict[str, Any]:
    body = {"_id": f"e{n}", "eventType": "web.webpagedetails.pageViews", "timestamp": "x"}
    return {
        "org_id": org,
        "sandbox": "prod",
        "profile_id": _pid(n),
        "event_id": f"e{n}",
        "event_type": "web.webpagedetails.pageViews",
        "timestamp": "2026-11-15T12:00:00Z",
        "timestamp_us": 1_763_208_000_000_000 + n,
        "body": orjson.dumps(body).decode(),
    }


def new_pg_database(server: str, name: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated(url: str) -> None:
    engine = open_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()


def ours(source: str, target: str) -> float:
    src, dst = open_engine(source), open_engine(target)
    try:
        started = time.perf_counter()
        copying.copy_database(src, dst)
        return time.perf_counter() - started
    finally:
        src.dispose()
        dst.dispose()


def pg_source_check(source: str, target: str) -> tuple[float, float]:
    """Seconds of ``copy_database`` from a PostgreSQL ``source``, and of its check after."""
    src, dst = open_engine(source), open_engine(target)
    try:
        started = time.perf_counter()
        copied = copying.copy_database(src, dst)
        copied_at = time.perf_counter()
        changed = copying.changed_since(src, copied)
        checked_at = time.perf_counter()
        assert not changed, changed  # nothing writes to it
        return copied_at - started, checked_at - copied_at
    finally:
        src.dispose()
        dst.dispose()


def pg_copy_reference(source: Path, target: str) -> float:
    """Every copied table's rows read from the file and loaded by ``COPY FROM STDIN``."""
    import sqlite3

    started = time.perf_counter()
    with (
        sqlite3.connect(source) as src,
        psycopg.connect(
            make_url(target).set(drivername="postgresql").render_as_string(False)
        ) as dst,
    ):
        for table in copying.copied_tables():
            if table.name in copying.SEEDED:
                dst.execute(f"DELETE FROM {table.name}")
            columns = ", ".join(c.name for c in table.columns)
            rows = src.execute(f"SELECT {columns} FROM {table.name}")
            with dst.cursor().copy(f"COPY {table.name} ({columns}) FROM STDIN") as load:
                for row in rows:
                    load.write_row(row)
        dst.commit()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL server's URL (creates DBs)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    folder = scratch_dir("nextoffer-copy-", args.workdir)
    source = folder / "source.db"
    if source.exists():
        source.unlink()
    started = time.perf_counter()
    rows = build(source, args.events)
    print(
        f"source: {rows:,} rows, {source.stat().st_size / 1e6:,.0f} MB, built in "
        f"{time.perf_counter() - started:.0f} s"
    )
    times: dict[str, list[float]] = {k: [] for k in ("pg", "pg_ref", "sqlite", "sqlite_ref")}
    from_pg: dict[str, list[float]] = {"copy": [], "check": []}
    for repeat in range(args.repeats):
        name = f"nextoffer_copy_bench_{repeat}"
        target = new_pg_database(args.db, name)
        migrated(target)
        times["pg"].append(ours(f"sqlite:///{source}", target))
        onward = new_pg_database(args.db, f"{name}_onward")
        migrated(onward)
        copy_s, check_s = pg_source_check(target, onward)
        from_pg["copy"].append(copy_s)
        from_pg["check"].append(check_s)
        drop_pg_database(args.db, f"{name}_onward")
        drop_pg_database(args.db, name)
        target = new_pg_database(args.db, name)
        migrated(target)
        times["pg_ref"].append(pg_copy_reference(source, target))
        drop_pg_database(args.db, name)
        into = folder / f"copy{repeat}.db"
        migrated(f"sqlite:///{into}")
        times["sqlite"].append(ours(f"sqlite:///{source}", f"sqlite:///{into}"))
        into.unlink()
        backup = folder / f"backup{repeat}.db"
        started = time.perf_counter()
        backup_sqlite(source, backup)
        times["sqlite_ref"].append(time.perf_counter() - started)
        backup.unlink()
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    print("| into | `db copy` s | rows/s | reference | reference s | ours ÷ reference |")
    print("|---|---:|---:|---|---:|---:|")
    print(
        f"| PostgreSQL | {med['pg']:.1f} | {rows / med['pg']:,.0f} | COPY FROM STDIN | "
        f"{med['pg_ref']:.1f} | {med['pg'] / med['pg_ref']:.2f} |"
    )
    print(
        f"| SQLite | {med['sqlite']:.1f} | {rows / med['sqlite']:,.0f} | online backup | "
        f"{med['sqlite_ref']:.1f} | {med['sqlite'] / med['sqlite_ref']:.2f} |"
    )
    copy_s, check_s = (statistics.median(from_pg[k]) for k in ("copy", "check"))
    ratios = [check / copy for copy, check in zip(from_pg["copy"], from_pg["check"], strict=True)]
    print()
    print(
        f"from PostgreSQL: copy {copy_s:.1f} s, the check after it {check_s:.2f} s "
        f"(÷ the copy: median {statistics.median(ratios):.3f})"
    )
    if args.plot:
        plot(times, rows, args.plot)


def plot(times: dict[str, list[float]], rows: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [
        "into PostgreSQL\n(reference: COPY FROM STDIN)",
        "into SQLite\n(reference: online backup)",
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    for dx, keys, label, colour in (
        (-0.2, ("pg_ref", "sqlite_ref"), "the reference", "0.6"),
        (0.2, ("pg", "sqlite"), "nextoffer db copy", "C0"),
    ):
        xs = [x + dx for x in range(len(keys))]
        ax.bar(xs, [statistics.median(times[k]) for k in keys], 0.4, color=colour, label=label)
        for x, key in zip(xs, keys, strict=True):
            ax.scatter([x] * len(times[key]), times[key], color="k", s=8, zorder=3)
    ax.set_xticks(range(len(targets)), targets)
    ax.set_ylabel("seconds (bars: medians; dots: repeats)")
    ax.set_title(f"Copying a SQLite database of {rows:,} rows", fontsize=10)
    ax.legend()
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

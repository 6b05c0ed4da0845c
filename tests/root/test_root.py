"""``NextOffer``, the composition root: the README's example runs as written, and what
``open`` opened is closed (sync and async), also when opening fails half-way."""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nextoffer import NextOffer, Settings
from nextoffer.errors import BadRequest
from nextoffer.storage.redis_counters import RedisCounters
from nextoffer.storage.sqlite_path import SqlitePath
from nextoffer.storage.store import Store
from support.backends import redis_url

README = Path(__file__).parents[2] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Using it from Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "README: no python block under 'Using it from Python'"
    return found.group(1)


def test_the_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # its database is a relative path
    exec(compile(readme_example(), str(README), "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == "True\n"
    assert (tmp_path / "offers.db").exists()


def test_close_closes_everything_it_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    monkeypatch.setattr(RedisCounters, "close", lambda self: closed.append("redis"))
    monkeypatch.setattr(Store, "close", lambda self: closed.append("store"))
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url=redis_url())
    with NextOffer.open(settings) as no:
        inner = no.path._path  # type: ignore[attr-defined]  # CountersElsewhere's
        assert isinstance(inner, SqlitePath)
    assert no.executor._shutdown  # type: ignore[attr-defined]
    assert inner._closed
    assert closed == ["redis", "store"]  # the last opened first
    no.close()  # a second close does nothing
    assert closed == ["redis", "store"]


def test_async_with_closes_too(tmp_path: Path) -> None:
    async def main() -> NextOffer:
        async with NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}")) as no:
            tenant = await no.run(no.bootstrap, org="A@AdobeOrg", sandbox="prod")
            assert tenant.container_id
        return no

    no = asyncio.run(main())
    assert no.executor._shutdown  # type: ignore[attr-defined]


def test_a_failed_open_closes_what_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[Store] = []
    close = Store.close

    def spying(self: Store) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(Store, "close", spying)
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'n.db'}", redis_url="http://nowhere")
    with pytest.raises(BadRequest):
        NextOffer.open(settings)
    assert len(closed) == 1


def test_a_decision_new_to_another_worker_is_decided_there_at_once(tmp_path: Path) -> None:
    # Two roots on one database, as two workers: B's snapshot was checked a moment ago
    # (within its check interval) when A creates a decision; B's first decision on it
    # must not be a 404 from the snapshot a refresh is about to replace.
    from nextoffer import DecisionCall, PropositionRequest
    from nextoffer.repository.objects import COLLECTION, DECISION, FALLBACK_OFFER, PLACEMENT

    html = "https://ns.adobe.com/experience/offer-management/content-component-html"
    web = "https://ns.adobe.com/xdm/channel-types/web"
    url = f"sqlite:///{tmp_path / 'w.db'}"
    settings = Settings(db_url=url, warm_catalogs=False)
    with NextOffer.open(settings) as a, NextOffer.open(settings) as b:
        tenant = a.bootstrap(org="W@AdobeOrg", sandbox="prod")
        who, container = tenant.principal, tenant.container_id

        def create(object_type: object, body: dict[str, object]) -> str:
            return a.create(who, container, object_type, body).at_id  # type: ignore[arg-type]

        placement = create(
            PLACEMENT, {"xdm:name": "P", "xdm:channel": web, "xdm:componentType": html}
        )
        reps = [
            {
                "xdm:placement": placement,
                "xdm:channel": web,
                "xdm:components": [
                    {"@type": html, "dc:format": "text/html", "xdm:content": "<p>f</p>"}
                ],
            }
        ]
        fallback = create(
            FALLBACK_OFFER, {"xdm:name": "F", "xdm:status": "approved", "xdm:representations": reps}
        )
        offers = create(COLLECTION, {"xdm:name": "C", "xdm:filterType": "offers", "xdm:ids": []})

        def decision(name: str) -> str:
            return create(
                DECISION,
                {
                    "xdm:name": name,
                    "xdm:status": "live",
                    "xdm:fallback": fallback,
                    "xdm:criteria": [
                        {
                            "xdm:placements": [placement],
                            "xdm:optionSelection": {"xdm:filter": offers},
                        }
                    ],
                },
            )

        def decide(on: NextOffer, activity: str) -> str | None:
            call = DecisionCall(
                propositions=(PropositionRequest(activity, placement),),
                identities=[("Email", "w@example.com")],
                dry_run=True,
            )
            fallback_chosen = on.decide(who, container, call).result.propositions[0].fallback
            return fallback_chosen.offer_id if fallback_chosen is not None else None

        assert decide(b, decision("first")) == fallback  # B's snapshot: checked just now
        assert decide(b, decision("second")) == fallback  # new to B, decided at once


def test_a_sqlite_process_loads_no_postgresql_driver_alembic_or_jsonschema(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'lean.db'}"
    NextOffer.open(Settings(db_url=url)).close()  # migrated here, with Alembic
    # What a worker does at start, and a valid write and a build, in a fresh interpreter.
    worker = """
import sys
import nextoffer.api.app
from nextoffer import NextOffer, Settings
from nextoffer.repository.objects import PLACEMENT, SchemaRef
with NextOffer.open(Settings(db_url=sys.argv[1])) as no:
    creds = no.bootstrap(org="LEAN@AdobeOrg", sandbox="prod")
    body = {
        "xdm:name": "Banner",
        "xdm:channel": "https://ns.adobe.com/xdm/channel-types/web",
        "xdm:componentType": "https://ns.adobe.com/experience/offer-management/content-component-html",
    }
    no.repository.create(creds.principal, creds.container_id, SchemaRef(PLACEMENT, None, ""), body)
    no.catalogs.get(creds.container_id)
print(sorted({m.split(".")[0] for m in sys.modules}))
"""
    done = subprocess.run([sys.executable, "-c", worker, url], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    assert "sqlalchemy" in loaded and "nextoffer" in loaded  # it did run
    assert loaded.isdisjoint({"psycopg", "asyncpg", "alembic", "jsonschema", "redis"})


def test_an_integer_past_64_bits_from_python_is_refused_where_it_is(tmp_path: Path) -> None:
    # A body built in Python (the console's forms, an embedding application) reaches the
    # repository without the HTTP body's check: a priority of 10**30 failed in the store.
    from nextoffer.errors import Unprocessable
    from nextoffer.repository.objects import PLACEMENT, TAG

    with NextOffer.open(Settings(db_url=f"sqlite:///{tmp_path / 'i.db'}")) as no:
        tenant = no.bootstrap(org="I@AdobeOrg", sandbox="prod")
        who, container = tenant.principal, tenant.container_id
        with pytest.raises(Unprocessable) as refused:
            no.create(who, container, TAG, {"xdm:name": "t", "n": {"deep": [1, 10**30]}})
        assert refused.value.pointer == "/n/deep/1"
        with pytest.raises(Unprocessable) as refused:
            no.create(who, container, PLACEMENT, {"xdm:name": "", "xdm:channel": "x" * 3000})
        messages = {e["pointer"]: e["message"] for e in refused.value.extra["errors"]}
        assert messages["/xdm:name"] == "must not be empty"
        assert messages["/xdm:channel"].endswith("x… is longer than 2048 characters")

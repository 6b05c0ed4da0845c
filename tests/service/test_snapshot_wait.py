"""A decision needing a first snapshot still being built waits a bounded time, then 503."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nextoffer import pql
from nextoffer.errors import Unavailable
from nextoffer.ids import utcnow
from nextoffer.repository.objects import RULE, SchemaRef
from nextoffer.root import NextOffer
from nextoffer.service import catalogs
from nextoffer.service.catalogs import CatalogCache
from nextoffer.service.compiled_rules import CompiledRules
from nextoffer.settings import Settings
from nextoffer.storage.library_read import LibraryReader


def add_rules(no: NextOffer, org: str, count: int) -> str:
    """A tenant's container holding ``count`` decision rules (``age > n``); its id."""
    creds = no.bootstrap(org=org, sandbox="prod")
    for n in range(count):
        condition = {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": f"age > {n}"}
        body = {"xdm:name": f"r{n}", "xdm:condition": condition}
        no.repository.create(creds.principal, creds.container_id, SchemaRef(RULE, None, ""), body)
    return creds.container_id


def test_a_first_snapshot_slower_than_the_wait_answers_unavailable_then_serves(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'w.db'}"
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False)) as no:
        container = add_rules(no, "WAIT@AdobeOrg", 1)
        release = threading.Event()

        def slow(source: Any, **kwargs: Any) -> pql.CompiledRule:
            release.wait(10)  # a library that takes long to compile
            return pql.compile(source, **kwargs)

        cache = CatalogCache(
            no.store,
            path=no.path,
            clock=utcnow,
            rules=CompiledRules(None, compile_rule=slow),
            wait=0.2,
        )
        try:
            with pytest.raises(Unavailable) as raised:
                cache.get(container)
            assert raised.value.retry_after >= 1
            assert "still being compiled" in raised.value.detail
            release.set()
            snapshot = cache.get(container)  # the build that was started, finished
            assert len(snapshot.instances) == 1
        finally:
            release.set()
            cache.close()


def test_a_first_build_defers_rules_past_the_eager_ones_then_compiles_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nextoffer.service.catalogs")
    monkeypatch.setattr(catalogs, "EAGER_RULES", 2)
    db_url = f"sqlite:///{tmp_path / 'lazy.db'}"
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, rule_cache="")) as no:
        container = add_rules(no, "LAZY@AdobeOrg", 6)
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, rule_cache="")) as no:
        cache = no.catalogs
        first = cache.get(container)
        rules = [i for i in first.instances.values() if i.schema.endswith("eligibility-rule")]
        assert len(rules) == 6
        lazy = [r.body["xdm:condition"]["xdm:value"] for r in rules]
        assert "first snapshot with 4 rules compiled on first use" in caplog.text
        compiled = cache.rules.deferred("age > 3")
        assert compiled.evaluate(profile={"age": 4}) is True
        assert compiled.evaluate(profile={"age": 2}) is False
        deadline = time.monotonic() + 20
        while cache.get(container) is first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.get(container) is not first  # the complete build replaced it
        assert all(cache.rules.known(s) for s in lazy)
        # and lets it go: nothing but this test holds the first snapshot (a whole catalog)
        assert sys.getrefcount(first) == 2  # this name, and the call's argument


def test_closing_does_not_wait_for_a_library_to_compile(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'c.db'}"
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, rule_cache="")) as no:
        container = add_rules(no, "CLOSE@AdobeOrg", 40)
        compiling = threading.Event()

        def slow(source: Any, **kwargs: Any) -> pql.CompiledRule:
            compiling.set()
            time.sleep(0.25)  # 40 rules: 10 s to compile them all
            return pql.compile(source, **kwargs)

        cache = CatalogCache(
            no.store, path=no.path, clock=utcnow, rules=CompiledRules(None, compile_rule=slow)
        )
        cache.start(container)
        assert compiling.wait(5)
        began = time.monotonic()
        cache.close()
        assert time.monotonic() - began < 3
        other = no.bootstrap(org="OTHER@AdobeOrg", sandbox="prod").container_id
        with pytest.raises(Unavailable, match="shutting down"):
            cache.get(other)  # no snapshot, and no build starts any more


def test_a_refresh_reads_only_the_writes_after_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_url = f"sqlite:///{tmp_path / 'm.db'}"
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False, rule_cache="")) as no:
        container = add_rules(no, "MANY@AdobeOrg", 4)
        principal = no.bootstrap(org="MANY@AdobeOrg", sandbox="prod").principal
        before = no.catalogs.get(container)
        assert before.read_version == no.path.library_version(container)
        whole_reads: list[str] = []
        change_reads: list[list[str]] = []
        everything, changes = LibraryReader.everything, LibraryReader.changes

        def counted_everything(reader: LibraryReader, container_id: str) -> Any:
            whole_reads.append(container_id)
            return everything(reader, container_id)

        def counted_changes(reader: LibraryReader, container_id: str, since: int) -> Any:
            state = changes(reader, container_id, since)
            change_reads.append(sorted(at_id for at_id, *_ in state.written))
            return state

        monkeypatch.setattr(LibraryReader, "everything", counted_everything)
        monkeypatch.setattr(LibraryReader, "changes", counted_changes)
        records = sorted(before.instances.values(), key=lambda i: i.body["xdm:name"])
        for record in records[:2]:
            body = dict(record.body, **{"xdm:name": "renamed"})
            no.repository.replace(
                principal, container, record.instance_id, None, body, if_match=None
            )
        no.repository.delete(principal, container, records[2].instance_id, if_match=None)
        after = no.catalogs.get(container)  # this process wrote: it waits for the refresh
        assert sorted(i.body["xdm:name"] for i in after.instances.values()) == [
            "r3",
            "renamed",
            "renamed",
        ]
        assert records[2].at_id not in after.instances
        assert after.read_version == no.path.library_version(container) > before.read_version
        assert whole_reads == []  # the refresh read the three writes, not the library
        assert change_reads and change_reads[-1] == sorted(r.at_id for r in records[:3])

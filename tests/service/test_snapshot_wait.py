"""A decision needing a first snapshot still being built waits a bounded time, then 503."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from nextoffer import pql
from nextoffer.errors import Unavailable
from nextoffer.ids import utcnow
from nextoffer.repository.objects import RULE, SchemaRef
from nextoffer.root import NextOffer
from nextoffer.service.catalogs import CatalogCache
from nextoffer.service.compiled_rules import CompiledRules
from nextoffer.settings import Settings


def test_a_first_snapshot_slower_than_the_wait_answers_unavailable_then_serves(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'w.db'}"
    with NextOffer.open(Settings(db_url=db_url, freeze_heap=False)) as no:
        creds = no.bootstrap(org="WAIT@AdobeOrg", sandbox="prod")
        body = {
            "xdm:name": "r",
            "xdm:condition": {"xdm:type": "PQL", "xdm:format": "pql/text", "xdm:value": "age > 1"},
        }
        no.repository.create(creds.principal, creds.container_id, SchemaRef(RULE, None, ""), body)
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
                cache.get(creds.container_id)
            assert raised.value.retry_after >= 1
            assert "still being compiled" in raised.value.detail
            release.set()
            snapshot = cache.get(creds.container_id)  # the build that was started, finished
            assert len(snapshot.instances) == 1
        finally:
            release.set()
            cache.close()
